"""The tensorflow-datasets builder of pretokenized SFT data (ArrayRecord, no TensorFlow needed).

:class:`MmadaParallelSft` is a ``GeneratorBasedBuilder`` with ``file_format='array_record'`` and
Tensor/Text features only (the parts of tfds that work without TensorFlow). It is written by
:func:`write_records` (which :func:`mmada_jax.data.pretokenize.pretokenize` calls with its
lazily encoded records); it cannot download anything itself.

Reading needs no builder class: ``tfds.builder_from_directory(OUT/mmada_parallel_sft/1.0.0)``
(what :func:`mmada_jax.data.records.open_pretokenized` does). Importing this module also
registers the name, so ``tfds.data_source("mmada_parallel_sft", split="train", data_dir=OUT)``
works too.

Two tfds adjustments, both for this builder only:

* shards: tfds sizes shards in bytes (64 MiB .. 1 GiB, one count for every split);
  :class:`ExamplesPerShardConfig` gives each split ``ceil(n / examples_per_shard)`` shards;
* ``code_path = None``: tfds looks for a download-checksums file beside a builder defined inside
  a package, which imports the ``importlib_resources`` backport that tfds does not install.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import shard_utils

from . import records


class MmadaParallelSft(tfds.core.GeneratorBasedBuilder):
    """MMaDA-Parallel SFT records (format: :mod:`mmada_jax.data.records`)."""

    VERSION = tfds.core.Version(records.VERSION)
    RELEASE_NOTES = {records.VERSION: "VQ codes + token ids of (input image, instruction, reasoning, output image)."}
    code_path = None

    def __init__(self, *, job: "_Job | None" = None, **kwargs):
        self._job = job
        super().__init__(file_format="array_record", **kwargs)

    def _info(self):
        job = self._job
        return tfds.core.DatasetInfo(
            builder=self,
            description="MMaDA-Parallel SFT examples, pretokenized by mmada_jax.data.pretokenize.",
            features=records.features(job.num_image_tokens if job else None,
                                      bool(job and job.metadata.get("base_tasks"))),
            disable_shuffling=True,   # keep the source order; the grain pipeline shuffles
            metadata=tfds.core.MetadataDict(job.metadata if job else {}),
        )

    def _log_download_bytes(self):   # tfds prints "Downloading and preparing dataset ..."; nothing is downloaded
        pass

    def _log_download_done(self):
        pass

    def _split_generators(self, dl_manager):
        if self._job is None:
            raise RuntimeError(f"{records.DATASET_NAME} is written by mmada_jax.data.pretokenize "
                               f"(python -m train.pretokenize), not by tfds download_and_prepare")
        return {split: self._generate_examples(split) for split in self._job.splits}

    def _generate_examples(self, split):
        for rec in self._job.splits[split]:
            yield rec["id"], rec


@dataclasses.dataclass(frozen=True)
class ExamplesPerShard(shard_utils.ShardConfig):
    """``ceil(num_examples / examples_per_shard)`` shards per split."""

    examples_per_shard: int = 1000

    def get_number_shards(self, total_size, num_examples, uses_precise_sharding=True):
        return max(1, math.ceil(num_examples / self.examples_per_shard))


@dataclasses.dataclass
class ExamplesPerShardConfig(tfds.download.DownloadConfig):
    """A tfds ``DownloadConfig`` whose shard count follows ``examples_per_shard``."""

    examples_per_shard: int = 1000

    def get_shard_config(self):
        return ExamplesPerShard(examples_per_shard=self.examples_per_shard)


@dataclasses.dataclass
class _Job:
    splits: Mapping[str, Iterable[dict]]
    num_image_tokens: int
    metadata: dict


def write_records(data_dir: str | Path, splits: Mapping[str, Iterable[dict]], *, num_image_tokens: int,
                  metadata: dict | None = None, examples_per_shard: int = 1000) -> MmadaParallelSft:
    """Write records (dicts with the keys of :data:`records.RECORD_KEYS`, unique ``id``) as the tfds
    dataset ``data_dir/mmada_parallel_sft/1.0.0``; the iterables are consumed lazily, split after
    split, in order. Returns the builder (``.as_data_source(split)`` reads the result back)."""
    if not splits:
        raise ValueError("write_records: no splits given")
    tfds.disable_progress_bar()
    builder = MmadaParallelSft(job=_Job(dict(splits), int(num_image_tokens), dict(metadata or {})),
                               data_dir=str(data_dir))
    scratch = Path(tempfile.mkdtemp(prefix="mmada_records_"))   # tfds wants a download folder
    try:
        builder.download_and_prepare(download_dir=str(scratch),
                                     download_config=ExamplesPerShardConfig(examples_per_shard=examples_per_shard))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return builder

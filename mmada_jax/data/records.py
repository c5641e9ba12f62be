"""The on-disk format of pretokenized SFT data, shared by :mod:`.pretokenize` (writer) and
:mod:`.pipeline` (reader).

A pretokenized folder ``OUT`` holds a tensorflow-datasets dataset in ArrayRecord files (read
without TensorFlow through ``tfds.builder_from_directory(...).as_data_source(split)``):

    OUT/mmada_parallel_sft/1.0.0/
        dataset_info.json, features.json, metadata.json
        mmada_parallel_sft-train.array_record-00000-of-0000K ...
    OUT/bad_examples.jsonl     (one {"id", "reason", "line"} per rejected example)
    OUT/summary.json           (counts and timing of the pretokenize run)

Each record (one example, in source order) is::

    id                  str      the example id
    input_image_codes   int32 [N]  VQ codes of the input image (of a black image when absent)
    output_image_codes  int32 [N]  VQ codes of the output image
    instruction_ids     int32 [n]  tokenizer ids, no BOS/EOS; empty when there is no instruction
    reasoning_ids       int32 [m]  tokenizer ids, no BOS/EOS
    has_input_image     bool
    has_instruction     bool

Codes are raw VQ codes in ``[0, codebook_size)`` (NOT shifted by the image offset: the model's
token-id layout adds it). ``metadata.json`` records how the data was made (``text_len``,
``image_size``, ``num_image_tokens``, ``bos_id``, ``eos_id``, ``image_offset``,
``codebook_size``, the source and model paths).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATASET_NAME = "mmada_parallel_sft"
VERSION = "1.0.0"
FORMAT_VERSION = 1
RECORD_KEYS = ("id", "input_image_codes", "output_image_codes", "instruction_ids", "reasoning_ids",
               "has_input_image", "has_instruction")


def features(num_image_tokens: int | None):
    """The tfds feature spec of a record (``num_image_tokens`` None: any length, for reading)."""
    import tensorflow_datasets as tfds
    n = num_image_tokens
    return tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "input_image_codes": tfds.features.Tensor(shape=(n,), dtype=np.int32),
        "output_image_codes": tfds.features.Tensor(shape=(n,), dtype=np.int32),
        "instruction_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "reasoning_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "has_input_image": tfds.features.Tensor(shape=(), dtype=np.bool_),
        "has_instruction": tfds.features.Tensor(shape=(), dtype=np.bool_),
    })


def dataset_dir(data_dir: str | Path) -> Path:
    """The tfds version folder inside a pretokenize output folder (or ``data_dir`` itself when it
    already is one, i.e. holds ``dataset_info.json``)."""
    data_dir = Path(data_dir)
    if (data_dir / "dataset_info.json").is_file():
        return data_dir
    version_dir = data_dir / DATASET_NAME / VERSION
    if (version_dir / "dataset_info.json").is_file():
        return version_dir
    found = sorted(p.parent for p in data_dir.glob("*/*/dataset_info.json"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"{data_dir}: no pretokenized dataset (expected {version_dir}/dataset_info.json; "
        f"write one with `python -m train.pretokenize SRC {data_dir} ...`)")


def open_pretokenized(data_dir: str | Path):
    """A read-only tfds builder over a pretokenized folder (needs no builder class, no TensorFlow)."""
    import tensorflow_datasets as tfds
    path = dataset_dir(data_dir)
    builder = tfds.builder_from_directory(str(path))
    keys = set(builder.info.features.keys())
    if keys != set(RECORD_KEYS):
        raise ValueError(f"{path}: record features {sorted(keys)} are not the pretokenized SFT format "
                         f"{sorted(RECORD_KEYS)}")
    return builder


def metadata(builder) -> dict:
    """The metadata dict written by pretokenize (``text_len``, ``bos_id``, ``eos_id`` ...)."""
    return dict(builder.info.metadata or {})


def describe(data_dir: str | Path) -> dict:
    """The metadata of a pretokenized folder plus ``splits: {name: num_examples}`` (e.g. to size
    epochs: ``num_examples // (process_count * batch_size)`` batches per process)."""
    builder = open_pretokenized(data_dir)
    info = metadata(builder)
    info["splits"] = {name: int(s.num_examples) for name, s in builder.info.splits.items()}
    return info

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

Data pretokenized with ``--base-tasks`` (base MMaDA's text-to-image and understanding tasks about
the OUTPUT image, trained beside the parallel task: :mod:`mmada_jax.mmada.sft`) has three more::

    t2i_prompt_ids      int32 [a]  the drawing request, no BOS/EOS
    mmu_prompt_ids      int32 [q]  the question in the chat template with the generation prompt (BOS first)
    mmu_answer_ids      int32 [r]  the answer, no BOS/EOS

and ``"base_tasks": true`` in its metadata.

Codes are raw VQ codes in ``[0, codebook_size)`` (NOT shifted by the image offset: the model's
token-id layout adds it). ``metadata.json`` records how the data was made (``text_len``,
``image_size``, ``num_image_tokens``, ``bos_id``, ``eos_id``, ``image_offset``,
``codebook_size``, the source and model paths).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATASET_NAME = "mmada_parallel_sft"
VERSION = "1.0.0"
FORMAT_VERSION = 1
RECORD_KEYS = ("id", "input_image_codes", "output_image_codes", "instruction_ids", "reasoning_ids",
               "has_input_image", "has_instruction")
BASE_TASK_KEYS = ("t2i_prompt_ids", "mmu_prompt_ids", "mmu_answer_ids")


def features(num_image_tokens: int | None, base_tasks: bool = False):
    """The tfds feature spec of a record (``num_image_tokens`` None: any length, for reading;
    ``base_tasks``: with the :data:`BASE_TASK_KEYS`)."""
    import tensorflow_datasets as tfds
    n = num_image_tokens
    ids = {key: tfds.features.Tensor(shape=(None,), dtype=np.int32) for key in BASE_TASK_KEYS if base_tasks}
    return tfds.features.FeaturesDict({**ids,
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


class DatasetError(ValueError):
    """A pretokenized folder that cannot be read: the message names the file (description, shard)."""


#: the dataset description files tfds writes (metadata.json only when there is metadata)
DESCRIPTION_FILES = ("dataset_info.json", "features.json", "metadata.json")


def open_pretokenized(data_dir: str | Path):
    """A read-only tfds builder over a pretokenized folder (needs no builder class, no TensorFlow).

    A missing folder is a FileNotFoundError; an unreadable description file (``dataset_info.json``,
    ``features.json``, ``metadata.json``) a :class:`DatasetError` naming it."""
    import tensorflow_datasets as tfds
    if not Path(data_dir).exists():
        raise FileNotFoundError(f"{data_dir}: no such folder, so no pretokenized dataset (write one with "
                                f"`python -m train.pretokenize SRC {data_dir} ...`)")
    if not Path(data_dir).is_dir():
        raise DatasetError(f"{data_dir}: not a folder (pretokenized data: python -m train.pretokenize)")
    path = dataset_dir(data_dir)
    for name in DESCRIPTION_FILES:
        file = path / name
        if name == "metadata.json" and not file.exists():
            continue
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"{file}: missing (an incomplete pretokenized dataset)") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DatasetError(f"{file}: corrupt dataset description ({type(e).__name__}: {e})") from None
    try:
        builder = tfds.builder_from_directory(str(path))
        keys = set(builder.info.features.keys())
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds; name the files
        raise DatasetError(f"{path}: cannot read the dataset description ({', '.join(DESCRIPTION_FILES)}): "
                           f"{type(e).__name__}: {e}") from None
    if keys not in (set(RECORD_KEYS), set(RECORD_KEYS + BASE_TASK_KEYS)):
        raise ValueError(f"{path}: record features {sorted(keys)} are not the pretokenized SFT format "
                         f"{sorted(RECORD_KEYS)} (+ {list(BASE_TASK_KEYS)} with --base-tasks)")
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


def shard_files(builder, split: str) -> list[tuple[Path, int]]:
    """(path, number of records) of each ArrayRecord shard of ``split``, in order."""
    info = builder.info.splits[split]
    return [(Path(str(p)), int(n)) for p, n in zip(info.filepaths, info.shard_lengths)]


def check_shards(builder, split: str) -> None:
    """Open every shard of ``split`` and read its first and last record: a missing, empty,
    truncated or corrupt shard (or one whose record count disagrees with ``dataset_info.json``)
    is a :class:`DatasetError` naming the file. Cheap: two records per shard."""
    from array_record.python import array_record_module
    for path, expected in shard_files(builder, split):
        if not path.is_file():
            raise DatasetError(f"{path}: shard file missing (split {split!r} lists it in dataset_info.json)")
        if path.stat().st_size == 0:
            raise DatasetError(f"{path}: empty shard file (0 bytes; truncated or not written)")
        reader = None
        try:
            reader = array_record_module.ArrayRecordReader(str(path), "readahead_buffer_size:0")
            if not reader.ok():
                reader.close()   # raises with the reader's reason
                raise RuntimeError("unreadable")
            count = reader.num_records()
            if count != expected:
                raise DatasetError(f"{path}: shard holds {count} records, dataset_info.json says {expected} "
                                   f"(truncated or replaced?)")
            if count:
                reader.read([0])
                reader.read([count - 1])
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001 - the reader raises RuntimeError with riegeli's reason
            raise DatasetError(f"{path}: corrupt or truncated ArrayRecord shard ({e})") from None
        finally:
            if reader is not None:
                try:
                    reader.close()
                except Exception:  # noqa: BLE001 - already reported
                    pass


class NamedShardSource:
    """A tfds data source whose read errors name the shard file of the record (for grain)."""

    def __init__(self, source, shards: list[tuple[Path, int]]):
        self.source, self.shards = source, shards
        self.starts = np.cumsum([0] + [n for _, n in shards])

    def __len__(self) -> int:
        return len(self.source)

    def _error(self, index: int, e: Exception) -> DatasetError:
        i = int(np.searchsorted(self.starts, index, side="right")) - 1
        if 0 <= i < len(self.shards):
            where = f"{self.shards[i][0]}: record {index - int(self.starts[i])}"
        else:
            where = f"record {index}"
        return DatasetError(f"{where}: cannot read ({type(e).__name__}: {e}); corrupt shard?")

    def __getitem__(self, index):
        try:
            return self.source[index]
        except (IndexError, KeyError):
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error(int(index), e) from None

    def __getitems__(self, indices):
        try:
            return self.source.__getitems__(indices)
        except Exception:  # noqa: BLE001 - find the record that fails
            return [self[i] for i in indices]

    def __repr__(self) -> str:
        return f"NamedShardSource({self.source!r})"

"""Training data for the SFT loop: the grain pipeline over pretokenized records, or a synthetic
dataset generated and pretokenized on first use (for CI and demos).

``data_dir`` is only ever read: a folder that is missing or damaged (description files, shards) is
an error naming the file, checked before the model loads; it is never rebuilt or replaced.
Synthetic data (``synthetic: N`` and no ``data_dir``) goes to the run's own folder
``out_dir/synthetic_data`` (``raw/``: the generated examples, ``pretokenized/``: their records,
``synthetic.json``: how they were made); it is built in a temporary folder beside it and renamed
when complete, and a resumed run reuses it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import jax

from ..config import ConfigError
from ..data import records
from ..data.pipeline import load_split, make_dataset
from .config import TrainConfig

SYNTHETIC_DIR = "synthetic_data"


def _synthetic_recipe(config: TrainConfig) -> dict:
    from ..data.synthetic import WORLD_VERSION
    return {"synthetic": config.synthetic, "seed": config.seed, "image_size": config.synthetic_image_size,
            "text_len": config.text_len, "world": WORLD_VERSION}


def _synthetic_data(config: TrainConfig, out_dir: Path, log: Callable[[str], None]) -> Path:
    """``out_dir/synthetic_data/pretokenized``: reused when it was made by the same recipe,
    otherwise generated (never over an existing folder)."""
    folder = Path(out_dir) / SYNTHETIC_DIR
    recipe = _synthetic_recipe(config)
    stamp = folder / "synthetic.json"
    if folder.exists():
        try:
            made = json.loads(stamp.read_text())
        except FileNotFoundError:
            raise records.DatasetError(f"{folder}: not a synthetic dataset of this run ({stamp} is missing); "
                                       f"move it away or use another out_dir") from None
        except (OSError, ValueError) as e:
            raise records.DatasetError(f"{stamp}: unreadable ({e})") from None
        if made != recipe:
            diff = ", ".join(f"{k}={made.get(k)!r} there, {v!r} now" for k, v in recipe.items() if made.get(k) != v)
            raise ConfigError(f"{folder} was generated with other settings ({diff}); use another out_dir")
        load_split(folder / "pretokenized", "train")   # checks it (errors name the file)
        log(f"reusing the synthetic data in {folder}")
        return folder / "pretokenized"
    from ..data.pretokenize import pretokenize
    from ..data.synthetic import write_dataset
    tmp = Path(tempfile.mkdtemp(prefix=f".{SYNTHETIC_DIR}.tmp-", dir=out_dir))
    try:
        log(f"writing {config.synthetic} synthetic examples to {folder}")
        write_dataset(tmp / "raw", config.synthetic, seed=config.seed, size=config.synthetic_image_size)
        pretokenize(tmp / "raw", tmp / "pretokenized", checkpoint=config.model_config or config.checkpoint, vq=config.vq,
                    tokenizer=config.tokenizer, text_len=config.text_len, image_size=config.synthetic_image_size,
                    log=log)
        (tmp / "synthetic.json").write_text(json.dumps(recipe, indent=1) + "\n")
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # only what this call created
        raise
    return folder / "pretokenized"


def prepare_data(config: TrainConfig, out_dir: Path, log: Callable[[str], None]) -> Path:
    """The pretokenized folder to train on: ``data_dir`` (checked, never written), or the run's
    synthetic data (generated on first use); with ``instruction_len``, every instruction is checked
    to fit it. Cheap for ``data_dir``: call it before loading the model."""
    folder = _data_folder(config, out_dir, log)
    if config.instruction_len:
        check_instruction_budget(folder, config.instruction_len)
    return folder


def _data_folder(config: TrainConfig, out_dir: Path, log: Callable[[str], None]) -> Path:
    if config.data_dir is not None:
        if config.synthetic:   # TrainConfig rejects this; a hand-built object may not have been checked
            raise ConfigError("give either data_dir or synthetic, not both")
        data_dir = Path(config.data_dir)
        try:
            load_split(data_dir, "train")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"data_dir: {e}") from None
        except (records.DatasetError, ValueError) as e:
            raise records.DatasetError(f"data_dir: {e}") from None
        return data_dir
    if config.synthetic <= 0:
        raise ConfigError("give data_dir (pretokenized data) or synthetic=N")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return _synthetic_data(config, Path(out_dir), log)


def check_instruction_budget(data_dir: Path, instruction_len: int) -> None:
    """Every training instruction fits ``instruction_len`` tokens (BOS and EOS included); checked
    before training starts, so a long one is an error naming it, not a failure mid-run."""
    source, _ = load_split(data_dir, "train")
    for i in range(len(source)):
        rec = source[i]
        if len(rec["instruction_ids"]) > instruction_len - 2:
            ex_id = rec["id"].decode() if isinstance(rec["id"], bytes) else rec["id"]
            raise ConfigError(f"instruction_len={instruction_len}: example {ex_id!r} of {data_dir} has an "
                              f"instruction of {len(rec['instruction_ids'])} tokens (+ BOS and EOS)")


def open_data(config: TrainConfig, tokens, out_dir: Path, log: Callable[[str], None], data_dir: Path | None = None):
    """(iterator over this process's batches of ``batch_size / process_count`` examples,
    the dataset's metadata). ``data_dir``: what :func:`prepare_data` returned (else it is called)."""
    if data_dir is None:
        data_dir = prepare_data(config, out_dir, log)
    if config.batch_size % jax.process_count():
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {jax.process_count()} processes")
    dataset = make_dataset(data_dir, "train", batch_size=config.batch_size // jax.process_count(),
                           text_len=config.text_len, seed=config.seed, tokens=tokens,   # checks the shards
                           instruction_len=config.instruction_len or None)
    meta = records.describe(data_dir)
    count = meta.pop("splits").get("train", "?")
    log(f"data: {data_dir} ({count} training examples, {meta['num_image_tokens']} image tokens, "
        f"text budget {config.text_len}, instruction budget {config.instruction_budget})")
    return iter(dataset), meta

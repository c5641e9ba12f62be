"""Training data for the SFT loop: the grain pipeline over pretokenized records, or a synthetic
dataset generated and pretokenized on first use (for CI and demos)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax

from ..data import records
from ..data.pipeline import load_split, make_dataset
from .config import TrainConfig


def _pretokenized(data_dir: Path) -> bool:
    try:
        load_split(data_dir, "train")
        return True
    except Exception:  # noqa: BLE001 - absent or incomplete: (re)build it
        return False


def open_data(config: TrainConfig, tokens, out_dir: Path, log: Callable[[str], None]):
    """(iterator over this process's batches of ``batch_size / process_count`` examples,
    the dataset's metadata)."""
    data_dir = Path(config.data_dir) if config.data_dir else Path(out_dir) / "data"
    if config.synthetic and not _pretokenized(data_dir):
        from ..data.pretokenize import pretokenize
        from ..data.synthetic import write_dataset
        raw = Path(out_dir) / "synthetic"
        log(f"writing {config.synthetic} synthetic examples to {raw}")
        write_dataset(raw, config.synthetic, seed=config.seed, size=config.synthetic_image_size)
        pretokenize(raw, data_dir, checkpoint=config.checkpoint, vq=config.vq, tokenizer=config.tokenizer,
                    text_len=config.text_len, image_size=config.synthetic_image_size, overwrite=True, log=log)
    _, meta = load_split(data_dir, "train")
    if config.batch_size % jax.process_count():
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {jax.process_count()} processes")
    dataset = make_dataset(data_dir, "train", batch_size=config.batch_size // jax.process_count(),
                           text_len=config.text_len, seed=config.seed, tokens=tokens)
    count = records.describe(data_dir)["splits"].get("train", "?")
    log(f"data: {data_dir} ({count} training examples, {meta['num_image_tokens']} image tokens, "
        f"text budget {config.text_len})")
    return iter(dataset), meta

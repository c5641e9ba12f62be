"""The pieces a sampling job needs, loaded once and checked to fit together: the transformer, its
image tokenizer and its text tokenizer (codebook size, tokenizer length = image offset)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..checkpoints import load_model, load_vq, open_checkpoint
from ..config import ModelConfig
from ..hf_io import CheckpointError
from ..tokenizer import TextTokenizer, load_tokenizer


@dataclasses.dataclass
class Pipeline:
    model: Any
    config: ModelConfig
    vq: Any
    tokenizer: TextTokenizer
    paths: dict[str, str]


def load_pipeline(checkpoint, vq_path=None, tokenizer_path=None, *, dtype=None, mesh=None) -> Pipeline:
    """``checkpoint``: a path or an opened :class:`~mmada_jax.checkpoints.Checkpoint` (converted,
    HF, a training run or one of its checkpoints). The VQ and tokenizer default to the ones the
    checkpoint names (a ``vqvae/`` folder, a training run's, the ``hf/`` tokenizer files)."""
    ckpt = open_checkpoint(checkpoint) if not hasattr(checkpoint, "config") else checkpoint
    vq_path = vq_path if vq_path is not None else ckpt.vq_dir
    tokenizer_path = tokenizer_path if tokenizer_path is not None else (ckpt.tokenizer_dir or ckpt.path)
    model, config = load_model(ckpt, dtype=dtype, mesh=mesh)
    vq = load_vq(vq_path) if vq_path is not None else None
    if vq is not None and vq.codebook_size != config.tokens.codebook_size:
        raise CheckpointError(f"the checkpoint {ckpt.path} has {config.tokens.codebook_size} image codes but the "
                              f"image tokenizer {vq_path} has {vq.codebook_size}: they do not fit together")
    tokenizer = load_tokenizer(tokenizer_path, config)
    return Pipeline(model, config, vq, tokenizer,
                    {"checkpoint": str(ckpt.path), "vq": str(vq_path), "tokenizer": str(tokenizer_path)})

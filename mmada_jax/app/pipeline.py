"""The pieces a sampling job needs, checked to fit together before anything heavy is loaded: the
transformer, its image tokenizer and its text tokenizer (codebook size, tokenizer length = image
offset). The text tokenizer loads at once (requests are checked with it); the transformer and the
image tokenizer load on first use, so bad requests are reported before the weights are read."""

from __future__ import annotations

import functools
from pathlib import Path

from ..checkpoints import Checkpoint, load_model, load_vq, open_checkpoint
from ..hf_io import CheckpointError
from ..tokenizer import load_tokenizer


class Pipeline:
    def __init__(self, ckpt: Checkpoint, vq_ckpt: Checkpoint | None, tokenizer, *, dtype=None, mesh=None):
        self.checkpoint, self.vq_checkpoint, self.tokenizer = ckpt, vq_ckpt, tokenizer
        self.config = ckpt.config
        self._dtype, self._mesh = dtype, mesh
        self.paths = {"checkpoint": str(ckpt.path), "vq": str(vq_ckpt.path) if vq_ckpt else None,
                      "tokenizer": str(tokenizer.source)}

    @functools.cached_property
    def model(self):
        return load_model(self.checkpoint, dtype=self._dtype, mesh=self._mesh)[0]

    @functools.cached_property
    def vq(self):
        if self.vq_checkpoint is None:
            raise CheckpointError(f"{self.checkpoint.path}: no image tokenizer given or found (--vq)")
        return load_vq(self.vq_checkpoint)


def load_pipeline(checkpoint, vq_path=None, tokenizer_path=None, *, dtype=None, mesh=None) -> Pipeline:
    """``checkpoint``: a path or an opened :class:`~mmada_jax.checkpoints.Checkpoint` (converted,
    HF, a training run or one of its checkpoints). The VQ and tokenizer default to the ones the
    checkpoint names (a ``vqvae/`` folder, a training run's, the ``hf/`` tokenizer files)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else open_checkpoint(checkpoint)
    vq_path = vq_path if vq_path is not None else ckpt.vq_dir
    vq_ckpt = open_checkpoint(vq_path, image_tokenizer=True) if vq_path is not None else None
    if vq_ckpt is not None and vq_ckpt.config.codebook_size != ckpt.config.tokens.codebook_size:
        raise CheckpointError(f"the checkpoint {ckpt.path} has {ckpt.config.tokens.codebook_size} image codes but the "
                              f"image tokenizer {vq_path} has {vq_ckpt.config.codebook_size}: they do not fit together")
    tokenizer = load_tokenizer(Path(tokenizer_path if tokenizer_path is not None else (ckpt.tokenizer_dir or ckpt.path)),
                               ckpt.config)
    return Pipeline(ckpt, vq_ckpt, tokenizer, dtype=dtype, mesh=mesh)

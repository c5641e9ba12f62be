"""CLIP scores of (text, image) pairs: tokenize, preprocess, both towers, ``max(scale * cos, 0)``.

:class:`CLIPScorer` wraps a loaded CLIP and its tokenizer. It is what torchmetrics'
``clip_score`` computes (``max(100 * cos, 0)`` by default; MMaDA reports CLIP scores on this 0-100
scale), per pair rather than averaged: texts are CLIP-tokenized with truncation to
``max_tokens`` (77, the towers' context; the EOS stays last) and padded to that length, so one
compiled function serves every call; images are uint8 and go through the in-graph preprocessing
(:mod:`.preprocess`) and the image tower in the same jitted function, ``batch_size`` pairs at a
time (the last chunk padded, so there is one shape per image size).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from .model import CLIPModel
from .preprocess import preprocess

DEFAULT_SCALE = 100.0
DEFAULT_MAX_TOKENS = 77


@nnx.jit
def _paired_cosine(model: CLIPModel, images, input_ids, attention_mask):
    c = model.config
    pixels = preprocess(images, c.image_size, c.image_mean, c.image_std)
    return model.cosine(pixels.astype(jnp.dtype(c.dtype)), input_ids, attention_mask)


class CLIPScorer:
    """Paired CLIP scores with one model.

    ``scorer(texts, images)`` -> float64 [N] ``max(scale * cos, 0)`` of text i and image i
    (``images`` uint8 [N, H, W, 3]); ``scorer.cosine(...)`` the raw cosines; ``describe()`` what
    produced the scores (model, resolution, scale, token limit, preprocessing).
    ``source``: the checkpoint path, recorded by ``describe``.
    """

    def __init__(self, model: CLIPModel, tokenizer, *, scale: float = DEFAULT_SCALE,
                 max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int = 32, source: str | Path | None = None):
        limit = model.config.text.max_position_embeddings
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 2 <= max_tokens <= limit:
            raise ValueError(f"max_tokens={max_tokens!r}: must be an integer in [2, {limit}] (the text "
                             f"tower's max_position_embeddings)")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale={scale!r} must be a positive number")
        self.model, self.tokenizer = model, tokenizer
        self.scale, self.max_tokens, self.batch_size = scale, max_tokens, batch_size
        self.source = None if source is None else str(source)
        # strings the CLIP tokenizer would turn into its own special tokens (a text holding
        # "<|endoftext|>" would otherwise move the pooled EOS position): removed from texts
        self._specials = sorted(set(getattr(tokenizer, "all_special_tokens", []) or []), key=len, reverse=True)

    @property
    def config(self):
        return self.model.config

    def clean(self, text: str) -> str:
        """``text`` without the tokenizer's special-token strings, whitespace collapsed."""
        for s in self._specials:
            text = text.replace(s, " ")
        return " ".join(text.split())

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) int32 [N, max_tokens]: BOS text EOS, truncated so the EOS
        stays, padded with the tokenizer's pad token."""
        enc = self.tokenizer([self.clean(t) for t in texts], padding="max_length", truncation=True,
                             max_length=self.max_tokens, return_tensors="np")
        return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)

    def cosine(self, texts: list[str], images) -> np.ndarray:
        """float64 [N] cosine similarity of text i and image i."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"CLIP scores take uint8 [N, H, W, 3] images, got {images.dtype} {list(images.shape)}")
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts for {len(images)} images")
        n = len(texts)
        if n == 0:
            return np.zeros((0,), np.float64)
        ids, mask = self.tokenize(list(texts))
        out = []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            pad = self.batch_size - (stop - start) if n > self.batch_size else 0
            sel = np.concatenate([np.arange(start, stop), np.full(pad, stop - 1)]).astype(np.int64)
            cos = _paired_cosine(self.model, images[sel], ids[sel], mask[sel])
            out.append(np.asarray(cos, np.float64)[:stop - start])
        return np.concatenate(out)

    def __call__(self, texts: list[str], images) -> np.ndarray:
        """float64 [N] ``max(scale * cos, 0)`` (torchmetrics' CLIPScore per pair)."""
        return np.maximum(self.scale * self.cosine(texts, images), 0.0)

    def describe(self) -> dict:
        """What produced the scores (JSON-ready), e.g. for a run's reward_stats.json."""
        c = self.config
        return {
            "model": c.name or None, "checkpoint": self.source, "image_size": c.vision.image_size,
            "patch_size": c.vision.patch_size, "projection_dim": c.projection_dim, "dtype": c.dtype,
            "scale": self.scale, "max_tokens": self.max_tokens, "formula": "max(scale * cos(image, text), 0)",
            "preprocessing": "shortest side -> image_size (jax.image.resize bicubic, antialiased, rounded), "
                             "center crop, /255, CLIP mean/std",
            "image_mean": list(c.image_mean), "image_std": list(c.image_std),
        }

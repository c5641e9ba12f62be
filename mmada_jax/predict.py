"""One denoising look: what the model predicts at each masked position of a sequence."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .model import LLaDAModel


def default_prompt(model: LLaDAModel, n_text: int = 8, n_masked: int = 8) -> np.ndarray:
    """A small interleave-style sequence in the model's own id layout: task token, BOS, some
    text ids, then masked slots (what every sampler starts from)."""
    t = model.config.tokens
    text = np.arange(n_text) % max(1, min(t.special.values()))
    ids = [t.special.get("interleave", t.bos_id), t.bos_id, *text.tolist(), t.eos_id] + [t.mask_id] * n_masked
    return np.asarray([ids], np.int32)


def masked_predictions(model: LLaDAModel, input_ids: np.ndarray, top_k: int = 5):
    """(positions [P, 2] of masked slots, top-k ids [P, k], their probabilities [P, k], seconds).

    Logits are computed only at the masked positions (the head runs on a subset of positions).
    """
    input_ids = np.asarray(input_ids, np.int32)
    is_mask = input_ids == model.config.tokens.mask_id
    counts = set(is_mask.sum(axis=1).tolist())
    if counts == {0}:
        raise ValueError(f"the input has no mask token (id {model.config.tokens.mask_id})")
    if len(counts) > 1:
        raise ValueError(f"every row must have the same number of masked positions, got {sorted(counts)}")
    where = np.argwhere(is_mask)
    positions = where[:, 1].reshape(input_ids.shape[0], -1)

    @nnx.jit
    def look(m, ids, pos):
        logits = m(ids, positions=pos).astype(jnp.float32)
        probs, ids_ = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), top_k)
        return ids_, probs

    look(model, input_ids, positions)  # compile
    start = time.perf_counter()
    top_ids, top_probs = jax.block_until_ready(look(model, input_ids, positions))
    seconds = time.perf_counter() - start
    return where, np.asarray(top_ids).reshape(-1, top_k), np.asarray(top_probs).reshape(-1, top_k), seconds

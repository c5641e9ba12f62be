"""The ``trajectory`` log-probability estimator (ParaRL Eq. 3, TraceRL): the policy's
log-probability of the tokens a rollout decoded at a recorded step t, given the stored sequence
just before t (the real rollout history, no re-masking), from the conditional logits at
temperature 1: text slots over the vocabulary the text sampler argmaxes over (the whole
vocabulary for -M and, by default, -A), image slots over the codebook columns.

:func:`step_batch` turns a :class:`~mmada_jax.sampling.recording.Recording` into the learner's
batch (host side, numpy): one row per (rollout, recorded step), the decoded text positions
gathered into ``text_slots`` slots (the most one step decodes), every image position as a slot
weighted by whether it was decoded then. :func:`token_logp` is the forward (jit-able): [R, P]
log-probabilities with P = text_slots + N, the layout of the policy loss's token axis
(:mod:`~mmada_jax.rl.losses`). Only the decoded text positions get full-vocabulary logits.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..sampling.common import left_padding
from ..sampling.recording import Recording
from ..sampling.recording import token_logp as _pick_logp


def step_batch(rec: Recording, pads: np.ndarray, layout, mask_id: int, image_offset: int, slots: int) -> dict:
    """The learner's inputs for the recorded steps, rows ordered (rollout, step):

    ``ids`` [R, L] the states before the steps, ``attention_mask`` / ``position_ids`` [R, L] (the
    rollouts' left padding), ``text_positions`` [R, slots] (decoded text positions, padded with
    the first text position), ``targets`` [R, P] (text: vocabulary ids; image: codes 0..K-1),
    ``weights`` [B, s, P] (1 at decoded tokens) and ``sampler_logp`` [B, s, P] (the sampler's own
    log-probabilities of those tokens, for the recompute-gap metric). ``slots``: the most text
    tokens one step decodes (the task's ``max_text_per_step``). Any layout with
    ``text_positions()`` and ``image_positions()`` (-M's, -A's)."""
    b, s, length = rec.before.shape
    text_at, image_at = layout.text_positions(), layout.image_positions()
    decoded = rec.decoded(mask_id)
    text = decoded[:, :, text_at]
    counts = text.sum(-1)
    if counts.max() > slots:
        raise ValueError(f"a recorded step decoded {counts.max()} text tokens, more than {slots} slots")
    order = np.argsort(~text, axis=-1, kind="stable")[..., :slots]             # decoded positions first
    text_valid = np.take_along_axis(text, order, -1)
    text_pos = text_at[np.where(text_valid, order, 0)]
    after = rec.after.reshape(b * s, length)
    text_pos_flat = text_pos.reshape(b * s, slots)
    targets_text = np.take_along_axis(after, text_pos_flat, -1)
    targets_image = np.clip(after[:, image_at] - image_offset, 0, None)
    image_valid = decoded[:, :, image_at]
    weights = np.concatenate([text_valid, image_valid], -1).astype(np.float32)
    logp = rec.logp.reshape(b * s, length)
    sampler_logp = np.concatenate([np.take_along_axis(logp, text_pos_flat, -1), logp[:, image_at]],
                                  -1).reshape(b, s, -1)
    padding = left_padding(np.repeat(np.asarray(pads), s), length)
    return {"ids": rec.before.reshape(b * s, length).astype(np.int32), **padding,
            "text_positions": text_pos_flat.astype(np.int32),
            "targets": np.concatenate([targets_text, targets_image], -1).astype(np.int32),
            "weights": weights, "sampler_logp": (sampler_logp * weights).astype(np.float32)}


def token_logp(model, batch: dict, layout, restrict_text: bool = False) -> jnp.ndarray:
    """[R, P] log-probabilities of ``batch['targets']`` under ``model`` from the stored states;
    ``restrict_text``: text over text ids only (-A's ``restrict_text`` sampling option)."""
    t = model.config.tokens
    hidden, _ = model.encode(batch["ids"], batch["attention_mask"], mask_mode="hard",
                             position_ids=batch["position_ids"])
    slots = batch["text_positions"].shape[1]
    text = model.head(hidden, positions=batch["text_positions"])
    if restrict_text:      # a finite floor: padded slots (weight 0) may target an excluded id
        col = jnp.arange(text.shape[-1])
        text = jnp.where((col < t.image_offset) & (col != t.mask_id), text, -1e30)
    image = model.head(hidden, positions=jnp.asarray(layout.image_positions()),
                       vocab_range=(t.image_offset, t.image_offset + t.codebook_size))
    targets = batch["targets"]
    return jnp.concatenate([_pick_logp(text, targets[:, :slots]), _pick_logp(image, targets[:, slots:])], -1)

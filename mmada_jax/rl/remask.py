"""The ``random_remask`` log-probability estimator (MMaDA-Parallel App. D.2, UniGRPO-style): an
ablation of the ``trajectory`` estimator (:mod:`.trajectory`, Eq. 3).

Instead of the real state before a recorded step, each (rollout, recorded step) slot scores a
random re-masking of the rollout's FINAL output: a mask ratio p ~ U(0, 1] per slot, ``ceil(p * n)``
of the n generated positions (image codes and the text slots the sampler decodes) masked
uniformly at random, and the policy's log-probability of every masked token given the rest (the
MMaDA training view of the response). The slot keeps its own step's advantage. The masks are
data, drawn on the host from the rollout batch's seed, so the policy, the old policy and the
reference see the SAME masked inputs (the reference trainer's bytecode draws a fresh unseeded
mask for each, ``pararl.md`` §4.3; not reproduced) and they are shared by the inner updates.

:func:`remask_batch` returns the batch :func:`~mmada_jax.rl.trajectory.step_batch` returns
(same keys and token layout: ``text_slots`` = every generated text slot, then every image
position), so :func:`~mmada_jax.rl.trajectory.token_logp` and the objective are unchanged;
``sampler_logp`` is zero (the sampler never saw these inputs).
"""

from __future__ import annotations

import math

import numpy as np

from ..sampling.common import left_padding


def remask_batch(final_ids: np.ndarray, image_codes: np.ndarray, pads: np.ndarray, layout, s: int, mask_id: int,
                 image_offset: int, rng: np.random.Generator) -> dict:
    """The learner's inputs for B rollouts x ``s`` slots, rows ordered (rollout, slot):
    ``final_ids`` [B, L] the final sequences, ``image_codes`` [B, N] their output images (codes
    0..K-1: -A's last masked code is filled after the loop, not in the sequence); ``rng`` draws
    the ratios and positions."""
    text_at, image_at = layout.generated_text_positions(), layout.image_positions()
    final_ids = np.array(final_ids)
    final_ids[:, image_at] = np.asarray(image_codes) + image_offset
    b, length = final_ids.shape
    generated = np.concatenate([text_at, image_at])
    n = len(generated)
    ids = np.repeat(final_ids, s, axis=0)
    masked = np.zeros((b * s, n), bool)
    for r in range(b * s):
        count = max(1, math.ceil(float(1.0 - rng.random()) * n))       # p in (0, 1]
        masked[r, rng.permutation(n)[:count]] = True
    ids[:, generated] = np.where(masked, mask_id, ids[:, generated])
    targets_text = np.repeat(final_ids[:, text_at], s, axis=0)
    targets_image = np.clip(np.repeat(final_ids[:, image_at], s, axis=0) - image_offset, 0, None)
    weights = masked.astype(np.float32).reshape(b, s, n)
    padding = left_padding(np.repeat(np.asarray(pads), s), length)
    return {"ids": ids.astype(np.int32), **padding,
            "text_positions": np.broadcast_to(text_at, (b * s, len(text_at))).astype(np.int32),
            "targets": np.concatenate([targets_text, targets_image], -1).astype(np.int32),
            "weights": weights, "sampler_logp": np.zeros_like(weights)}

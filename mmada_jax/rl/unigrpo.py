"""UniGRPO's structured re-masking estimator (MMaDA §2.3, Algorithm 1; ``pararl.md`` §3.1, §4.3).

A rollout's response (its generated positions) is scored, at each of the ``mu`` inner updates of a
rollout batch, under a fresh partial re-masking; the prompt is never masked. Per rollout, one
random start ``t1 = floor(r * T)`` (r ~ U[0, 1), T = 1000 as the paper) and then evenly spread
timesteps ``t_n = floor((n - 1) / (mu - 1) * (T - t1) + t1)``, n = 1..mu (Algorithm 1; with
mu = 1 only t1): inner update n masks ``clip(round(t_n / T * n_text), 1, n_text)`` of the text
response and, of the image response, ``clip(round(ratio * N), 1, N)`` codes where ``ratio`` is
the reference code's cosine remapping ``cos(pi/2 * 0.9 * t_n / T)`` (:func:`t2i_ratio`; 1 down to
~0.16 as t_n / T goes 0 to 1) or, with ``remap_image=False``, ``t_n / T`` itself. Positions are
uniform without replacement, drawn on the host from the rollout batch's seed: the policy, the
old policy and the reference see the SAME masked inputs of an update (the reference bytecode
draws an unseeded mask for each; not reproduced). ``shared=G`` (``group_masks``, not the paper's)
gives the G rollouts of a group one draw: with their zero-sum advantages, the tokens they share in
the same context then cancel exactly instead of adding noise.

Each masked token is scored by the policy given the rest (text over the vocabulary, image codes
over the codebook columns: :func:`~mmada_jax.rl.trajectory.token_logp`); the sequence-level
advantage is every token's, and :func:`~mmada_jax.rl.losses.aggregate` offers the reference
trainer's ``grpo``, ``bnpo`` and ``dr_grpo`` aggregations. Choices not taken from the bytecode
(documented in the README): no 1/p ELBO weight on the score, no 0.1 factor on T2I log-probs and
logits at temperature 1 (the policy's own distribution; the bytecode divides by 0.9).

:func:`unigrpo_batches` returns ``mu`` batches with the keys and token layout of
:func:`~mmada_jax.rl.trajectory.step_batch` (one slot per rollout: ``weights`` [B, 1, P]), so the
learner, its objective and :func:`~mmada_jax.rl.trajectory.token_logp` run them unchanged.
"""

from __future__ import annotations

import numpy as np

from ..sampling.common import left_padding

TIMESTEPS = 1000


def timesteps(rng: np.random.Generator, rollouts: int, mu: int, total: int = TIMESTEPS) -> np.ndarray:
    """[rollouts, mu] integer timesteps of Algorithm 1: a random start per rollout, then evenly
    spread up to ``total``."""
    if mu < 1:
        raise ValueError(f"mu (inner updates) must be >= 1, got {mu}")
    t1 = np.floor(rng.random(rollouts) * total).astype(np.int64)
    if mu == 1:
        return t1[:, None]
    n = np.arange(mu)[None, :]
    return np.floor(n / (mu - 1) * (total - t1[:, None]) + t1[:, None]).astype(np.int64)


def t2i_ratio(linear) -> np.ndarray:
    """The reference code's image mask ratio for a linear ratio x in [0, 1]: cos(pi/2 * 0.9 * x)."""
    return np.cos(np.pi / 2 * 0.9 * np.asarray(linear, np.float64))


def masked_count(ratio, n: int) -> np.ndarray:
    return np.clip(np.round(np.asarray(ratio, np.float64) * n), 1, n).astype(np.int64)


def unigrpo_batches(final_ids: np.ndarray, image_codes: np.ndarray | None, pads: np.ndarray, layout, mu: int,
                    mask_id: int, image_offset: int, rng: np.random.Generator, remap_image: bool = True,
                    total: int = TIMESTEPS, shared: int = 1) -> list[dict]:
    """The learner's ``mu`` batches for B rollouts (module docstring). ``final_ids`` [B, L] the
    final sequences; ``image_codes`` [B, N] their output images as codes 0..K-1 (None when the
    layout has no image); ``layout``: ``generated_text_positions()`` and ``image_positions()``
    (either may be empty: :class:`~mmada_jax.mmada.text.TextLayout` has no image,
    :class:`~mmada_jax.mmada.layout.T2ILayout` no text; the joint layouts have both). ``shared``:
    each run of this many consecutive rows (a GRPO group) gets one draw of ratios and positions
    (1: a draw per rollout, Algorithm 1)."""
    text_at = np.asarray(layout.generated_text_positions(), np.int64)
    image_at = np.asarray(layout.image_positions(), np.int64)
    final_ids = np.array(final_ids)
    if len(image_at):
        final_ids[:, image_at] = np.asarray(image_codes) + image_offset
    b, length = final_ids.shape
    if shared < 1 or b % shared:
        raise ValueError(f"shared={shared}: must divide the {b} rollouts")
    ratios = np.repeat(timesteps(rng, b // shared, mu, total) / total, shared, axis=0)     # [B, mu]
    padding = left_padding(np.asarray(pads), length)
    targets = np.concatenate([final_ids[:, text_at], np.clip(final_ids[:, image_at] - image_offset, 0, None)], -1)
    batches = []
    for n in range(mu):
        ids = final_ids.copy()
        weights = np.zeros((b, len(text_at) + len(image_at)), np.float32)
        for part, positions, ratio in ((0, text_at, ratios[:, n]),
                                       (1, image_at, t2i_ratio(ratios[:, n]) if remap_image else ratios[:, n])):
            if not len(positions):
                continue
            counts = masked_count(ratio, len(positions))
            offset = 0 if part == 0 else len(text_at)
            for r in range(0, b, shared):
                chosen = rng.permutation(len(positions))[:counts[r]]
                ids[r:r + shared, positions[chosen]] = mask_id
                weights[r:r + shared, offset + chosen] = 1.0
        batches.append({"ids": ids.astype(np.int32), **padding,
                        "text_positions": np.broadcast_to(text_at, (b, len(text_at))).astype(np.int32),
                        "targets": targets.astype(np.int32), "weights": weights[:, None, :],
                        "sampler_logp": np.zeros((b, 1, weights.shape[1]), np.float32),
                        "ratio": ratios[:, n].astype(np.float32)})
    return batches


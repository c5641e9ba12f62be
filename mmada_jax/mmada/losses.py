"""Base MMaDA's pretraining losses (``forward_process`` on a [t2i | lm | mmu] batch, spec
``mmada_m.md`` §5.2), from the logits of prompts built by :mod:`mmada_jax.mmada.prompts`; the two
per-task reductions are shared with the base-task rows of a parallel SFT (:mod:`.sft`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..losses import cross_entropy
from ..sequences import IGNORE


def t2i_loss(ce: jax.Array, labels: jax.Array) -> jax.Array:
    """Text-to-image: the mean CE over the labelled positions (soi, masked codes, eoi; no 1/t).
    ``ce``, ``labels``: [B, P] over the image part."""
    return jnp.sum(ce) / jnp.maximum(jnp.sum(labels != IGNORE), 1)


def masked_answer_loss(ce: jax.Array, masked: jax.Array, p_mask: jax.Array, answer_lengths: jax.Array) -> jax.Array:
    """LLaDA's answer loss: ``sum_masked CE / p_mask / answer_length`` per row, mean over rows.
    ``p_mask``, ``answer_lengths``: broadcastable to ``ce`` [B, L]."""
    return jnp.sum(jnp.where(masked, ce / p_mask / answer_lengths, 0.0)) / ce.shape[0]


def mmada_pretrain_losses(logits: jax.Array, input_ids: jax.Array, labels: jax.Array, *, batch_sizes,
                          max_seq_length: int, mask_id: int, p_mask_lm: jax.Array, p_mask_mmu: jax.Array,
                          answer_lengths: jax.Array) -> dict[str, jax.Array]:
    """Base MMaDA ``forward_process`` on a batch [t2i | lm | mmu] (spec mmada_m.md §5.2).

    t2i: mean CE over the labelled positions from ``max_seq_length + 1`` on (soi, image, eoi);
    lm: sum of CE / p_mask over masked positions, divided by B_lm * L; mmu: sum of
    CE / p_mask / answer_length over masked positions, divided by B_mmu.
    """
    n_t2i, n_lm, n_mmu = (int(x) for x in batch_sizes)
    ce = cross_entropy(logits, labels)
    loss_t2i = t2i_loss(ce[:n_t2i, max_seq_length + 1:], labels[:n_t2i, max_seq_length + 1:])
    lm_rows = slice(n_t2i, n_t2i + n_lm)
    lm_masked = input_ids[lm_rows] == mask_id
    loss_lm = jnp.sum(jnp.where(lm_masked, ce[lm_rows] / p_mask_lm, 0.0)) / (n_lm * logits.shape[1])
    mmu_rows = slice(n_t2i + n_lm, n_t2i + n_lm + n_mmu)
    loss_mmu = masked_answer_loss(ce[mmu_rows], input_ids[mmu_rows] == mask_id, p_mask_mmu, answer_lengths)
    return {"loss_t2i": loss_t2i, "loss_lm": loss_lm, "loss_mmu": loss_mmu}

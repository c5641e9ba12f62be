"""Base MMaDA's pretraining losses (``forward_process`` on a [t2i | lm | mmu] batch, spec
``mmada_m.md`` §5.2), from the logits of prompts built by :mod:`mmada_jax.mmada.prompts`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..losses import cross_entropy
from ..sequences import IGNORE


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
    t2i_ce = ce[:n_t2i, max_seq_length + 1:]
    t2i_valid = labels[:n_t2i, max_seq_length + 1:] != IGNORE
    loss_t2i = jnp.sum(t2i_ce) / jnp.maximum(jnp.sum(t2i_valid), 1)
    lm_rows = slice(n_t2i, n_t2i + n_lm)
    lm_masked = input_ids[lm_rows] == mask_id
    loss_lm = jnp.sum(jnp.where(lm_masked, ce[lm_rows] / p_mask_lm, 0.0)) / (n_lm * logits.shape[1])
    mmu_rows = slice(n_t2i + n_lm, n_t2i + n_lm + n_mmu)
    mmu_masked = input_ids[mmu_rows] == mask_id
    loss_mmu = jnp.sum(jnp.where(mmu_masked, ce[mmu_rows] / p_mask_mmu / answer_lengths, 0.0)) / n_mmu
    return {"loss_t2i": loss_t2i, "loss_lm": loss_lm, "loss_mmu": loss_mmu}

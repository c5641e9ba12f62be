"""What every training objective shares: per-token cross-entropy with the reference's ignore label.
The objectives themselves live with their model family (``parallel_m.sft``, ``parallel_a.sft``,
``mmada.losses``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .sequences import IGNORE


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-token CE in float32, 0 where ``labels == -100`` (torch ``reduction='none'``)."""
    logits = logits.astype(jnp.float32)
    valid = labels != IGNORE
    safe = jnp.where(valid, labels, 0)
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    return jnp.where(valid, jax.nn.logsumexp(logits, axis=-1) - picked, 0.0)

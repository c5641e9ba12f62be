"""The ParaRL objective as an :class:`~mmada_jax.training.objectives.Objective`, so the SFT train
step (micro-batches, clipping, AdamW, the non-finite guard, shardings) runs it unchanged.

A micro-batch holds rollouts (leading axis), each with its s recorded steps: the states and
targets of :func:`~mmada_jax.rl.trajectory.step_batch` regrouped [B, s, ...], the advantages
[B, s], the token weights [B, s, P], the reference policy's log-probabilities ``ref_logp`` (one
forward of the frozen SFT model per rollout batch) and, with more than one inner update,
``old_logp`` (the policy's before the first update). With one inner update (mu = 1, the default)
the old policy is the current one: its log-probabilities are the policy's own, stop-gradient, so
no extra forward is needed.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..training.objectives import Objective
from . import trajectory
from .losses import policy_loss

STEP_KEYS = ("ids", "attention_mask", "position_ids", "text_positions", "targets")


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """The policy loss's settings (:func:`~mmada_jax.rl.losses.policy_loss`)."""

    loss: str = "clipped"
    beta: float = 1e-4
    epsilon: float = 0.2
    epsilon_high: float | None = None
    log_ratio_clamp: float = 10.0
    aggregation: str = "step_mean"
    inner_updates: int = 1


def rollout_batch(steps: dict, advantages, ref_logp, old_logp=None) -> dict:
    """The learner's batch, rollouts first: :func:`~mmada_jax.rl.trajectory.step_batch`'s rows
    [B*s, ...] regrouped [B, s, ...], plus the advantages and log-probabilities."""
    b, s = np.shape(advantages)
    out = {k: np.asarray(steps[k]).reshape(b, s, *np.shape(steps[k])[1:]) for k in STEP_KEYS}
    out.update(weights=np.asarray(steps["weights"], np.float32), advantages=np.asarray(advantages, np.float32),
               ref_logp=np.asarray(ref_logp, np.float32).reshape(b, s, -1))
    if old_logp is not None:
        out["old_logp"] = np.asarray(old_logp, np.float32).reshape(b, s, -1)
    return out


def step_logp(model, micro: dict, layout, restrict_text: bool = False) -> jnp.ndarray:
    """[B, s, P] log-probabilities of the recorded steps' decoded tokens under ``model``."""
    b, s = micro["ids"].shape[:2]
    flat = {k: micro[k].reshape(b * s, *micro[k].shape[2:]) for k in STEP_KEYS}
    return trajectory.token_logp(model, flat, layout, restrict_text).reshape(b, s, -1)


def make_objective(layout, options: LossOptions, restrict_text: bool = False) -> Objective:
    """The objective on ``layout``'s sequences; ``restrict_text``: the text sampler's vocabulary
    rule (-A's option)."""
    def loss(model, micro, key):
        del key    # the trajectory estimator is deterministic given the recorded states
        logp = step_logp(model, micro, layout, restrict_text).astype(jnp.float32)
        old = micro["old_logp"] if options.inner_updates > 1 else logp
        total, metrics = policy_loss(logp, old, micro["ref_logp"], micro["advantages"], micro["weights"],
                                     loss=options.loss, beta=options.beta, epsilon=options.epsilon,
                                     epsilon_high=options.epsilon_high, log_ratio_clamp=options.log_ratio_clamp,
                                     aggregation=options.aggregation)
        return {"loss": total, **metrics}

    head = layout.num_image_tokens
    return Objective("pararl_trajectory", loss, layout.total, head, STEP_KEYS)

"""Policy losses (a registry, as tunix's) on per-token log-probabilities of the tokens a rollout
decoded at its recorded steps.

Inputs are [B, s, P] arrays over the P token slots of each recorded step (the tokens decoded at
that step; ``weights`` 1 there, 0 on padding slots) and the advantages [B, s]:

* ``clipped`` (ParaRL Eq. 3, PPO/GRPO): ratio r = exp(clamp(logp - old_logp, +-log_ratio_clamp)),
  per token ``-min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A)``;

plus ``beta`` times the k3 KL estimator against the reference policy, per token
``exp(ref - logp) - (ref - logp) - 1`` (>= 0, 0 where the two agree). With one inner update
(mu = 1) ``old_logp`` is the policy's own log-prob (stop-gradient): the ratio is 1 in value and
the gradient is that of ``-A logp``.

Aggregation (``pararl.md`` §1.2: the 1/|tau_i(t)| token mean per step, then the mean over
rollouts and steps): ``step_mean`` (default) averages the tokens of each (rollout, step) and then
the (rollout, step) pairs that decoded anything; ``token_mean`` averages all tokens of the batch.
UniGRPO's trainer (``pararl.md`` §4.3, TRL's names; one slot per rollout) offers ``grpo`` (= the
step mean: each sequence's token mean, then the mean over sequences), ``bnpo`` (= the token mean)
and ``dr_grpo`` (the token sum over rows x P, the fixed token-axis size: no per-sequence length
normalisation).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from .registry import lookup, registrar

POLICY_LOSSES: dict[str, Callable] = {}
AGGREGATIONS = ("step_mean", "token_mean", "grpo", "bnpo", "dr_grpo")

register = registrar(POLICY_LOSSES)


@register("clipped")
def clipped(logp, old_logp, adv, *, epsilon: float, epsilon_high: float | None, log_ratio_clamp: float):
    """Per-token clipped surrogate loss [B, s, P] and whether the clip was active there."""
    ratio = jnp.exp(jnp.clip(logp - old_logp, -log_ratio_clamp, log_ratio_clamp))
    a = adv[..., None]
    hi = epsilon if epsilon_high is None else epsilon_high
    unclipped, clipped_ = ratio * a, jnp.clip(ratio, 1 - epsilon, 1 + hi) * a
    return -jnp.minimum(unclipped, clipped_), clipped_ < unclipped


def k3_kl(logp, ref_logp):
    """The k3 estimator of KL(policy || reference) per token."""
    d = ref_logp - logp
    return jnp.exp(d) - d - 1


def aggregate(per_token, weights, how: str = "step_mean"):
    w = weights.astype(jnp.float32)
    how = {"grpo": "step_mean", "bnpo": "token_mean"}.get(how, how)
    if how == "dr_grpo":
        return (per_token * w).sum() / w.size
    if how == "token_mean":
        return (per_token * w).sum() / jnp.maximum(w.sum(), 1.0)
    if how == "step_mean":
        n = w.sum(-1)
        per_step = (per_token * w).sum(-1) / jnp.maximum(n, 1.0)
        live = (n > 0).astype(jnp.float32)
        return (per_step * live).sum() / jnp.maximum(live.sum(), 1.0)
    raise ValueError(f"loss aggregation {how!r}; known: {AGGREGATIONS}")


def policy_loss(logp, old_logp, ref_logp, adv, weights, *, loss: str = "clipped", beta: float = 1e-4,
                epsilon: float = 0.2, epsilon_high: float | None = None, log_ratio_clamp: float = 10.0,
                aggregation: str = "step_mean") -> tuple[jax.Array, dict]:
    """(loss, metrics): the policy loss plus ``beta`` x k3 KL, aggregated; metrics ``kl``,
    ``clip_fraction`` and ``abs_log_ratio`` (token means)."""
    surrogate, clipped_ = lookup(POLICY_LOSSES, loss, "policy loss")(logp, jax.lax.stop_gradient(old_logp), adv, epsilon=epsilon,
                                              epsilon_high=epsilon_high, log_ratio_clamp=log_ratio_clamp)
    kl = k3_kl(logp, jax.lax.stop_gradient(ref_logp))
    total = aggregate(surrogate + beta * kl, weights, aggregation)
    w = weights.astype(jnp.float32)
    mean = lambda v: (v * w).sum() / jnp.maximum(w.sum(), 1.0)
    return total, {"kl": mean(kl), "clip_fraction": mean(clipped_.astype(jnp.float32)),
                   "abs_log_ratio": mean(jnp.abs(logp - old_logp))}

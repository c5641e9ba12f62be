"""Advantage estimators (a registry, as tunix's): rewards [B, s] of B = groups x G rollouts at
their s recorded steps -> advantages [B, s].

* ``per_step`` (ParaRL Eq. 4 and after, the default): at each recorded step, standardise the
  rewards over the G rollouts of the group: (R - mean) / (std + eps), std unbiased as torch's
  default (the [BC] code's);
* ``trajectory_mean``: average each rollout's rewards over its steps first, then standardise over
  the group, and give every step that advantage (the "Trajectory Average" of the paper's figure,
  an ablation).

:func:`group_spread` says how much a batch can teach: the mean spread of the rewards within
the groups and the share of groups whose G rewards are all equal (their advantages are 0, so they
give no policy gradient; TRL logs the same as ``frac_reward_zero_std``).

Groups are consecutive rows (:func:`~mmada_jax.rl.steps.draw_steps`). With G = 1 every advantage
is 0: nothing to compare.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from .registry import lookup, registrar

ADVANTAGE_ESTIMATORS: dict[str, Callable] = {}

register = registrar(ADVANTAGE_ESTIMATORS)


def _standardise(r, eps: float):
    """r [groups, G, ...] standardised over axis 1."""
    g = r.shape[1]
    mean = r.mean(axis=1, keepdims=True)
    std = jnp.sqrt(((r - mean) ** 2).sum(axis=1, keepdims=True) / max(g - 1, 1))
    return (r - mean) / (std + eps)


@register("per_step")
def per_step(rewards, group_size: int, eps: float = 1e-4):
    r = jnp.asarray(rewards, jnp.float32)
    b, s = r.shape
    return _standardise(r.reshape(b // group_size, group_size, s), eps).reshape(b, s)


@register("trajectory_mean")
def trajectory_mean(rewards, group_size: int, eps: float = 1e-4):
    r = jnp.asarray(rewards, jnp.float32)
    b, s = r.shape
    a = _standardise(r.mean(axis=1).reshape(b // group_size, group_size), eps).reshape(b, 1)
    return jnp.broadcast_to(a, (b, s))


def advantages(name: str, rewards, group_size: int, eps: float = 1e-4):
    """Advantages [B, s] by the estimator ``name``; B must be a multiple of ``group_size``."""
    estimator = lookup(ADVANTAGE_ESTIMATORS, name, "advantage estimator")
    b = jnp.shape(rewards)[0]
    if group_size < 1 or b % group_size:
        raise ValueError(f"{b} rollouts do not split into groups of {group_size}")
    return estimator(rewards, group_size, eps)


def group_spread(rewards, group_size: int) -> tuple[float, float]:
    """(mean within-group standard deviation, share of flat groups) of rewards [B, s], over every
    (group, recorded step) pair; std with ddof 0 (the spread itself, not an estimate)."""
    r = np.asarray(rewards, np.float64)
    b, s = r.shape
    spread = r.reshape(b // group_size, group_size, s).std(axis=1)
    return float(spread.mean()), float((spread == 0).mean())

"""ParaRL's math against independent numpy computations: step draws, advantages, the clipped
surrogate with the k3 KL, their aggregation and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmada_jax.rl import advantages, draw_steps, group_spread, policy_loss


def test_steps_are_shared_within_a_group_and_redrawn_across_groups():
    rng = np.random.default_rng(0)
    steps = draw_steps(rng, num_groups=20, group_size=4, s=3, num_steps=16)
    assert steps.shape == (80, 3) and steps.dtype == np.int32
    groups = steps.reshape(20, 4, 3)
    assert (groups == groups[:, :1]).all()
    assert len({tuple(g[0]) for g in groups}) > 10
    assert all(len(set(r)) == 3 and list(r) == sorted(r) for r in steps)
    assert steps.min() >= 0 and steps.max() < 16
    counts = np.bincount(draw_steps(rng, 4000, 1, 3, 16).ravel(), minlength=16)
    assert counts.min() > 0.8 * counts.mean()                 # uniform over the steps
    np.testing.assert_array_equal(draw_steps(rng, 2, 3, 3, 16, mode="final"), np.full((6, 1), 15))
    with pytest.raises(ValueError, match="s=5"):
        draw_steps(rng, 1, 2, 5, 4)
    with pytest.raises(ValueError, match="mode"):
        draw_steps(rng, 1, 2, 1, 4, mode="last")


def test_advantages_standardise_each_step_over_the_group():
    rng = np.random.default_rng(1)
    r = rng.random((6, 3)).astype(np.float32)
    got = np.asarray(advantages("per_step", r, group_size=3))
    for g in range(2):
        block = r[3 * g:3 * g + 3].astype(np.float64)
        want = (block - block.mean(0)) / (block.std(0, ddof=1) + 1e-4)
        np.testing.assert_allclose(got[3 * g:3 * g + 3], want, rtol=1e-5, atol=1e-5)
    traj = np.asarray(advantages("trajectory_mean", r, group_size=3))
    m = r.mean(1).reshape(2, 3).astype(np.float64)
    want = ((m - m.mean(1, keepdims=True)) / (m.std(1, ddof=1, keepdims=True) + 1e-4)).reshape(6)
    np.testing.assert_allclose(traj, np.repeat(want[:, None], 3, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(advantages("per_step", np.ones((4, 2)), 2)), 0)
    with pytest.raises(ValueError, match="groups of 4"):
        advantages("per_step", r, group_size=4)
    with pytest.raises(ValueError, match="known"):
        advantages("grpo_typo", r, group_size=3)


def test_group_spread_counts_the_groups_that_give_no_gradient():
    r = np.array([[1.0, 0.0], [1.0, 2.0], [1.0, 4.0],      # group 1: step 0 flat, step 1 spread
                  [0.2, 5.0], [0.6, 5.0], [0.7, 5.0]])     # group 2: step 0 spread, step 1 flat
    spread, flat = group_spread(r, 3)
    want = np.mean([0.0, np.std([0.0, 2.0, 4.0]), np.std([0.2, 0.6, 0.7]), 0.0])
    assert spread == pytest.approx(want) and flat == 0.5
    zero = np.asarray(advantages("per_step", r, group_size=3)).reshape(2, 3, 2)
    assert np.all(zero[0, :, 0] == 0) and np.all(zero[1, :, 1] == 0)    # the flat ones teach nothing


def _numpy_loss_and_grad(logp, old, ref, adv, w, beta, eps, eps_high, clamp):
    """The loss (step_mean aggregation) and d loss / d logp, written out by hand."""
    d = logp - old
    dc = np.clip(d, -clamp, clamp)
    r = np.exp(dc)
    a = adv[..., None]
    unclipped, clipped = r * a, np.clip(r, 1 - eps, 1 + eps_high) * a
    surrogate = -np.minimum(unclipped, clipped)
    kl = np.exp(ref - logp) - (ref - logp) - 1
    per_token = surrogate + beta * kl
    n = w.sum(-1)
    live = n > 0
    per_step = (per_token * w).sum(-1) / np.maximum(n, 1)
    loss = per_step[live].sum() / live.sum()
    # gradient: the surrogate's flows only through the unclipped branch when it is the min and the
    # log-ratio is inside the clamp
    takes_unclipped = unclipped <= clipped
    inside = np.abs(d) < clamp
    g_sur = np.where(takes_unclipped & inside, -a * r, 0.0)
    g_kl = 1 - np.exp(ref - logp)
    scale = (w / np.maximum(n, 1)[..., None]) * live[..., None] / live.sum()
    return loss, (g_sur + beta * g_kl) * scale


def test_clipped_loss_and_gradient_match_numpy():
    rng = np.random.default_rng(2)
    shape = (4, 3, 5)
    logp = rng.normal(-2, 0.5, shape)
    old = logp + rng.normal(0, 0.3, shape)          # mu > 1: the policy has moved
    old[0, 0, 0] = logp[0, 0, 0] + 20                # a log-ratio beyond the clamp
    ref = logp + rng.normal(0, 0.2, shape)
    adv = rng.normal(0, 1, shape[:2])
    w = (rng.random(shape) < 0.7).astype(np.float64)
    w[1, 2] = 0                                      # a step that decoded nothing
    kw = dict(beta=0.05, epsilon=0.2, epsilon_high=0.28, log_ratio_clamp=10.0)
    want_loss, want_grad = _numpy_loss_and_grad(logp, old, ref, adv, w, kw["beta"], 0.2, 0.28, 10.0)
    f = lambda lp: policy_loss(lp, jnp.asarray(old, jnp.float32), jnp.asarray(ref, jnp.float32),
                               jnp.asarray(adv, jnp.float32), jnp.asarray(w), **kw)
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logp, jnp.float32))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
    assert 0 < float(metrics["clip_fraction"]) < 1 and float(metrics["kl"]) > 0


def test_one_inner_update_gives_the_gradient_of_advantage_times_logp():
    rng = np.random.default_rng(3)
    shape = (3, 2, 4)
    logp = jnp.asarray(rng.normal(-1, 0.5, shape), jnp.float32)
    adv = jnp.asarray(rng.normal(0, 1, shape[:2]), jnp.float32)
    w = jnp.asarray(rng.random(shape) < 0.8)
    f = lambda lp: policy_loss(lp, lp, lp, adv, w, beta=0.0)[0]           # old = policy (stop-gradient)
    n = w.sum(-1)
    g = lambda lp: ((-adv[..., None] * lp * w).sum(-1) / jnp.maximum(n, 1)).sum() / (n > 0).sum()
    np.testing.assert_allclose(jax.grad(f)(logp), jax.grad(g)(logp), rtol=1e-6, atol=1e-7)
    live = np.asarray(n) > 0
    assert float(f(logp)) == pytest.approx(-float(np.asarray(adv)[live].mean()), rel=1e-5)   # ratio 1: -mean A


def test_kl_and_its_gradient_vanish_when_policy_equals_reference():
    rng = np.random.default_rng(4)
    logp = jnp.asarray(rng.normal(-1, 0.5, (2, 2, 3)), jnp.float32)
    zeros = jnp.zeros((2, 2))
    f = lambda lp: policy_loss(lp, lp, logp, zeros, jnp.ones((2, 2, 3)), beta=1.0)
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(logp)
    assert float(loss) == 0 and float(metrics["kl"]) == 0
    np.testing.assert_array_equal(grad, 0)
    for name, kw in (("policy loss", dict(loss="ppo2")), ("aggregation", dict(aggregation="sum"))):
        with pytest.raises(ValueError, match=name):
            policy_loss(logp, logp, logp, zeros, jnp.ones((2, 2, 3)), **kw)

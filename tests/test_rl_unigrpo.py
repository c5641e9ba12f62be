"""UniGRPO's estimator (mmada_jax.rl.unigrpo) and aggregations against independent computations:
Algorithm 1's timesteps, the T2I ratio remapping, the masks (prompt never masked, counts, same
inputs for every policy), the learner's log-probabilities on them, and grpo / bnpo / dr_grpo."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import independent_token_logp
from mmada_jax import ModelConfig, init_model
from mmada_jax.rl.losses import aggregate
from mmada_jax.rl.trajectory import token_logp
from mmada_jax.mmada.layout import T2ILayout
from mmada_jax.mmada.text import TextLayout
from mmada_jax.parallel_m.layout import Layout as LayoutM
from mmada_jax.rl.unigrpo import t2i_ratio, timesteps, unigrpo_batches

MASK, OFFSET = 7, 100


@pytest.mark.parametrize("mu", [1, 2, 5])
def test_timesteps_are_one_random_start_then_evenly_spread(mu):
    got = timesteps(np.random.default_rng(4), 6, mu)
    r = np.random.default_rng(4).random(6)
    for row, start in zip(got, r):
        t1 = int(start * 1000)
        want = [t1] if mu == 1 else [int(((n - 1) / (mu - 1)) * (1000 - t1) + t1) for n in range(1, mu + 1)]
        assert row.tolist() == want
    if mu > 1:
        assert (got[:, -1] == 1000).all() and (np.diff(got, axis=1) >= 0).all()


def test_t2i_ratio_is_the_reference_cosine_remapping():
    x = np.array([0.0, 0.2, 0.5, 0.8, 1.0])
    np.testing.assert_allclose(t2i_ratio(x), [np.cos(np.pi / 2 * 0.9 * v) for v in x], rtol=1e-12)
    assert abs(t2i_ratio(0.2) - 0.960) < 1e-3 and abs(t2i_ratio(0.8) - 0.426) < 1e-3     # pararl.md §4.3


@pytest.mark.parametrize("remap", [True, False])
def test_masks_cover_the_response_at_the_scheduled_counts(remap):
    layout = LayoutM(5, 8, 7)          # a joint layout: 6 generated text slots (after BOS), 8 codes
    b, mu = 5, 3
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 60, (b, layout.total)).astype(np.int32)
    codes = rng.integers(0, 16, (b, layout.num_image_tokens)).astype(np.int32)
    batches = unigrpo_batches(ids, codes, np.zeros(b, np.int32), layout, mu, MASK, OFFSET, np.random.default_rng(1),
                              remap_image=remap)
    ratios = timesteps(np.random.default_rng(1), b, mu) / 1000      # the same generator draws the starts first
    full = ids.copy()
    full[:, layout.image_positions()] = codes + OFFSET
    text_at, image_at = layout.generated_text_positions(), layout.image_positions()
    prompt = np.setdiff1d(np.arange(layout.total), np.concatenate([text_at, image_at]))
    assert len(batches) == mu
    for n, batch in enumerate(batches):
        masked = batch["ids"] == MASK
        assert not masked[:, prompt].any()
        np.testing.assert_array_equal(batch["ids"][~masked], full[~masked])
        image_ratio = np.cos(np.pi / 2 * 0.9 * ratios[:, n]) if remap else ratios[:, n]
        np.testing.assert_array_equal(masked[:, text_at].sum(1), np.clip(np.round(ratios[:, n] * 6), 1, 6))
        np.testing.assert_array_equal(masked[:, image_at].sum(1), np.clip(np.round(image_ratio * 8), 1, 8))
        np.testing.assert_array_equal(batch["weights"][:, 0] > 0, masked[:, np.concatenate([text_at, image_at])])
        np.testing.assert_array_equal(batch["targets"], np.concatenate([full[:, text_at], codes], 1))
    assert not np.array_equal(batches[0]["ids"], batches[1]["ids"])       # every inner update re-masks
    again = unigrpo_batches(ids, codes, np.zeros(b, np.int32), layout, mu, MASK, OFFSET, np.random.default_rng(1),
                            remap_image=remap)
    for x, y in zip(batches, again):
        np.testing.assert_array_equal(x["ids"], y["ids"])                  # masks are data from the seed


def test_group_masks_give_every_rollout_of_a_group_its_first_rollouts_draw():
    layout = LayoutM(5, 8, 7)
    g, groups, mu = 3, 4, 2
    rng = np.random.default_rng(5)
    ids = np.repeat(rng.integers(10, 60, (groups, layout.total)), g, axis=0).astype(np.int32)   # identical in a group
    codes = np.repeat(rng.integers(0, 16, (groups, layout.num_image_tokens)), g, axis=0).astype(np.int32)
    batches = unigrpo_batches(ids, codes, np.zeros(g * groups, np.int32), layout, mu, MASK, OFFSET,
                              np.random.default_rng(1), shared=g)
    ratios = timesteps(np.random.default_rng(1), groups, mu) / 1000          # one start per group
    text_at = layout.generated_text_positions()
    for n, batch in enumerate(batches):
        rows = batch["ids"].reshape(groups, g, -1)
        assert (rows == rows[:, :1]).all()                      # identical rollouts: identical learner rows
        np.testing.assert_array_equal(batch["ratio"], np.repeat(ratios[:, n], g).astype(np.float32))
        np.testing.assert_array_equal((rows[:, 0][:, text_at] == MASK).sum(1), np.clip(np.round(ratios[:, n] * 6), 1, 6))
    first = batches[0]["ids"].reshape(groups, g, -1)[:, 0] == MASK     # (the last update masks everything)
    assert len({r.tobytes() for r in first}) == groups                  # groups draw their own positions
    with pytest.raises(ValueError, match="shared=5: must divide the 12 rollouts"):
        unigrpo_batches(ids, codes, np.zeros(g * groups, np.int32), layout, mu, MASK, OFFSET,
                        np.random.default_rng(1), shared=5)


@pytest.mark.parametrize("layout", [TextLayout(6, 8), T2ILayout(4, 9)], ids=["text", "t2i"])
def test_learner_logp_on_the_masked_response_equals_an_independent_forward(layout):
    model = init_model(ModelConfig.from_yaml("configs/mmada_tiny.yaml"), seed=3)
    t = model.config.tokens
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 100, (3, layout.total)).astype(np.int32)
    codes = rng.integers(0, t.codebook_size, (3, layout.num_image_tokens)).astype(np.int32)
    batch = unigrpo_batches(ids, codes, np.asarray([0, 2, 1]), layout, 2, t.mask_id, t.image_offset, rng)[1]
    got = np.asarray(token_logp(model, {k: jnp.asarray(v) for k, v in batch.items() if k != "ratio"}, layout))
    want = independent_token_logp(model, batch, layout)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_grpo_bnpo_and_dr_grpo_aggregations():
    rng = np.random.default_rng(0)
    per_token = rng.normal(size=(4, 1, 6))
    w = (rng.random((4, 1, 6)) < 0.5).astype(np.float32)
    w[2] = 0.0                                                   # a row with nothing masked
    got = {how: float(aggregate(jnp.asarray(per_token), jnp.asarray(w), how)) for how in ("grpo", "bnpo", "dr_grpo")}
    live = [i for i in range(4) if w[i].sum()]
    assert got["grpo"] == pytest.approx(np.mean([(per_token[i] * w[i]).sum() / w[i].sum() for i in live]), rel=1e-5)
    assert got["bnpo"] == pytest.approx((per_token * w).sum() / w.sum(), rel=1e-5)
    assert got["dr_grpo"] == pytest.approx((per_token * w).sum() / (4 * 6), rel=1e-5)
    with pytest.raises(ValueError, match="loss aggregation 'mean'"):
        aggregate(jnp.asarray(per_token), jnp.asarray(w), "mean")

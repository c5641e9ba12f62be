"""The ``random_remask`` estimator (App. D.2 ablation): the masks it draws and the learner's
log-probabilities on them, against an independent forward of the tiny model."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import independent_token_logp
from mmada_jax import ModelConfig, init_model
from mmada_jax.parallel_a.layout import Layout as LayoutA
from mmada_jax.parallel_m.layout import Layout as LayoutM
from mmada_jax.rl.remask import remask_batch
from mmada_jax.rl.trajectory import token_logp

MASK, OFFSET = 7, 100


def _final(layout, b, rng):
    ids = rng.integers(10, 60, (b, layout.total)).astype(np.int32)
    codes = rng.integers(0, 16, (b, layout.num_image_tokens)).astype(np.int32)
    return ids, codes


@pytest.mark.parametrize("layout", [LayoutM(5, 6, 4), LayoutA(4, (2, 3), 5)], ids=["M", "A"])
def test_masks_cover_only_generated_positions_at_uniform_ratios(layout):
    rng = np.random.default_rng(0)
    b, s = 40, 3
    ids, codes = _final(layout, b, rng)
    batch = remask_batch(ids, codes, np.zeros(b, np.int32), layout, s, MASK, OFFSET, np.random.default_rng(1))
    text_at, image_at = layout.generated_text_positions(), layout.image_positions()
    generated = np.concatenate([text_at, image_at])
    n = len(generated)
    full = ids.copy()
    full[:, image_at] = codes + OFFSET
    full = np.repeat(full, s, axis=0)
    masked = batch["ids"] == MASK
    assert not masked[:, np.setdiff1d(np.arange(layout.total), generated)].any()   # prompt, tags, -M's BOS kept
    np.testing.assert_array_equal(batch["ids"][~masked], full[~masked])
    counts = masked.sum(-1)
    assert counts.min() >= 1 and counts.max() <= n
    assert 0.35 < (counts / n).mean() < 0.65                                      # p ~ U(0, 1]
    w = batch["weights"].reshape(b * s, n)
    np.testing.assert_array_equal(w > 0, masked[:, generated])
    np.testing.assert_array_equal(batch["targets"][:, :len(text_at)], full[:, text_at])
    np.testing.assert_array_equal(batch["targets"][:, len(text_at):], full[:, image_at] - OFFSET)
    assert not all(np.array_equal(masked[0], masked[j]) for j in range(1, s))      # slots draw their own masks
    again = remask_batch(ids, codes, np.zeros(b, np.int32), layout, s, MASK, OFFSET, np.random.default_rng(1))
    np.testing.assert_array_equal(again["ids"], batch["ids"])                      # masks are data from the seed


def test_learner_logp_on_remasked_inputs_equals_an_independent_forward():
    model = init_model(ModelConfig.from_yaml("configs/mmada_tiny.yaml"), seed=3)
    t = model.config.tokens
    layout = LayoutM(6, 8, 5)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 100, (2, layout.total)).astype(np.int32)
    codes = rng.integers(0, t.codebook_size, (2, layout.num_image_tokens)).astype(np.int32)
    batch = remask_batch(ids, codes, np.asarray([0, 2]), layout, 2, t.mask_id, t.image_offset, rng)
    got = np.asarray(token_logp(model, {k: jnp.asarray(v) for k, v in batch.items()}, layout))
    want = independent_token_logp(model, batch, layout)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)

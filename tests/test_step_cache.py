"""The step cache (mmada_jax.sampling.step_cache): the partial forward against the full one, the
selection rule and the refresh schedule against hand computations, and the joint samplers with the
cache against themselves without it where the cache is exact."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from mmada_jax import ModelConfig, init_model
from mmada_jax.parallel_m import inference_prompt
from mmada_jax.parallel_m import sampler as par_m
from mmada_jax.sampling import step_cache
from mmada_jax.sampling.step_cache import CacheSettings, Group, Slot

TINY = ModelConfig.from_yaml("configs/mmada_tiny.yaml")


def _model(layers: int = 2, seed: int = 0):
    return init_model(dataclasses.replace(TINY, n_layers=layers), seed=seed)


def _ids(rng, b, length, vocab=TINY.vocab_size):
    return rng.integers(0, vocab, (b, length)).astype(np.int32)


def test_encode_at_every_position_is_the_full_forward():
    model = _model()
    rng = np.random.default_rng(0)
    old, new = _ids(rng, 2, 12), _ids(rng, 2, 12)
    _, _, kv = model.encode(old, return_kv=True)
    stale, _ = model.encode(old)
    every = np.tile(np.arange(12, dtype=np.int32)[::-1], (2, 1))       # any order
    got, got_kv = model.encode_at(new, every, kv, stale)
    want, _, want_kv = model.encode(new, return_kv=True)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got_kv.k), np.asarray(want_kv.k), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got_kv.v), np.asarray(want_kv.v), atol=1e-5, rtol=1e-5)


def test_encode_at_of_a_one_block_model_is_exact_where_it_recomputes():
    """With one block a position's keys and values depend on its own token only, so recomputing
    every changed position gives the full forward's states there; the others keep their old ones."""
    model = _model(layers=1)
    rng = np.random.default_rng(1)
    old = _ids(rng, 2, 10)
    new = old.copy()
    new[0, [2, 7]] = (old[0, [2, 7]] + 5) % TINY.vocab_size
    new[1, [4]] = (old[1, [4]] + 9) % TINY.vocab_size
    picks = np.asarray([[2, 7, 0], [4, 9, 1]], np.int32)              # the changed ones and others
    before, _, kv = model.encode(old, return_kv=True)
    got, _ = model.encode_at(new, picks, kv, before)
    want, _ = model.encode(new)
    got, want, before = map(np.asarray, (got, want, before))
    for row in range(2):
        np.testing.assert_allclose(got[row, picks[row]], want[row, picks[row]], atol=1e-5, rtol=1e-5)
        rest = np.setdiff1d(np.arange(10), picks[row])
        np.testing.assert_array_equal(got[row, rest], before[row, rest])
    assert not np.allclose(got[0, 3], want[0, 3], atol=1e-3)          # stale: it saw the old tokens


def test_encode_at_keeps_rows_positions_under_left_padding():
    model = _model()
    rng = np.random.default_rng(2)
    ids = _ids(rng, 2, 9)
    mask = np.ones((2, 9), np.int32)
    mask[1, :3] = 0
    position_ids = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    hidden, _, kv = model.encode(ids, mask, mask_mode="hard", position_ids=position_ids, return_kv=True)
    picks = np.asarray([[8, 5], [8, 5]], np.int32)
    got, _ = model.encode_at(ids, picks, kv, hidden, mask, mask_mode="hard", position_ids=position_ids)
    np.testing.assert_allclose(np.asarray(got), np.asarray(hidden), atol=1e-5, rtol=1e-5)   # nothing changed


def test_refresh_schedule():
    s = CacheSettings(cache_interval=3, cache_warmup=0.2)
    np.testing.assert_array_equal(step_cache.refresh_steps(10, s),
                                  [1, 1, 1, 0, 0, 1, 0, 0, 1, 0])
    assert step_cache.refresh_steps(5, CacheSettings()).all()
    assert step_cache.budget(64, CacheSettings(cache_fraction=0.25)) == 16
    assert step_cache.budget(10, CacheSettings(cache_fraction=0.01)) == 1
    with pytest.raises(ValueError, match="cache_fraction"):
        par_m.Settings(cache_fraction=1.5).check()


def test_pick_takes_changed_tokens_first_then_priority():
    rows = jnp.asarray([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 10]], jnp.int32)
    seen = jnp.asarray([[5, 6, 0, 8, 9, 0], [5, 6, 7, 8, 9, 10]], jnp.int32)
    slot = Slot(None, None, seen)
    positions = np.arange(1, 6)                            # positions 1..5 compete
    priority = jnp.asarray([[0.9, -1.0, 0.1, 0.5, -1.0], [0.2, 0.2, 0.7, -1.0, 0.3]])
    got = np.asarray(step_cache.pick(rows, slot, Group(positions, priority, 3)))
    # row 0: positions 2 and 5 changed (indices 1, 4), then the highest priority (index 0)
    assert sorted(got[0].tolist()) == [0, 1, 4] and set(got[0, :2]) == {1, 4}
    # row 1: nothing changed: by priority, ties to the lower index
    assert got[1].tolist() == [2, 4, 0]


def _m_run(model, **settings):
    rng = np.random.default_rng(3)
    t = model.config.tokens
    rows = [inference_prompt(t, rng.integers(0, t.codebook_size, n), rng.integers(0, 100, m).tolist())
            for n, m in ((9, 5), (9, 3))]
    cond, uncond = [r[0] for r in rows], [r[1] for r in rows]
    out = par_m.generate(model, cond, uncond, num_image_tokens=16, text_len=12, text_steps=8, image_steps=4,
                         text_cfg=1.5, image_cfg=2.0, seed=7, exact=False, **settings)
    return out


def test_m_sampler_with_a_refresh_every_step_is_the_uncached_sampler():
    model = _model()
    plain = _m_run(model)
    cached = _m_run(model, cache_interval=1)
    np.testing.assert_array_equal(cached.ids, plain.ids)
    np.testing.assert_array_equal(cached.image_codes, plain.image_codes)


def test_m_sampler_cache_is_exact_for_a_one_block_model_recomputing_everything():
    """One block, every output position recomputed: a cached step sees exactly what a full one
    sees (the prompt's keys and values depend on its own tokens only), so the ids agree."""
    model = _model(layers=1)
    plain = _m_run(model)
    cached = _m_run(model, cache_interval=4, cache_fraction=1.0)
    np.testing.assert_array_equal(cached.ids, plain.ids)


def test_m_sampler_cache_decodes_everything_with_every_setting():
    model = _model(layers=2)
    plain = _m_run(model)
    for settings in (dict(cache_interval=3, cache_fraction=0.25),
                     dict(cache_interval=2, cache_fraction=0.5, cache_warmup=0.25, text_temperature=0.5)):
        cached = _m_run(model, **settings)
        assert cached.ids.shape == plain.ids.shape
        lay = cached.layout
        assert (cached.ids[:, lay.text_start + 1:] != model.config.tokens.mask_id).all()   # every slot decoded
        assert ((cached.image_codes >= 0) & (cached.image_codes < model.config.tokens.codebook_size)).all()
        assert not np.array_equal(cached.ids, plain.ids)             # stale states did change something


@pytest.fixture(scope="module")
def a_config():
    """The tiny -A configuration of the golden set (its weights are not used)."""
    from conftest import golden_path
    from mmada_jax import load_model
    return load_model(golden_path("dimoo_tiny"))[0].config


def _a_run(model, **settings):
    from mmada_jax.parallel_a import generate
    from mmada_jax.parallel_a.prompts import edit_prompt_from_ids
    t = model.config.tokens
    rng = np.random.default_rng(0)
    ids = lambda n: rng.integers(0, t.image_offset // 2, n).tolist()  # noqa: E731
    prompts = [edit_prompt_from_ids(t, ids(3), ids(n), rng.integers(0, t.codebook_size, g), grid=(2, 3), text_len=12)
               for n, g in ((4, (2, 2)), (9, (2, 3)))]
    return generate(model, prompts, seed=5, exact=False, text_len=12, text_steps=8, image_steps=4, instruction_cfg=1.5,
                    image_cfg=2.0, **settings)


@pytest.mark.golden
def test_a_sampler_with_a_refresh_every_step_is_the_uncached_sampler(a_config):
    model = init_model(dataclasses.replace(a_config, n_layers=2), seed=1)
    np.testing.assert_array_equal(_a_run(model, cache_interval=1).ids, _a_run(model).ids)


@pytest.mark.golden
def test_a_sampler_cache_is_exact_for_a_one_block_model_recomputing_everything(a_config):
    model = init_model(dataclasses.replace(a_config, n_layers=1), seed=1)
    plain = _a_run(model)
    np.testing.assert_array_equal(_a_run(model, cache_interval=3, cache_fraction=1.0).ids, plain.ids)
    deep = init_model(dataclasses.replace(a_config, n_layers=2), seed=1)
    cached = _a_run(deep, cache_interval=3, cache_fraction=0.25, text_temperature=0.5)
    assert not np.array_equal(cached.ids, _a_run(deep, text_temperature=0.5).ids)
    assert ((cached.image_codes >= 0) & (cached.image_codes < a_config.tokens.codebook_size)).all()


def test_rollouts_with_the_cache_record_what_the_learner_recomputes_up_to_a_reported_gap():
    """RL's learner never uses the cache: it recomputes the recorded steps' log-probs with full
    forwards; with a refresh every step the sampler's recorded log-probs are exactly those, with a
    real cache they differ by the gap the RL loop reports (``logp_gap``)."""
    import jax
    from mmada_jax.rl.trajectory import step_batch, token_logp

    model = _model(layers=2)
    t = model.config.tokens
    rng = np.random.default_rng(4)
    rows = [inference_prompt(t, rng.integers(0, t.codebook_size, 9), rng.integers(0, 100, m).tolist())
            for m in (5, 3)]
    steps = np.asarray([[1, 4, 6], [2, 5, 7]])
    kw = dict(num_image_tokens=16, text_len=12, text_steps=8, image_steps=4, image_cfg=2.0, seed=3, exact=False,
              record_steps=steps)
    slots = par_m.max_text_per_step(par_m.Settings(text_len=12, text_steps=8, image_steps=4))
    gaps = {}
    for interval in (1, 3):
        out = par_m.generate(model, [r[0] for r in rows], [r[1] for r in rows], cache_interval=interval,
                             cache_fraction=0.25, **kw)
        batch = step_batch(out.recording, out.pads, out.layout, t.mask_id, t.image_offset, slots)
        w = batch["weights"]
        logp = np.asarray(token_logp(model, {k: jax.numpy.asarray(v) for k, v in batch.items()},
                                     out.layout)).reshape(w.shape)
        gaps[interval] = np.abs(logp * w - batch["sampler_logp"])[w > 0].mean()
    assert gaps[1] < 1e-4 < gaps[3] and np.isfinite(gaps[3])

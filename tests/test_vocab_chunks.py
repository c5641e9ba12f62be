"""The chunked text decision equals the one-pass computation, and the samplers replay the golden
runs exactly when the vocabulary is split into several chunks (the tiny goldens' vocabularies fit
one default chunk, so this test shrinks it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmada_jax.sampling import vocab_chunks
from mmada_jax.sampling.vocab_chunks import reduce_vocab


def _numpy_decision(guided, cond, noisy):
    """First argmax, float64 softmax probability of the chosen token, log-sum-exp: one pass."""
    g = guided.astype(np.float64)
    x0 = np.argmax(noisy, axis=-1)
    top = g.max(-1, keepdims=True)
    with np.errstate(invalid="ignore"):             # the all -inf row: NaN, left out of the comparison
        conf = np.exp(np.take_along_axis(g, x0[..., None], -1)[..., 0] - top[..., 0]) / np.exp(g - top).sum(-1)
    c = cond.astype(np.float64)
    lse = c.max(-1) + np.log(np.exp(c - c.max(-1, keepdims=True)).sum(-1))
    return x0, conf, np.argmax(guided, axis=-1), lse


@pytest.mark.parametrize("chunk", [7, 10, 50, 64])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_reduce_vocab_equals_one_pass(chunk, temperature):
    rng = np.random.default_rng(chunk)
    b, t, v = 3, 6, 50
    cond = rng.normal(size=(b, t, v)).astype(np.float32) * 3
    uncond = rng.normal(size=(b, t, v)).astype(np.float32) * 3
    guided = cond + 1.5 * (cond - uncond)
    guided[0, 0, [3, 17, 45]] = guided[0, 0].max() + 1.0     # ties across chunks: the first wins
    guided[1, :, 20:30] = -np.inf                              # excluded columns
    guided[2, 1, :] = -np.inf                                  # a row with nothing allowed: index 0
    u = rng.uniform(size=(b, t, v))
    gumbel = -np.log(-np.log(u))
    noisy = guided.astype(np.float64) + temperature * gumbel

    def chunk_logits(start, size):
        return (jax.lax.dynamic_slice_in_dim(jnp.asarray(guided), start, size, axis=2),
                jax.lax.dynamic_slice_in_dim(jnp.asarray(cond), start, size, axis=2))

    noise = lambda start, size: jax.lax.dynamic_slice_in_dim(jnp.asarray(gumbel), start, size, axis=2)  # noqa: E731
    with jax.enable_x64(True):
        got = reduce_vocab(chunk_logits, v, exact=True, temperature=temperature, noise=noise, want_cond_lse=True,
                           chunk=chunk)
        got = jax.tree.map(np.asarray, got)
    x0, conf, argmax, lse = _numpy_decision(guided, cond, noisy)
    np.testing.assert_array_equal(got.x0, x0)
    np.testing.assert_array_equal(got.argmax, argmax)
    assert got.argmax[0, 0] == 3 and got.argmax[2, 1] == 0
    finite = np.isfinite(conf)
    np.testing.assert_allclose(got.confidence[finite], conf[finite], rtol=1e-6, atol=0)
    assert got.confidence.dtype == np.float64
    np.testing.assert_allclose(got.cond_lse, lse, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_the_decision_on_masked_positions_only_is_the_decision_where_it_is_read(temperature):
    """``on_masked``: the head sees only the still-masked positions (at the smallest of the compiled
    widths that holds them), with guidance twins and the Gumbel noise of the whole draw; at every
    masked position the decision is the one over all positions, elsewhere x0 0 and confidence -inf."""
    from mmada_jax.sampling.common import as_randomness, on_masked, text_decision
    rng = np.random.default_rng(5)
    b, t, d, v = 2, 10, 8, 40
    hidden = jnp.asarray(rng.normal(size=(2 * b, t, d)), jnp.float32)     # conditional rows, then twins
    head = jnp.asarray(rng.normal(size=(d, v)), jnp.float32)
    rnd = as_randomness(jax.random.key(3), b)
    seen = []

    def decide(h, positions):
        seen.append(h.shape[1])
        def chunk_logits(start, size):
            logits = h @ jax.lax.dynamic_slice_in_dim(head, start, size, axis=1)
            guided = logits[:b] + 1.5 * (logits[:b] - logits[b:])
            return guided, logits[:b]
        return text_decision(chunk_logits, v, (b, t), temperature=temperature, rnd=rnd, index=2, exact=False,
                             want_cond_lse=True, positions=positions)

    whole = jax.tree.map(np.asarray, decide(hidden, None))
    for masked_count in (t, 6, 3, 1):            # widths 10, 8, 3, 3 (of 3, 5, 8, 10)
        is_mask = np.zeros((b, t), bool)
        for row in range(b):
            is_mask[row, rng.choice(t, masked_count - row if masked_count > 1 else 1, replace=False)] = True
        seen.clear()
        got = jax.tree.map(np.asarray, jax.jit(lambda h, m: on_masked(decide, h, m))(hidden, jnp.asarray(is_mask)))
        assert sorted(set(seen)) == [3, 5, 8, 10]     # every width compiled (lax.switch traces each)
        for name in ("x0", "argmax", "confidence", "cond_lse"):
            np.testing.assert_array_equal(getattr(got, name)[is_mask], getattr(whole, name)[is_mask], err_msg=name)
        if masked_count <= 3:     # width 3 ran: the 7 positions it left out are filled
            assert ((got.confidence == -np.inf).sum(axis=1) == t - 3).all()
            assert (got.x0[got.confidence == -np.inf] == 0).all()


@pytest.mark.golden
def test_golden_replays_are_exact_with_many_vocabulary_chunks(monkeypatch):
    """Every golden sampler replay (LLaDA text with guidance, -M, -A with Gumbel text noise from the
    tape) with the vocabulary split into 4-5 chunks, the last one partial."""
    import test_sampling
    import test_sampling_a
    from conftest import golden_path

    from mmada_jax import load_model
    vocab = load_model(golden_path("mmada_tiny"))[0].config.vocab_size
    monkeypatch.setattr(vocab_chunks, "VOCAB_CHUNK", vocab // 4 + 3)
    jax.clear_caches()                          # trace the samplers again with the small chunks
    variant = sorted(test_sampling.MODELS)[0]
    test_sampling.test_llada_generate_replays_golden(variant)
    test_sampling.test_parallel_replays_golden(variant)
    dimoo = load_model(golden_path("dimoo_tiny"))[0]
    monkeypatch.setattr(vocab_chunks, "VOCAB_CHUNK", dimoo.config.vocab_size // 4 + 3)
    jax.clear_caches()
    for run in test_sampling_a.RUNS:
        test_sampling_a.test_ti2ti_replays_golden(dimoo, run)
    jax.clear_caches()

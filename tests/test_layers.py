"""RMSNorm, half-split RoPE and attention against direct numpy formulas (spec mmada_m.md §1.2)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mmada_jax.layers import apply_rope, attention, attention_bias, rms_norm, rope_tables


def test_rms_norm():
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
    w = np.linspace(0.5, 1.5, 8, dtype=np.float32)
    want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(rms_norm(x, w, 1e-5), want, rtol=1e-6, atol=1e-6)
    # bf16 input: computed in fp32, cast back, then the gain
    xb = jnp.asarray(x, jnp.bfloat16)
    assert rms_norm(xb, jnp.asarray(w, jnp.bfloat16), 1e-5).dtype == jnp.bfloat16


def test_rope_half_split():
    rng = np.random.default_rng(1)
    b, l, h, d, theta = 2, 5, 3, 8, 500000.0
    x = rng.normal(size=(b, l, h, d)).astype(np.float32)
    cos, sin = rope_tables(l, d, theta)
    got = np.asarray(apply_rope(x, cos, sin))
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = np.arange(l)[:, None] * inv[None]
    c, s = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]          # rotate pairs (j, j + d/2)
    want = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 0], x[:, 0], rtol=1e-6)   # position 0 is unrotated


def _numpy_attention(q, k, v, bias=None):
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        s = s + bias
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("impl", ["plain", "xla"])
def test_attention_modes(impl):
    rng = np.random.default_rng(2)
    q, k, v = (rng.normal(size=(2, 6, 4, 8)).astype(np.float32) for _ in range(3))
    mask = np.array([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]])
    np.testing.assert_allclose(attention(q, k, v, impl=impl), _numpy_attention(q, k, v), atol=1e-5)
    bias, m = attention_bias(mask, "additive", jnp.float32)
    np.testing.assert_allclose(attention(q, k, v, bias=bias, mask=m, impl=impl),
                               _numpy_attention(q, k, v, mask[:, None, None, :].astype(np.float32)), atol=1e-5)
    bias, m = attention_bias(mask, "hard", jnp.float32)
    hard = np.where(mask[:, None, None, :] == 1, 0.0, -1e30)
    np.testing.assert_allclose(attention(q, k, v, bias=bias, mask=m, impl=impl),
                               _numpy_attention(q, k, v, hard), atol=1e-5)
    with pytest.raises(ValueError, match="mask mode"):
        attention_bias(mask, "soft", jnp.float32)

"""The pieces of a LLaDA block as pure functions: RMSNorm, half-split RoPE, attention.

Numerics follow the reference (spec mmada_m.md §1.2): RMSNorm is computed in fp32 and cast back
before the gain; RoPE rotates q and k in fp32 (``rope_full_precision``) in the half-split
("rotate_half", NeoX) layout with positions 0..L-1; attention is bidirectional with scale
1/sqrt(head_dim) and an optional mask term.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) in fp32, cast back to x.dtype, times the gain."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype) * weight.astype(x.dtype)


def rope_tables(positions, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [..., head_dim] for ``positions`` (an int L for 0..L-1, or an int array
    [L] / [B, L]): angle = concat(freqs, freqs), freqs = position * theta^(-2j/head_dim)."""
    if isinstance(positions, int):
        positions = jnp.arange(positions, dtype=jnp.int32)
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = jnp.asarray(positions).astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x [B, L, H, hd] in fp32: x*cos + rotate_half(x)*sin, rotate_half = [-x2, x1].

    ``cos``/``sin`` are [L, hd] (shared positions) or [B, L, hd] (per-row positions).
    """
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    cos, sin = (t[None, :, None, :] if t.ndim == 2 else t[:, :, None, :] for t in (cos, sin))
    out = xf * cos + rotated * sin
    return out.astype(x.dtype)


def attention_bias(attention_mask: jax.Array | None, mode: str, dtype) -> tuple[jax.Array | None, jax.Array | None]:
    """(bias, mask) for the attention kernel from a [B, L] 0/1 key mask.

    ``hard``: boolean key-padding mask [B, 1, 1, L] (padded keys get no weight).
    ``additive``: the MMaDA-Parallel-M behaviour, the 0/1 mask ADDED to the scores as a bias
    [B, 1, 1, L] (kept keys +1, padded keys +0).
    """
    if attention_mask is None:
        return None, None
    m = attention_mask[:, None, None, :]
    if mode == "additive":
        return m.astype(dtype), None
    if mode == "hard":
        return None, m.astype(bool)
    raise ValueError(f"attention mask mode must be 'hard' or 'additive', got {mode!r}")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, bias=None, mask=None,
              impl: str = "auto", precision=None, inference: bool = False) -> jax.Array:
    """Bidirectional multi-head attention, q [B, L, H, hd], k/v [B, S, Hkv, hd] -> [B, L, H, hd].

    ``impl``: ``plain`` (explicit einsum with an fp32 softmax, the test oracle), ``xla`` /
    ``cudnn`` (``jax.nn.dot_product_attention``), ``xla_rows`` (``xla`` one row at a time, a
    ``lax.map`` over the batch: on CPU one row's [H, L, S] scores stay in cache, where the batched
    op streams all rows' through memory: 1.8x faster per row at B=2, 2.7x at B=16, L=583; the
    same values), ``auto`` (cuDNN flash attention on GPU for 16-bit inputs without a bias,
    ``xla_rows`` on CPU for an ``inference`` forward (the samplers': no gradient flows through it;
    the gradient of the row map is pathological on CPU, 20 s a step for a tiny SFT), ``xla``
    otherwise).
    """
    scale = q.shape[-1] ** -0.5
    if impl == "auto":
        backend = jax.default_backend()
        on_gpu = backend == "gpu"
        impl = ("cudnn" if on_gpu and q.dtype in (jnp.bfloat16, jnp.float16) and bias is None
                else "xla_rows" if inference and backend == "cpu" and q.shape[0] > 1 else "xla")
    if impl == "xla_rows":
        def one(row):
            q1, k1, v1, b1, m1 = (None if a is None else a[None] for a in row)
            return attention(q1, k1, v1, bias=b1, mask=m1, impl="xla")[0]
        per_row = lambda a: None if a is None else jnp.broadcast_to(a, (q.shape[0],) + a.shape[1:])  # noqa: E731
        return jax.lax.map(one, (q, k, v, per_row(bias), per_row(mask)))
    if impl in ("xla", "cudnn"):
        return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale,
                                            is_causal=False, implementation=impl)
    if impl != "plain":
        raise ValueError(f"unknown attention implementation {impl!r}")
    b, l, h, d = q.shape
    groups = h // k.shape[2]
    qg = q.reshape(b, l, k.shape[2], groups, d)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, precision=precision,
                        preferred_element_type=jnp.float32) * scale
    if bias is not None:  # [B, 1, 1, S] -> broadcast over (kv head, group, query)
        scores = scores + bias[:, :, None].astype(jnp.float32)
    if mask is not None:
        scores = jnp.where(mask[:, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v, precision=precision)
    return out.reshape(b, l, h, d)

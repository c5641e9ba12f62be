"""Convolutional building blocks shared by both tokenizers (NHWC activations, HWIO kernels).

Every block reproduces the PyTorch arithmetic of the references: ``Conv2d`` with explicit
symmetric padding, ``GroupNorm`` (biased variance over each group's channels and all pixels,
``eps`` inside the square root, per-channel affine), swish/SiLU, the ResNet block
``x + conv(silu(gn(conv(silu(gn(x))))))`` with a 1x1 shortcut where the width changes,
the stride-2 downsampler that zero-pads only right/bottom, nearest x2 upsampling, and the
single-head spatial attention of MAGVIT-v2's mid block.

Parameters have no sharding metadata (the tokenizers are small and replicated). Parameter and
submodule names are the reference's, so the weight conversion is a mechanical renaming
(``kernel`` <-> ``weight`` with OIHW <-> HWIO, ``scale`` <-> ``weight``). The random init is
PyTorch's default (uniform +-1/sqrt(fan_in) for kernels and biases), good for benchmarks.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

HIGHEST = jax.lax.Precision.HIGHEST


def _uniform(rngs: nnx.Rngs, shape, bound: float, dtype) -> jax.Array:
    return jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound).astype(dtype)


class Conv(nnx.Module):
    """2-D convolution, torch ``Conv2d(cin, cout, k, stride, padding)`` semantics."""

    def __init__(self, cin: int, cout: int, k: int = 3, *, stride: int = 1, padding: int | None = None,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(cin * k * k)
        self.kernel = nnx.Param(_uniform(rngs, (k, k, cin, cout), bound, dtype))
        self.bias = nnx.Param(_uniform(rngs, (cout,), bound, dtype))
        self.stride = stride
        self.padding = (k // 2) if padding is None else padding

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...].astype(x.dtype), (self.stride, self.stride), [(p, p), (p, p)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST)
        return y + self.bias[...].astype(x.dtype)


class GroupNorm(nnx.Module):
    """torch ``GroupNorm(groups, channels, eps, affine=True)`` on NHWC input (stats in fp32)."""

    def __init__(self, channels: int, groups: int, eps: float, *, dtype=jnp.float32):
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels not divisible into {groups} groups")
        self.scale = nnx.Param(jnp.ones((channels,), dtype))
        self.bias = nnx.Param(jnp.zeros((channels,), dtype))
        self.groups, self.eps = groups, eps

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        g = x.astype(jnp.float32).reshape(b, h, w, self.groups, c // self.groups)
        mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
        y = ((g - mean) * jax.lax.rsqrt(var + self.eps)).reshape(b, h, w, c)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


def swish(x: jax.Array) -> jax.Array:
    """x * sigmoid(x) (torch SiLU / the reference's ``nonlinearity``)."""
    return x * jax.nn.sigmoid(x)


class ResnetBlock(nnx.Module):
    """GN -> swish -> conv3x3 -> GN -> swish -> conv3x3, plus the input (through a 1x1 conv
    named ``shortcut_name`` when the width changes): MAGVIT's ``nin_shortcut``, diffusers'
    ``conv_shortcut``."""

    def __init__(self, cin: int, cout: int, *, groups: int, eps: float, shortcut_name: str,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(cin, groups, eps, dtype=dtype)
        self.conv1 = Conv(cin, cout, 3, dtype=dtype, rngs=rngs)
        self.norm2 = GroupNorm(cout, groups, eps, dtype=dtype)
        self.conv2 = Conv(cout, cout, 3, dtype=dtype, rngs=rngs)
        self.shortcut_name = shortcut_name if cin != cout else None
        if self.shortcut_name:
            setattr(self, shortcut_name, Conv(cin, cout, 1, dtype=dtype, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.shortcut_name:
            x = getattr(self, self.shortcut_name)(x)
        return x + h


class Downsample(nnx.Module):
    """Zero-pad right and bottom by one pixel, then conv3x3 stride 2 without padding (H/2, W/2)."""

    def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = Conv(channels, channels, 3, stride=2, padding=0, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))


def upsample_nearest2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 (torch ``interpolate(scale_factor=2, mode='nearest')``)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


class Upsample(nnx.Module):
    """Nearest x2, then conv3x3 (padding 1)."""

    def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = Conv(channels, channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(upsample_nearest2x(x))


class AttnBlock(nnx.Module):
    """Single-head self-attention over all H*W positions (MAGVIT-v2 mid block): GN, 1x1 q/k/v,
    softmax(q k^T / sqrt(C)) over the keys, 1x1 ``proj_out``, residual."""

    def __init__(self, channels: int, *, groups: int, eps: float, dtype=jnp.float32, rngs: nnx.Rngs):
        self.norm = GroupNorm(channels, groups, eps, dtype=dtype)
        self.q = Conv(channels, channels, 1, dtype=dtype, rngs=rngs)
        self.k = Conv(channels, channels, 1, dtype=dtype, rngs=rngs)
        self.v = Conv(channels, channels, 1, dtype=dtype, rngs=rngs)
        self.proj_out = Conv(channels, channels, 1, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, h * w, c) for m in (self.q, self.k, self.v))
        scores = jnp.einsum("bqc,bkc->bqk", q, k, precision=HIGHEST) * (c ** -0.5)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(x.dtype)
        out = jnp.einsum("bqk,bkc->bqc", probs, v, precision=HIGHEST).reshape(b, h, w, c)
        return x + self.proj_out(out)

"""MAGVIT-v2 image tokenizer of MMaDA / MMaDA-Parallel-M in Flax NNX (spec mmada_m.md §2).

Encoder (conv_in, ``len(ch_mult)`` levels of ResNet blocks with a right/bottom-padded stride-2
conv after every level but the last, mid block ResNet-Attention-ResNet, GN, swish, conv_out,
1x1 ``quant_conv``) -> look-up-free quantizer (each of the ``z`` latent channels becomes one bit,
``z > 0``; channel 0 is the most significant bit; codes are flattened row-major over (h, w)) ->
decoder (1x1 ``post_quant_conv``, conv_in, mid block, levels from the deepest up with exactly
``num_res_blocks[i]`` ResNets and a nearest x2 upsampling after every level but level 0, GN,
swish, conv_out). Pixels are in [-1, 1]; the decoder output is returned unclamped.

The reference's ``quantize.embedding`` / ``quantize.power_vals`` buffers are not parameters:
they are functions of ``z`` (:func:`lfq_buffers`) and the code <-> bits mapping is computed
directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .config import MagvitV2Config
from .layers import AttnBlock, Conv, Downsample, GroupNorm, ResnetBlock, Upsample, swish


class _Mid(nnx.Module):
    def __init__(self, ch: int, *, groups: int, eps: float, dtype, rngs: nnx.Rngs):
        kw = dict(groups=groups, eps=eps, dtype=dtype)
        self.block_1 = ResnetBlock(ch, ch, shortcut_name="nin_shortcut", rngs=rngs, **kw)
        self.attn_1 = AttnBlock(ch, rngs=rngs, **kw)
        self.block_2 = ResnetBlock(ch, ch, shortcut_name="nin_shortcut", rngs=rngs, **kw)

    def __call__(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nnx.Module):
    """``block``: the ResNet blocks of one resolution; then ``downsample`` / ``upsample`` if any."""

    def __init__(self, cin: int, cout: int, n_blocks: int, resample: str | None, *, groups: int,
                 eps: float, dtype, rngs: nnx.Rngs):
        self.block = nnx.List([
            ResnetBlock(cin if j == 0 else cout, cout, groups=groups, eps=eps,
                        shortcut_name="nin_shortcut", dtype=dtype, rngs=rngs)
            for j in range(n_blocks)])
        self.resample = resample
        if resample == "down":
            self.downsample = Downsample(cout, dtype=dtype, rngs=rngs)
        elif resample == "up":
            self.upsample = Upsample(cout, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        for block in self.block:
            x = block(x)
        if self.resample == "down":
            x = self.downsample(x)
        elif self.resample == "up":
            x = self.upsample(x)
        return x


class Encoder(nnx.Module):
    """Pixels [B, H, W, 3] in [-1, 1] -> latent [B, H/16, W/16, z] (after ``quant_conv``)."""

    def __init__(self, c: MagvitV2Config, *, dtype, rngs: nnx.Rngs):
        kw = dict(groups=c.norm_groups, eps=c.norm_eps, dtype=dtype)
        n = len(c.enc_ch_mult)
        self.conv_in = Conv(c.in_channels, c.enc_ch, 3, dtype=dtype, rngs=rngs)
        widths = [c.enc_ch * m for m in (1,) + c.enc_ch_mult]
        self.down = nnx.List([
            _Level(widths[i], widths[i + 1], c.enc_num_res_blocks[i], "down" if i < n - 1 else None,
                   rngs=rngs, **kw)
            for i in range(n)])
        top = widths[-1]
        self.mid = _Mid(top, rngs=rngs, **kw)
        self.norm_out = GroupNorm(top, c.norm_groups, c.norm_eps, dtype=dtype)
        self.conv_out = Conv(top, c.z_channels, 3, dtype=dtype, rngs=rngs)
        self.quant_conv = Conv(c.z_channels, c.z_channels, 1, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        x = self.mid(x)
        return self.quant_conv(self.conv_out(swish(self.norm_out(x))))


class Decoder(nnx.Module):
    """Quantized latent [B, h, w, z] (+-1) -> pixels [B, 16h, 16w, 3] (unclamped)."""

    def __init__(self, c: MagvitV2Config, *, dtype, rngs: nnx.Rngs):
        kw = dict(groups=c.norm_groups, eps=c.norm_eps, dtype=dtype)
        n = len(c.dec_ch_mult)
        top = c.dec_ch * c.dec_ch_mult[-1]
        self.post_quant_conv = Conv(c.z_channels, c.z_channels, 1, dtype=dtype, rngs=rngs)
        self.conv_in = Conv(c.z_channels, top, 3, dtype=dtype, rngs=rngs)
        self.mid = _Mid(top, rngs=rngs, **kw)
        levels, cin = {}, top
        for i in reversed(range(n)):       # built deepest first; stored as up[i] = level i
            cout = c.dec_ch * c.dec_ch_mult[i]
            levels[i] = _Level(cin, cout, c.dec_num_res_blocks[i], "up" if i > 0 else None,
                               rngs=rngs, **kw)
            cin = cout
        self.up = nnx.List([levels[i] for i in range(n)])
        self.norm_out = GroupNorm(cin, c.norm_groups, c.norm_eps, dtype=dtype)
        self.conv_out = Conv(cin, c.out_channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, z):
        x = self.mid(self.conv_in(self.post_quant_conv(z)))
        for i in reversed(range(len(self.up))):
            x = self.up[i](x)
        return self.conv_out(swish(self.norm_out(x)))


def lfq_buffers(z_channels: int) -> dict[str, np.ndarray]:
    """The reference LFQ buffers: ``embedding[c]`` = the bits of c (MSB first) as +-1 float32
    [2^z, z]; ``power_vals`` = [2^(z-1), ..., 1] int64."""
    powers = 2 ** np.arange(z_channels - 1, -1, -1, dtype=np.int64)
    bits = (np.arange(2 ** z_channels, dtype=np.int64)[:, None] // powers) % 2
    return {"quantize.embedding": (2.0 * bits - 1.0).astype(np.float32), "quantize.power_vals": powers}


class MagvitV2(nnx.Module):
    """The whole tokenizer: ``encode(pixels) -> codes [B, N]``, ``decode(codes, grid)``."""

    def __init__(self, config: MagvitV2Config, *, rngs: nnx.Rngs):
        self.config = config
        dtype = jnp.dtype(config.param_dtype)
        self.encoder = Encoder(config, dtype=dtype, rngs=rngs)
        self.decoder = Decoder(config, dtype=dtype, rngs=rngs)

    def latent(self, pixels: jax.Array) -> jax.Array:
        """Encoder output (after ``quant_conv``), NHWC."""
        return self.encoder(pixels.astype(jnp.float32))

    def latent_to_codes(self, latent: jax.Array) -> jax.Array:
        """Sign bits (``> 0``; exactly 0 is bit 0) -> int32 codes [B, h*w], row-major."""
        z = latent.shape[-1]
        powers = (2 ** jnp.arange(z - 1, -1, -1)).astype(jnp.int32)
        codes = jnp.sum((latent > 0).astype(jnp.int32) * powers, axis=-1)
        return codes.reshape(codes.shape[0], -1)

    def codebook_entry(self, codes: jax.Array, grid: tuple[int, int]) -> jax.Array:
        """Codes [B, h*w] -> the +-1 latent [B, h, w, z] (bit c of the code -> channel c)."""
        z = self.config.z_channels
        shifts = jnp.arange(z - 1, -1, -1, dtype=jnp.int32)
        bits = (codes.astype(jnp.int32)[..., None] >> shifts) & 1
        return (2.0 * bits - 1.0).astype(jnp.float32).reshape(codes.shape[0], grid[0], grid[1], z)

    def encode(self, pixels: jax.Array) -> jax.Array:
        return self.latent_to_codes(self.latent(pixels))

    def decode(self, codes: jax.Array, grid: tuple[int, int]) -> jax.Array:
        return self.decoder(self.codebook_entry(codes, grid))

"""The aMUSEd VQ-GAN of MMaDA-Parallel-A (a diffusers ``VQModel``) in Flax NNX
(spec mmada_a.md §2, golden README §6).

Encoder: conv_in, ``down_blocks`` of ``layers_per_block`` ResNets (blocks 0..n-2 end with a
right/bottom zero-padded stride-2 conv, ``downsamplers.0``), ``mid_block`` of two ResNets (no
attention), GN, SiLU, conv_out; then the top-level 1x1 ``quant_conv``. Quantizer: the index of
the nearest ``quantize.embedding.weight`` row in Euclidean distance (first index on ties), per
latent pixel, flattened row-major over (h, w); grids need not be square. Decoder from codes:
codebook rows -> 1x1 ``post_quant_conv`` -> conv_in -> mid block -> ``up_blocks`` (index 0 is the
DEEPEST level) of ``layers_per_block + 1`` ResNets, blocks 0..n-2 ending with nearest x2 and a
conv (``upsamplers.0``) -> GN, SiLU, conv_out. Pixels are in [0, 1]; the decoder output is
returned unclamped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .config import AmusedVQConfig
from .layers import HIGHEST, Conv, Downsample, GroupNorm, ResnetBlock, Upsample, swish


def _resnets(cin: int, cout: int, n: int, *, c: AmusedVQConfig, dtype, rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([ResnetBlock(cin if j == 0 else cout, cout, groups=c.norm_num_groups, eps=c.norm_eps,
                                 shortcut_name="conv_shortcut", dtype=dtype, rngs=rngs)
                     for j in range(n)])


class _Block(nnx.Module):
    """A diffusers Down/UpEncoderBlock2D or mid block: ``resnets``, then the optional resampler
    (``downsamplers.0`` / ``upsamplers.0``)."""

    def __init__(self, cin: int, cout: int, n: int, resample: str | None, *, c: AmusedVQConfig,
                 dtype, rngs: nnx.Rngs):
        self.resnets = _resnets(cin, cout, n, c=c, dtype=dtype, rngs=rngs)
        self.resample = resample
        if resample == "down":
            self.downsamplers = nnx.List([Downsample(cout, dtype=dtype, rngs=rngs)])
        elif resample == "up":
            self.upsamplers = nnx.List([Upsample(cout, dtype=dtype, rngs=rngs)])

    def __call__(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.resample == "down":
            x = self.downsamplers[0](x)
        elif self.resample == "up":
            x = self.upsamplers[0](x)
        return x


class Encoder(nnx.Module):
    """Pixels [B, H, W, 3] in [0, 1] -> [B, H/16, W/16, latent_channels] (before quant_conv)."""

    def __init__(self, c: AmusedVQConfig, *, dtype, rngs: nnx.Rngs):
        ch = c.block_out_channels
        n = len(ch)
        self.conv_in = Conv(c.in_channels, ch[0], 3, dtype=dtype, rngs=rngs)
        self.down_blocks = nnx.List([
            _Block(ch[max(i - 1, 0)], ch[i], c.layers_per_block, "down" if i < n - 1 else None,
                   c=c, dtype=dtype, rngs=rngs)
            for i in range(n)])
        self.mid_block = _Block(ch[-1], ch[-1], 2, None, c=c, dtype=dtype, rngs=rngs)
        self.conv_norm_out = GroupNorm(ch[-1], c.norm_num_groups, c.norm_eps, dtype=dtype)
        self.conv_out = Conv(ch[-1], c.latent_channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(swish(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    """[B, h, w, latent_channels] (after post_quant_conv) -> pixels [B, 16h, 16w, 3] (unclamped)."""

    def __init__(self, c: AmusedVQConfig, *, dtype, rngs: nnx.Rngs):
        rev = tuple(reversed(c.block_out_channels))
        n = len(rev)
        self.conv_in = Conv(c.latent_channels, rev[0], 3, dtype=dtype, rngs=rngs)
        self.mid_block = _Block(rev[0], rev[0], 2, None, c=c, dtype=dtype, rngs=rngs)
        self.up_blocks = nnx.List([
            _Block(rev[max(i - 1, 0)], rev[i], c.layers_per_block + 1, "up" if i < n - 1 else None,
                   c=c, dtype=dtype, rngs=rngs)
            for i in range(n)])
        self.conv_norm_out = GroupNorm(rev[-1], c.norm_num_groups, c.norm_eps, dtype=dtype)
        self.conv_out = Conv(rev[-1], c.out_channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(swish(self.conv_norm_out(x)))


class _Embedding(nnx.Module):
    """torch ``nn.Embedding`` (uniform +-1/n init, as diffusers' VectorQuantizer)."""

    def __init__(self, n: int, dim: int, *, dtype, rngs: nnx.Rngs):
        self.weight = nnx.Param(jax.random.uniform(rngs.params(), (n, dim), jnp.float32,
                                                   -1.0 / n, 1.0 / n).astype(dtype))


class VectorQuantizer(nnx.Module):
    """Nearest-codebook-row quantizer (``quantize.embedding.weight`` [n, d])."""

    def __init__(self, n: int, dim: int, *, dtype, rngs: nnx.Rngs):
        self.embedding = _Embedding(n, dim, dtype=dtype, rngs=rngs)

    def codes(self, latents: jax.Array) -> jax.Array:
        """[B, h, w, d] -> int32 [B, h*w]: argmin over rows of the Euclidean distance, computed
        as torch ``cdist`` does for large inputs (|x|^2 + |e|^2 - 2 x.e, clamped at 0, sqrt)."""
        b = latents.shape[0]
        x = latents.reshape(-1, latents.shape[-1]).astype(jnp.float32)
        e = self.embedding.weight[...].astype(jnp.float32)
        d2 = (jnp.sum(x * x, axis=-1, keepdims=True) + jnp.sum(e * e, axis=-1)[None, :]
              - 2.0 * jnp.matmul(x, e.T, precision=HIGHEST))
        dist = jnp.sqrt(jnp.maximum(d2, 0.0))
        return jnp.argmin(dist, axis=-1).astype(jnp.int32).reshape(b, -1)

    def lookup(self, codes: jax.Array, grid: tuple[int, int]) -> jax.Array:
        """Codes [B, h*w] -> codebook rows [B, h, w, d]."""
        e = self.embedding.weight[...].astype(jnp.float32)
        return jnp.take(e, codes.astype(jnp.int32), axis=0).reshape(codes.shape[0], grid[0], grid[1], -1)


class AmusedVQ(nnx.Module):
    """The whole tokenizer with the diffusers ``VQModel`` module tree."""

    def __init__(self, config: AmusedVQConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        dtype = jnp.dtype(c.param_dtype)
        self.encoder = Encoder(c, dtype=dtype, rngs=rngs)
        self.quant_conv = Conv(c.latent_channels, c.embed_dim, 1, dtype=dtype, rngs=rngs)
        self.quantize = VectorQuantizer(c.num_vq_embeddings, c.embed_dim, dtype=dtype, rngs=rngs)
        self.post_quant_conv = Conv(c.embed_dim, c.latent_channels, 1, dtype=dtype, rngs=rngs)
        self.decoder = Decoder(c, dtype=dtype, rngs=rngs)

    def latent(self, pixels: jax.Array) -> jax.Array:
        """``VQModel.encode(x).latents``: encoder then quant_conv, NHWC."""
        return self.quant_conv(self.encoder(pixels.astype(jnp.float32)))

    def encode(self, pixels: jax.Array) -> jax.Array:
        return self.quantize.codes(self.latent(pixels))

    def decode(self, codes: jax.Array, grid: tuple[int, int]) -> jax.Array:
        return self.decoder(self.post_quant_conv(self.quantize.lookup(codes, grid)))


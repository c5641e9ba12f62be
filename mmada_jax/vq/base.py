"""The image-tokenizer interface every sampler and the data pipeline depend on.

:class:`VQTokenizer` wraps an NNX tokenizer module (``encode(pixels) -> codes``,
``decode(codes, grid) -> pixels``) in jitted, batched host-level calls:

* ``encode(images [B, H, W, 3]) -> int32 codes [B, N]`` (N = h*w, row-major over the grid);
  ``images`` are floats in the tokenizer's :attr:`pixel_range` or uint8 (scaled the
  reference's way);
* ``decode(codes [B, N], grid=(h, w)) -> float32 images [B, 16h, 16w, 3]``, unclamped, in the
  tokenizer's pixel range; ``grid`` defaults to a square;
* ``grid(height, width)``, ``num_tokens(height, width)``, :attr:`codebook_size`,
  :attr:`downsample`;
* file helpers: ``load_images(paths)`` (the reference preprocessing), ``to_uint8(pixels)``
  (the reference post-processing) and ``save_images(pixels, paths)``.

These are host-level calls (they validate shapes and code ranges on concrete arrays). Inside
another jitted function (a sampler step) call the module directly: ``tokenizer.model.encode(x)``
/ ``tokenizer.model.decode(codes, grid)``.

The two implementations differ only in their pixel conventions (MAGVIT-v2: [-1, 1], squashed to
``image_size``; aMUSEd: [0, 1], sizes floored to multiples of 16). Compilation is cached per
input shape by ``jax.jit``; the module's parameters are passed as an argument, not baked in.

Micro-batching: ``micro_batch = (encode, decode)`` images per pass of the network inside one
jitted call (``lax.map`` over chunks; None = the whole batch at once). On CPU the 512x512
convolutions are memory-bound, so a whole batch is slower per image and needs B times the
memory (bench/vq.py, 2 cores, B=8 in one pass vs one image per pass: aMUSEd decode 8.3 vs
5.6 s/img and 11.4 vs 4.0 GB peak RSS, encode 3.7 vs 2.8 s/img; MAGVIT-v2 within ~10% either way
at 2.5x the memory). The default on the CPU backend is :attr:`cpu_micro_batch` (one image per
pass); elsewhere (GPU/TPU) the whole batch.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import image_io


def in_chunks(fn, x: jax.Array, chunk: int | None) -> jax.Array:
    """``fn(x)`` for a batch ``x``, computed ``chunk`` rows at a time with ``lax.map`` (the batch
    is padded with zeros to a multiple of ``chunk``; the padding is dropped)."""
    b = x.shape[0]
    if chunk is None or chunk >= b:
        return fn(x)
    n = -(-b // chunk)
    if n * chunk > b:
        x = jnp.concatenate([x, jnp.zeros((n * chunk - b,) + x.shape[1:], x.dtype)])
    out = jax.lax.map(fn, x.reshape((n, chunk) + x.shape[1:]))
    return out.reshape((n * chunk,) + out.shape[2:])[:b]


def _encode(graphdef, state, pixels, chunk):
    model = nnx.merge(graphdef, state)
    return in_chunks(model.encode, pixels, chunk)


def _decode(graphdef, state, codes, grid, chunk):
    model = nnx.merge(graphdef, state)
    return in_chunks(lambda c: model.decode(c, grid), codes, chunk)


def _latent(graphdef, state, pixels):
    return nnx.merge(graphdef, state).latent(pixels)


class VQTokenizer:
    """Shared interface; see the module docstring. Subclasses set :attr:`pixel_range` and the
    pixel conversions."""

    pixel_range: tuple[float, float] = (0.0, 1.0)
    cpu_micro_batch: tuple[int | None, int | None] = (1, 1)

    def __init__(self, model: nnx.Module, micro_batch: tuple[int | None, int | None] | str = "auto"):
        self.model = model
        self.config = model.config
        graphdef, self.state = nnx.split(model)
        if micro_batch == "auto":
            micro_batch = self.cpu_micro_batch if jax.default_backend() == "cpu" else (None, None)
        micro_batch = tuple(micro_batch)
        if len(micro_batch) != 2 or any(m is not None and (not isinstance(m, int) or m < 1) for m in micro_batch):
            raise ValueError(f"micro_batch must be (encode, decode) positive ints or None, got {micro_batch!r}")
        self.micro_batch = micro_batch
        # jitted pure functions: (state, pixels, chunk) and (state, codes, grid, chunk)
        self._encode = jax.jit(partial(_encode, graphdef), static_argnums=(2,))
        self._decode = jax.jit(partial(_decode, graphdef), static_argnums=(2, 3))
        self._latent = jax.jit(partial(_latent, graphdef))

    # ------------------------------------------------------------------ sizes
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def downsample(self) -> int:
        return self.config.downsample

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) of an image of ``height x width`` pixels (multiples of
        :attr:`downsample` only)."""
        f = self.downsample
        if height <= 0 or width <= 0 or height % f or width % f:
            raise ValueError(f"{self.kind}: image size {height}x{width} (HxW) is not a positive multiple "
                             f"of the downsampling factor {f}")
        return height // f, width // f

    def num_tokens(self, height: int, width: int) -> int:
        h, w = self.grid(height, width)
        return h * w

    # ------------------------------------------------------------------ model calls
    def encode(self, images) -> jax.Array:
        """Images [B, H, W, 3] (float in :attr:`pixel_range`, or uint8) -> int32 codes [B, N]."""
        if getattr(images, "dtype", None) == np.uint8:
            images = self.from_uint8(np.asarray(images))
        shape = tuple(np.shape(images))
        if len(shape) != 4 or shape[-1] != self.config.in_channels:
            raise ValueError(f"{self.kind}.encode: expected images [B, H, W, {self.config.in_channels}] "
                             f"(NHWC), got shape {list(shape)}")
        self.grid(shape[1], shape[2])
        return self._encode(self.state, jnp.asarray(images, jnp.float32), self.micro_batch[0])

    def decode(self, codes, grid: tuple[int, int] | None = None) -> jax.Array:
        """Codes [B, N] -> float32 images [B, H, W, 3] in :attr:`pixel_range`, unclamped."""
        arr = np.asarray(codes)
        if arr.ndim != 2:
            raise ValueError(f"{self.kind}.decode: expected codes [B, N], got shape {list(arr.shape)}")
        n = arr.shape[1]
        if grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"{self.kind}.decode: {n} codes per image is not a square grid; pass grid=(h, w)")
            grid = (side, side)
        grid = (int(grid[0]), int(grid[1]))
        if grid[0] * grid[1] != n or min(grid) <= 0:
            raise ValueError(f"{self.kind}.decode: grid {grid} does not hold {n} codes per image")
        if arr.size and (arr.min() < 0 or arr.max() >= self.codebook_size):
            raise ValueError(f"{self.kind}.decode: codes must lie in [0, {self.codebook_size}), got "
                             f"min {arr.min()} max {arr.max()}")
        return self._decode(self.state, jnp.asarray(codes, jnp.int32), grid, self.micro_batch[1])

    def latent(self, images) -> jax.Array:
        """The continuous encoder output (NHWC) before quantization, for tests and analysis."""
        if getattr(images, "dtype", None) == np.uint8:
            images = self.from_uint8(np.asarray(images))
        return self._latent(self.state, jnp.asarray(images, jnp.float32))

    # ------------------------------------------------------------------ pixels and files
    def from_uint8(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_uint8(self, pixels) -> np.ndarray:
        """Decoded pixels -> uint8 images, clamped and rounded as the reference does."""
        raise NotImplementedError

    def load_image(self, src, **kw) -> np.ndarray:
        """One file (or PIL image) -> float32 [H, W, 3] pixels, preprocessed as the reference."""
        raise NotImplementedError

    def load_images(self, srcs: Sequence, **kw) -> np.ndarray:
        """Files -> a float32 batch [B, H, W, 3] (all must come out the same size)."""
        return image_io.stack([self.load_image(s, **kw) for s in srcs], [str(s) for s in srcs])

    def save_images(self, pixels, paths: Sequence) -> list:
        """Decoded pixels [B, H, W, 3] -> PNG files."""
        return image_io.save_pngs(self.to_uint8(pixels), paths)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(codebook_size={self.codebook_size}, downsample={self.downsample}, "
                f"pixel_range={self.pixel_range})")


class MagvitV2Tokenizer(VQTokenizer):
    """MAGVIT-v2 (MMaDA / MMaDA-Parallel-M): pixels in [-1, 1]; files squashed to ``image_size``."""

    pixel_range = (-1.0, 1.0)

    def from_uint8(self, images):
        return image_io.magvit_from_uint8(images)

    def to_uint8(self, pixels):
        return image_io.magvit_to_uint8(pixels)

    def load_image(self, src, size: int | None = None, **kw):
        return image_io.magvit_pixels(src, size or self.config.image_size, **kw)


class AmusedTokenizer(VQTokenizer):
    """aMUSEd VQ (MMaDA-Parallel-A): pixels in [0, 1]; any size that is a multiple of 16."""

    pixel_range = (0.0, 1.0)

    def from_uint8(self, images):
        return image_io.amused_from_uint8(images)

    def to_uint8(self, pixels):
        return image_io.amused_to_uint8(pixels)

    def load_image(self, src, size: int | None = None, **kw):
        """``size``: apply the -A input crop to about ``size x size`` first (``rng=`` a
        ``random.Random`` for the reference's random offset, else centred); None keeps the
        image's own size (floored to multiples of 16)."""
        return image_io.amused_pixels(src, self.downsample, size=size, **kw)

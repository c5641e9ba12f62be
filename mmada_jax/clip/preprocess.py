"""CLIP image preprocessing inside the graph: uint8 images -> the normalised pixels of the tower.

What ``CLIPImageProcessor`` does, jitted and batched (every image of a batch has one size; the
shapes are static, so each input size compiles once):

1. resize so the shortest side is ``image_size`` (the long side ``int(image_size * long / short)``,
   as transformers' ``get_resize_output_image_size``), bicubic;
2. center crop ``image_size`` x ``image_size`` (top / left offsets ``(side - image_size) // 2``);
3. divide by 255, subtract the mean and divide by the std per channel.

The resize is ``jax.image.resize(method="bicubic", antialias=True)`` (Keys cubic, a = -0.5, the
kernel widened when downsampling), followed by rounding and clipping to [0, 255] as the uint8
image PIL returns. It is close to, not bit-equal with, PIL's ``Image.resize(BICUBIC)`` that the
reference processor uses (``CLIPImageProcessorPil``; transformers' torchvision backend differs
again): PIL resamples in two passes (rows, then columns) with fixed-point coefficients and rounds
and clips to uint8 between them, while ``jax.image.resize`` does both passes in float32 and is
rounded once. Measured against ``CLIPImageProcessor`` (transformers 5.25, PIL backend): smooth
images differ by at most 1-2 / 255 per pixel (mean ~0.2 / 255); on pure noise single pixels
differ by up to ~20 / 255. An image already at ``image_size`` x ``image_size`` is not resampled
at all, so there both agree exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after resizing the shortest side to ``size`` (transformers' rule)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


@functools.partial(jax.jit, static_argnames=("image_size", "mean", "std"))
def _preprocess(images: jax.Array, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
    n, h, w, c = images.shape
    x = images.astype(jnp.float32)
    nh, nw = resized_shape(h, w, image_size)
    if (nh, nw) != (h, w):
        x = jax.image.resize(x, (n, nh, nw, c), method="bicubic", antialias=True)
        x = jnp.clip(jnp.round(x), 0.0, 255.0)
    top, left = (nh - image_size) // 2, (nw - image_size) // 2
    x = x[:, top:top + image_size, left:left + image_size]
    return (x / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def preprocess(images, image_size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> jax.Array:
    """uint8 [N, H, W, C] -> float32 [N, image_size, image_size, C] normalised pixels (see the
    module docstring). Traceable: can be called inside another jitted function."""
    if images.dtype != np.uint8:
        raise ValueError(f"CLIP preprocessing takes uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != len(mean):
        raise ValueError(f"CLIP preprocessing takes [N, H, W, {len(mean)}] images, got {list(images.shape)}")
    return _preprocess(images, int(image_size), tuple(float(m) for m in mean), tuple(float(s) for s in std))

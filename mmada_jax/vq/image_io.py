"""Image files <-> tokenizer pixels, exactly as each reference prepares and saves them.

* MAGVIT-v2 (MMaDA-Parallel-M, ``image_transform_squash``; spec mmada_m.md §2): RGB, PIL
  bicubic resize to ``size x size`` ignoring the aspect ratio (no crop; skipped when the image
  already has that size, as PIL does), ``x / 255`` then ``(x - 0.5) / 0.5`` in float32 -> [-1, 1].
  Saving: ``uint8(clamp((x + 1) / 2, 0, 1) * 255)`` (truncation, not rounding).
* aMUSEd VQ (MMaDA-Parallel-A, ``VaeImageProcessor(vae_scale_factor=16, do_normalize=False)``;
  spec mmada_a.md §2.2): RGB, ``x / 255`` in [0, 1]; a side that is not a multiple of 16 is
  floored to one with a PIL Lanczos resize (what the processor does). With a target ``size`` the
  -A input crop comes first (``var_center_crop``: the best-matching aspect ratio among
  multiples of 32 with about size^2 pixels, e.g. 640x384 stays 640x384 for size 512).
  Saving: ``uint8(round(clip(x, 0, 1) * 255))``.

Reading is strict: a missing, unreadable, truncated or corrupt file raises :class:`ImageError`
naming the path; so do images above ``max_pixels`` (checked from the header, before decoding)
and images too small for the tokenizer. Modes: RGB as is; L, LA, 1, P, PA, RGBA, CMYK, YCbCr ...
through PIL's ``convert('RGB')`` (alpha is dropped, as the references do); 16-bit integer
images (``I;16*``, and ``I`` holding 16-bit PNG data) are scaled to 8 bits (``round(v / 257)``)
instead of PIL's saturating conversion; float images (``F``) are rejected. EXIF orientation is
not applied (the references do not).
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageError(ValueError):
    """An image that cannot be read, written or used; the message names the file."""


def _name(src) -> str:
    return str(src) if isinstance(src, (str, os.PathLike)) else f"<{type(src).__name__}>"


def open_rgb(src, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file (or take a PIL image) and return it decoded, in RGB (8 bits)."""
    if isinstance(src, Image.Image):
        img, name = src, "<PIL image>"
    else:
        name = _name(src)
        path = Path(src)
        if not path.exists():
            raise ImageError(f"{name}: image file not found")
        if not path.is_file():
            raise ImageError(f"{name}: not a file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not a readable image (unknown or corrupt format)") from None
        except Image.DecompressionBombError as e:
            raise ImageError(f"{name}: image too large ({e})") from None
        except OSError as e:
            raise ImageError(f"{name}: cannot read image: {e}") from None
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"{name}: image of {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}; "
                         f"downscale it first or pass a larger max_pixels")
    if w < 1 or h < 1:
        raise ImageError(f"{name}: empty image ({w}x{h})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # palette-with-transparency notes etc.
            img.load()
            return _to_rgb(img, name)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image: {e}") from None


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.ndim != 2:
            raise ImageError(f"{name}: unsupported {img.mode} image with shape {a.shape}")
        a8 = ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(np.repeat(a8[..., None], 3, axis=-1), mode="RGB")
    if img.mode == "F":
        raise ImageError(f"{name}: floating-point (mode F) images are not supported; save it as 8 or 16 bit")
    return img.convert("RGB")


def _u8(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


# ------------------------------------------------------------------------------- MAGVIT-v2

def magvit_pixels(src, size: int = 512, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``image_transform_squash``: float32 [size, size, 3] in [-1, 1]."""
    img = open_rgb(src, max_pixels=max_pixels)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return magvit_from_uint8(_u8(img))


def magvit_from_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 -> [-1, 1] float32 as ToTensor + Normalize(0.5, 0.5) compute it."""
    x = np.asarray(images).astype(np.float32) / np.float32(255.0)
    return (x - np.float32(0.5)) / np.float32(0.5)


def magvit_to_uint8(pixels) -> np.ndarray:
    """[-1, 1] floats -> uint8 by ``uint8(clamp((x + 1) / 2, 0, 1) * 255)`` (truncation)."""
    x = np.asarray(pixels, dtype=np.float32)
    x = np.clip((x + np.float32(1.0)) / np.float32(2.0), 0.0, 1.0) * np.float32(255.0)
    return x.astype(np.uint8)


# ------------------------------------------------------------------------------- aMUSEd VQ

def crop_sizes(num_patches: int, patch: int = 32, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """The -A candidate crop sizes (width, height) in pixels (``generate_crop_size_list``): walk
    the patch grid from (num_patches x 1) towards (1 x ...), raising the height while
    width * (height + 1) still fits in ``num_patches`` and lowering the width otherwise; keep every
    visited (w, h) whose aspect ratio is at most ``max_ratio``. 256 patches give 49 sizes."""
    out, wp, hp = [], num_patches, 1
    while wp > 0:
        if max(wp, hp) <= max_ratio * min(wp, hp):
            out.append((wp * patch, hp * patch))
        wp, hp = (wp, hp + 1) if (hp + 1) * wp <= num_patches else (wp - 1, hp)
    return out


def amused_crop(img: Image.Image, size: int, rng: "random.Random | None" = None) -> Image.Image:
    """MMaDA-Parallel-A input preprocessing (``preprocess_image``: ``var_center_crop`` over
    :func:`crop_sizes` of ``(size // 32) ** 2`` patches): pick the candidate whose aspect ratio
    best matches the image (ties: the larger size), halve with BOX filtering while both sides are
    at least twice the crop, bicubic-resize to cover it (sides rounded), then crop. The reference
    draws the crop offset (and a 1-element ``random.choice``) from Python's ``random``; pass a
    ``random.Random`` as ``rng`` to draw them the same way, or None for a centred crop."""
    w, h = img.size
    ranked = sorted(((min(cw / w, ch / h) / max(cw / w, ch / h), (cw, ch)) for cw, ch in
                     crop_sizes((size // 32) ** 2)), reverse=True)[:1]
    cw, ch = (rng.choice(ranked) if rng is not None else ranked[0])[1]
    while img.size[0] >= 2 * cw and img.size[1] >= 2 * ch:
        img = img.resize((img.size[0] // 2, img.size[1] // 2), resample=Image.Resampling.BOX)
    scale = max(cw / img.size[0], ch / img.size[1])
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.Resampling.BICUBIC)
    if rng is not None:
        left, top = rng.randint(0, img.size[0] - cw), rng.randint(0, img.size[1] - ch)
    else:
        left, top = (img.size[0] - cw) // 2, (img.size[1] - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def amused_pixels(src, multiple: int = 16, *, size: int | None = None, rng=None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``VaeImageProcessor(vae_scale_factor=16, do_normalize=False)``: float32 [H, W, 3] in [0, 1]
    with H, W floored to multiples of ``multiple`` (Lanczos resize when that changes them).
    With ``size``, first the -A crop to about ``size x size`` pixels (:func:`amused_crop`)."""
    img = open_rgb(src, max_pixels=max_pixels)
    if size is not None:
        if size < 32:
            raise ImageError(f"{_name(src)}: size={size} is below one 32-pixel crop patch")
        img = amused_crop(img, size, rng)
    w, h = img.size
    tw, th = w - w % multiple, h - h % multiple
    if tw == 0 or th == 0:
        raise ImageError(f"{_name(src)}: image of {w}x{h} is smaller than one {multiple}x{multiple} "
                         f"token patch")
    if (tw, th) != (w, h):
        img = img.resize((tw, th), Image.Resampling.LANCZOS)
    return amused_from_uint8(_u8(img))


def amused_from_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 -> [0, 1] float32 (``x / 255``)."""
    return np.asarray(images).astype(np.float32) / np.float32(255.0)


def amused_to_uint8(pixels) -> np.ndarray:
    """[0, 1] floats -> uint8 by ``round(clip(x, 0, 1) * 255)`` (numpy round half to even)."""
    x = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0) * np.float32(255.0)
    return np.round(x).astype(np.uint8)


# ------------------------------------------------------------------------------- writing

def save_png(image: np.ndarray, path) -> Path:
    """Write one uint8 [H, W, 3] image as PNG (parent folders created)."""
    path = Path(path)
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
        raise ImageError(f"{path}: expected a uint8 [H, W, 3] image, got {a.dtype} {list(a.shape)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, mode="RGB").save(path, format="PNG")
    except OSError as e:
        raise ImageError(f"{path}: cannot write image: {e}") from None
    return path


def save_pngs(images: np.ndarray, paths: Sequence) -> list[Path]:
    images = np.asarray(images)
    if len(images) != len(paths):
        raise ImageError(f"{len(images)} images but {len(paths)} paths")
    return [save_png(im, p) for im, p in zip(images, paths)]


def stack(images: Iterable[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
    """Stack equally sized images into a batch; a size mismatch names the offending file."""
    images = list(images)
    if not images:
        raise ImageError("no images given")
    first = images[0].shape
    for i, im in enumerate(images):
        if im.shape != first:
            who = names[i] if names else f"image {i}"
            raise ImageError(f"{who}: size {list(im.shape[:2])} differs from the first image's "
                             f"{list(first[:2])}; a batch needs one size")
    return np.stack(images)

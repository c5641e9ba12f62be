"""Pictures of sampling: the output image with its still-masked tokens greyed out, the text with
its masked slots as underscores, side by side, and denoising trajectories as animated GIFs."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MASK_GLYPH = "_"


def masked_image(pixels_u8: np.ndarray, masked: np.ndarray) -> Image.Image:
    """An RGB image with the token cells where ``masked`` [h, w] is True painted grey."""
    img = pixels_u8.copy()
    h, w = masked.shape
    ch, cw = img.shape[0] // h, img.shape[1] // w
    for r, c in zip(*np.nonzero(masked)):
        img[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = 128
    return Image.fromarray(img)


def text_panel(text: str, width: int, height: int, title: str = "") -> Image.Image:
    """White panel with ``title`` and the wrapped ``text`` (ASCII-safe default font)."""
    panel = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(panel)
    font = ImageFont.load_default()
    chars = max(8, width // 7)
    lines = ([title] if title else []) + textwrap.wrap(text.replace("\n", " "), chars) or [""]
    y = 4
    for line in lines:
        if y > height - 12:
            break
        draw.text((4, y), line.encode("ascii", "replace").decode(), fill="black", font=font)
        y += 12
    return panel


def side_by_side(image: Image.Image, text: str, title: str = "", panel_width: int | None = None) -> Image.Image:
    size = max(image.height, 256)
    if image.height < size:
        image = image.resize((image.width * size // image.height, size), Image.NEAREST)
    panel = text_panel(text, panel_width or size, size, title)
    out = Image.new("RGB", (image.width + panel.width, size), "white")
    out.paste(image, (0, 0))
    out.paste(panel, (image.width, 0))
    return out


def tokens_to_text(ids: Sequence[int], decode_one, mask_id: int) -> str:
    """Text of a partly masked id sequence, masks shown as underscores."""
    return "".join(MASK_GLYPH if int(i) == mask_id else decode_one(int(i)) for i in ids)


def save_gif(frames: Sequence[Image.Image], path: str | Path, duration_ms: int = 250) -> Path:
    path = Path(path)
    frames = list(frames)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def frame_steps(num_steps: int, max_frames: int = 24) -> list[int]:
    """Which steps to draw: about ``max_frames`` evenly spaced, always the last."""
    every = max(1, -(-num_steps // max_frames))
    steps = list(range(0, num_steps, every))
    if steps[-1] != num_steps - 1:
        steps.append(num_steps - 1)
    return steps

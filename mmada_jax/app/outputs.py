"""What sampling writes for a person to look at: per sample a folder with the output PNG, the text,
a JSON record of every setting, and a denoising GIF (the image decoded every few steps with its
still-masked cells grey, beside the text with its masked slots as underscores)."""

from __future__ import annotations

import textwrap
import json
import os
import shutil
import tempfile
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


def tokens_to_text(ids: Sequence[int], pieces: dict[int, str], mask_id: int) -> str:
    """Text of a partly masked id sequence (``pieces``: the text of each id), masks as underscores."""
    return "".join(MASK_GLYPH if int(i) == mask_id else pieces[int(i)] for i in ids)


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


def trajectory_frames(trajectory: np.ndarray, *, tokenizer, vq, tokens, image_positions=None, grid=None,
                      text_positions=None, title: str = "", max_frames: int = 24,
                      final_codes: np.ndarray | None = None) -> list[Image.Image]:
    """Frames of one sample's trajectory [S, L]: the image (codes at ``image_positions``, masked
    cells grey; all frames decoded in one call) beside the text at ``text_positions`` (all pieces
    decoded in one call), at about ``max_frames`` steps, the last one always included. The last
    frame shows ``final_codes`` when given: the sampler's output image, in which the cells its
    last step left masked are filled (so the GIF ends on ``image.png``)."""
    steps = frame_steps(trajectory.shape[0], max_frames)
    pieces = {}
    if text_positions is not None:
        texts = trajectory[steps][:, np.asarray(text_positions)]
        unique = np.unique(texts[texts != tokens.mask_id])
        pieces = dict(zip(unique.tolist(), tokenizer.pieces(unique)))
    if image_positions is not None:
        region = trajectory[steps][:, np.asarray(image_positions)]
        if final_codes is not None:
            region[-1] = np.asarray(final_codes) + tokens.image_offset
        masked = region == tokens.mask_id
        codes = np.where(masked, 0, region - tokens.image_offset).clip(0, tokens.codebook_size - 1)
        pixels = vq.to_uint8(vq.decode(codes, grid=grid))
    frames = []
    for j, s in enumerate(steps):
        text = tokens_to_text(texts[j], pieces, tokens.mask_id) if text_positions is not None else ""
        image = (masked_image(pixels[j], masked[j].reshape(grid)) if image_positions is not None
                 else Image.new("RGB", (256, 256), "white"))
        frames.append(side_by_side(image, text, f"{title} step {s + 1}/{trajectory.shape[0]}"))
    return frames


def prepare_output(out_dir, names: Sequence[str], *, overwrite: bool, bad: Sequence = ()) -> Path:
    """Check the output folder before any work: it is a folder (made if missing), writable, and
    holds nothing from an earlier run unless ``overwrite`` (which replaces same-named samples, each
    only once its new files are complete, and leaves other entries alone). ``bad`` requests are
    listed in ``bad_requests.jsonl``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    earlier = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if earlier and not overwrite:
        clash = [n for n in names if n in earlier]
        raise ValueError(f"--out {out} already holds {len(earlier)} entries of an earlier run "
                         f"({', '.join((clash or earlier)[:5])}{' ...' if len(earlier) > 5 else ''}); choose another "
                         f"--out or pass --overwrite (replaces the samples of the same names)")
    if bad:
        lines = [json.dumps({"error": str(b), "item": b.item}, default=str) for b in bad]
        _replace(out / "bad_requests.jsonl", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return out


def _replace(target: Path, write) -> None:
    """``write(tmp)`` to a temporary path beside ``target``, then swap it in (an existing target is
    removed only after the new one is complete)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        write(tmp)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()


def write_sample(directory: Path, record: dict, text: str, image_u8: np.ndarray | None = None,
                 frames: Sequence[Image.Image] | None = None) -> dict:
    """Write one sample's folder (``text.txt``, ``image.png``, ``trajectory.gif``, ``record.json``)
    and return the record with the text and the written files added. The folder is written beside
    and swapped in when complete."""
    files = {"text": str(directory / "text.txt"), "record": str(directory / "record.json")}
    if image_u8 is not None:
        files["image"] = str(directory / "image.png")
    if frames:
        files["trajectory"] = str(directory / "trajectory.gif")
    record = dict(record, text=text, files=files)

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "text.txt").write_text(text + "\n")
        if image_u8 is not None:
            Image.fromarray(image_u8).save(tmp / "image.png")
        if frames:
            save_gif(frames, tmp / "trajectory.gif")
        (tmp / "record.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    _replace(directory, write)
    return record

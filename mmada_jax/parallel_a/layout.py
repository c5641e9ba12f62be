"""The MMaDA-Parallel-A (Lumina-DiMOO) sequence, described once and used by the prompt builders,
the SFT builder (inside the jitted step), the samplers and the application::

    turn   = BOS <system> S </system> <user> I [image] </user>       (the tokenized prompt turn)
    image  = <boi> row_0 NEWLINE row_1 NEWLINE ... row_{h-1} NEWLINE <eoi>   (rows of codes + offset)
    answer = <answer> <boi> out_rows <eoi> text </answer>

The answer puts the output image grid BEFORE the reasoning text (``text`` is empty for plain image
generation). Spec ``mmada_a.md`` §3.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import TokenIds
from ..sequences import join

#: pixels per VQ code along each side (the aMUSEd VQ-GAN of MMaDA-Parallel-A downsamples by 16)
DOWNSAMPLE = 16


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the segments of a (batch of) -A sequence(s) are: ``prompt_len`` tokens before
    ``<answer>`` (left-padded batches: the padded length), the output ``grid`` (rows, cols) of
    codes, ``text_len`` reasoning slots and ``eoa_len`` closing tokens."""

    prompt_len: int
    grid: tuple[int, int]
    text_len: int
    eoa_len: int = 1

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def image_start(self) -> int:          # the first code (after <answer> <boi>)
        return self.prompt_len + 2

    @property
    def image_end(self) -> int:            # the <eoi> after the last row's NEWLINE
        return self.image_start + self.grid[0] * (self.grid[1] + 1)

    @property
    def text_start(self) -> int:
        return self.image_end + 1

    @property
    def text_end(self) -> int:
        return self.text_start + self.text_len

    @property
    def total(self) -> int:
        return self.text_end + self.eoa_len

    @property
    def answer_len(self) -> int:
        return self.total - self.prompt_len

    def image_positions(self) -> np.ndarray:
        """The ``grid_h * grid_w`` code positions (row-major; NEWLINEs skipped)."""
        rows, cols = self.grid
        return (self.image_start + np.arange(rows)[:, None] * (cols + 1) + np.arange(cols)).reshape(-1).astype(np.int32)

    def text_positions(self) -> np.ndarray:
        return np.arange(self.text_start, self.text_end, dtype=np.int32)

    def generated_text_positions(self) -> np.ndarray:
        """The text slots the sampler decodes (all of them)."""
        return self.text_positions()


def output_grid(height: int, width: int) -> tuple[int, int]:
    """(grid_h, grid_w) of an output image of ``height`` x ``width`` pixels."""
    if height < DOWNSAMPLE or width < DOWNSAMPLE:
        raise ValueError(f"output image {height}x{width} is smaller than one {DOWNSAMPLE}-pixel code")
    return height // DOWNSAMPLE, width // DOWNSAMPLE


def with_row_breaks(ids, grid_w: int, newline: int, xp=np):
    """[..., h * w] -> [..., h * (w + 1)]: NEWLINE after every row of ``grid_w`` (the last one too)."""
    lead, n = ids.shape[:-1], ids.shape[-1]
    rows = ids.reshape(lead + (n // grid_w, grid_w))
    breaks = xp.full(lead + (n // grid_w, 1), newline, rows.dtype)
    return xp.concatenate([rows, breaks], axis=-1).reshape(lead + (-1,))


def image_segment(tokens: TokenIds, image_ids, grid_w: int, xp=np):
    """``<boi> rows-with-NEWLINEs <eoi>`` of image ids [..., h * w] (the reference's
    ``encode_img_with_breaks`` after the VQ encoding)."""
    return join(tokens["boi"], with_row_breaks(image_ids, grid_w, tokens["newline"], xp), tokens["eoi"], xp=xp)


def answer(tokens: TokenIds, image_ids, text, grid_w: int, eoa=None, xp=np):
    """``<answer> <boi> rows <eoi> text </answer>`` (``eoa``: the closing ids, default the table's
    ``</answer>``)."""
    eoa = [tokens["eoa"]] if eoa is None else eoa
    return join(tokens["boa"], image_segment(tokens, image_ids, grid_w, xp), text, np.asarray(eoa, np.int32), xp=xp)


def turn_head(tokens: TokenIds, system_ids, bos: bool = True) -> list:
    """The segments before the instruction: ``BOS <system> S </system> <user>`` (``bos=False``
    when the tokenizer adds none); the turn closes with ``tokens['end_user']``."""
    return [*([tokens.bos_id] if bos else []), tokens["system"], np.asarray(system_ids, np.int32).reshape(-1),
            tokens["end_system"], tokens["user"]]

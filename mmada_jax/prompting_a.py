"""Sequence layout of MMaDA-Parallel-A thinking-aware image editing (TI2TI), id for id as the
reference ``inference.py`` builds it.

Everything is built from token-id lists (a tokenizer's output, or the golden stub's id lists) and
the checkpoint's :class:`~mmada_jax.config.TokenIds` (``dimoo_tokens``: real or small layout), and
returned as numpy int32 arrays. Spec: ``shared/spec/mmada_a.md`` §3; golden:
``shared/golden/prompting_a`` (README section 7).

Layout (``S`` system ids, ``I`` instruction ids, ``T`` reasoning-text budget)::

    P   = BOS <system> S </system> <user> I </user>                 (prompt_ids)
    U   = BOS <system> S </system> <user> <uncondition> </user>      (uncon_text_ids)
    img = <boi> row_0 NEWLINE row_1 NEWLINE ... row_{h-1} NEWLINE <eoi>   (input image, rows of codes+offset)
    cond input          = P[:-1] img P[-1:]      (the input image sits inside the user turn)
    uncond-text prefix  = U[:-1] img U[-1:]
    uncond-image prefix = P                      (no image)
    full = cond input  <boa> <boi> (MASK*gw NEWLINE)*gh <eoi> MASK*T <eoa>

The answer puts the output image grid BEFORE the reasoning text. The unconditional model inputs
are not the prefixes themselves: the sampler copies the current full sequence and overwrites its
first ``len(prefix)`` positions (:func:`overwrite_prefix`), so when the prefixes are shorter than
the cond input the tail of the cond prefix stays visible (as the reference does).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .config import TokenIds

#: the system turn of MMaDA-Parallel-A's editing prompt (``inference.py``, and its training data)
EDIT_SYSTEM_PROMPT = "Generate an image applying the following editing instruction based on the original image."

#: the system turn of Lumina-DiMOO's text-to-image prompt (``prompt_utils.create_prompt_templates``)
T2I_SYSTEM_PROMPT = "Generate an image according to the text prompt."

#: the instruction of the unconditional turn
UNCONDITION = "<uncondition>"


def turn_text(system: str, user: str) -> str:
    """The -A prompt text the reference tokenizes: ``<system>S</system><user>U</user>``."""
    return f"<system>{system}</system><user>{user}</user>"


#: pixels per VQ code along each side (the aMUSEd VQ-GAN of MMaDA-Parallel-A downsamples by 16)
DOWNSAMPLE = 16


@dataclasses.dataclass(frozen=True)
class TI2TIIndices:
    """Positions of the answer in the full sequence (the reference's ``indices`` list order).

    ``code_start``: the BOA position (= length of the cond input); ``image_start`` /
    ``image_end``: the output grid region (newlines included, BOI/EOI excluded); ``text_start`` /
    ``text_end``: the masked reasoning text; ``seq_len`` = grid_h * grid_w image codes;
    ``newline_every`` = grid_w.
    """

    code_start: int
    image_start: int
    image_end: int
    text_start: int
    text_end: int
    seq_len: int
    newline_every: int
    grid_h: int
    grid_w: int

    def as_array(self) -> np.ndarray:
        return np.asarray(dataclasses.astuple(self), np.int32)


@dataclasses.dataclass(frozen=True)
class TI2TIPrompt:
    """All sequences of one editing request (int32 arrays)."""

    prompt_ids: np.ndarray          # P
    uncon_text_ids: np.ndarray      # U
    input_img_token: np.ndarray     # BOI rows-with-newlines EOI
    con_input_list: np.ndarray      # cond input
    uncon_input_text: np.ndarray    # uncond-text prefix
    uncon_input_image: np.ndarray   # uncond-image prefix (= P)
    full_input_ids: np.ndarray      # cond input + masked answer
    indices: TI2TIIndices
    image_position_mapping: np.ndarray  # the grid_h * grid_w code positions of the output image

    @property
    def uncond_text_full_initial(self) -> np.ndarray:
        """The uncond-text model input of the initial sequence."""
        return overwrite_prefix(self.full_input_ids, self.uncon_input_text)

    @property
    def uncond_img_full_initial(self) -> np.ndarray:
        """The uncond-image model input of the initial sequence."""
        return overwrite_prefix(self.full_input_ids, self.uncon_input_image)


def _ids(values: Sequence[int]) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def image_tokens_with_breaks(tokens: TokenIds, codes: np.ndarray) -> np.ndarray:
    """``<boi>`` + every row of ``codes`` [h, w] (as image ids) followed by NEWLINE (the last row
    too) + ``<eoi>``: the reference's ``encode_img_with_breaks`` after the VQ encoding."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"image codes must be a [rows, cols] grid, got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= tokens.codebook_size):
        raise ValueError(f"image codes must lie in [0, {tokens.codebook_size})")
    rows = np.concatenate([codes.astype(np.int64) + tokens.image_offset,
                           np.full((codes.shape[0], 1), tokens["newline"])], axis=1)
    return np.asarray([tokens["boi"], *rows.reshape(-1), tokens["eoi"]], np.int32)


def output_grid(height: int, width: int) -> tuple[int, int]:
    """(grid_h, grid_w) of an output image of ``height`` x ``width`` pixels."""
    if height < DOWNSAMPLE or width < DOWNSAMPLE:
        raise ValueError(f"output image {height}x{width} is smaller than one {DOWNSAMPLE}-pixel code")
    return height // DOWNSAMPLE, width // DOWNSAMPLE


def system_user_prompt(tokens: TokenIds, system_ids: Sequence[int], user_ids: Sequence[int],
                       bos: bool = True) -> np.ndarray:
    """``BOS <system> S </system> <user> user </user>`` (``bos=False`` when the tokenizer adds none)."""
    ids = ([tokens.bos_id] if bos else []) + [tokens["system"], *_ids(system_ids), tokens["end_system"],
                                             tokens["user"], *_ids(user_ids), tokens["end_user"]]
    return np.asarray(ids, np.int32)


def overwrite_prefix(sequence: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """A copy of ``sequence`` [..., L] whose first ``len(prefix)`` positions are ``prefix``."""
    out = np.array(sequence, np.int32, copy=True)
    prefix = np.asarray(prefix, np.int32)
    out[..., :prefix.shape[-1]] = prefix
    return out


def ti2ti_prompt(tokens: TokenIds, system_ids: Sequence[int], instruction_ids: Sequence[int],
                 input_image_codes: np.ndarray, *, grid: tuple[int, int], text_gen_length: int,
                 bos: bool = True) -> TI2TIPrompt:
    """Build the thinking-aware editing sequences from id lists (tags from ``tokens``).

    Args:
      tokens: the checkpoint's token ids (``dimoo_tokens``).
      system_ids, instruction_ids: tokenized system prompt and edit instruction (no special ids).
      input_image_codes: VQ codes of the input image, a [rows, cols] grid (any aspect ratio).
      grid: (grid_h, grid_w) of the output image (:func:`output_grid` from pixels).
      text_gen_length: T, the masked reasoning-text budget.
      bos: whether the tokenizer prepends BOS (the reference's does).
    """
    prompt = system_user_prompt(tokens, system_ids, instruction_ids, bos)
    uncon = system_user_prompt(tokens, system_ids, [tokens["uncondition"]], bos)
    return ti2ti_layout(tokens, prompt, uncon, input_image_codes, grid=grid, text_gen_length=text_gen_length)


def ti2ti_layout(tokens: TokenIds, prompt_ids: Sequence[int], uncon_text_ids: Sequence[int],
                 input_image_codes: np.ndarray, *, grid: tuple[int, int], text_gen_length: int,
                 eoa_ids: Sequence[int] | None = None) -> TI2TIPrompt:
    """The editing sequences from the tokenized turns, as ``inference.py`` builds them:
    ``prompt_ids`` = ``tokenizer("<system>S</system><user>I</user>")``, ``uncon_text_ids`` = the
    same with ``<uncondition>`` as the instruction, ``eoa_ids`` =
    ``tokenizer("</answer>", add_special_tokens=False)`` (default: the table's ``</answer>``)."""
    if text_gen_length < 1:
        raise ValueError(f"need a non-empty text budget, got T {text_gen_length}")
    grid_rows = masked_grid(tokens, grid)
    prompt, uncon = _turn(prompt_ids), _turn(uncon_text_ids)
    image = image_tokens_with_breaks(tokens, input_image_codes)
    con_input, uncon_text = with_image(prompt, image), with_image(uncon, image)
    eoa = [tokens["eoa"]] if eoa_ids is None else _ids(eoa_ids)
    answer = np.asarray([tokens["boa"], tokens["boi"], *grid_rows, tokens["eoi"],
                         *([tokens.mask_id] * text_gen_length), *eoa], np.int32)
    full = np.concatenate([con_input, answer]).astype(np.int32)
    grid_h, grid_w = (int(g) for g in grid)
    code_start = len(con_input)
    image_start = code_start + 2
    image_end = image_start + len(grid_rows)
    text_start = image_end + 1
    indices = TI2TIIndices(code_start, image_start, image_end, text_start, text_start + text_gen_length,
                           grid_h * grid_w, grid_w, grid_h, grid_w)
    return TI2TIPrompt(prompt_ids=prompt, uncon_text_ids=uncon, input_img_token=image, con_input_list=con_input,
                       uncon_input_text=uncon_text, uncon_input_image=prompt.copy(), full_input_ids=full,
                       indices=indices,
                       image_position_mapping=image_positions(full, image_start, image_end, tokens["newline"]))


def masked_grid(tokens: TokenIds, grid: tuple[int, int]) -> np.ndarray:
    """The masked output image region: ``grid_h`` rows of ``grid_w`` MASK tokens, each followed by
    NEWLINE (flat, int32)."""
    grid_h, grid_w = (int(g) for g in grid)
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"need a non-empty output grid, got {grid}")
    rows = np.concatenate([np.full((grid_h, grid_w), tokens.mask_id), np.full((grid_h, 1), tokens["newline"])], axis=1)
    return rows.reshape(-1).astype(np.int32)


def with_image(turn: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A tokenized user turn with the image tokens before its last token (``</user>``):
    ``turn[:-1] + image + turn[-1:]``."""
    return np.concatenate([turn[:-1], image, turn[-1:]]).astype(np.int32)


def _turn(ids: Sequence[int]) -> np.ndarray:
    turn = np.asarray(_ids(ids), np.int32)
    if len(turn) < 2:
        raise ValueError(f"a tokenized prompt needs at least two tokens (the image goes before the last one, "
                         f"</user>), got {turn.tolist()}")
    return turn


def image_positions(sequence: np.ndarray, image_start: int, image_end: int, newline_id: int) -> np.ndarray:
    """Positions in ``[image_start, image_end)`` of ``sequence`` [L] that are not NEWLINE (row-major)."""
    region = np.asarray(sequence)[image_start:image_end]
    return (image_start + np.flatnonzero(region != newline_id)).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class ImagePrompt:
    """An image-generation request (T2I / I2I, no reasoning text): the conditional sequence and
    the unconditional ones, each ending with the same masked answer of ``answer_len`` tokens, and
    the code positions inside that answer (row-major)."""

    cond: np.ndarray
    unconds: tuple[np.ndarray, ...]
    answer_len: int
    image_positions: np.ndarray
    grid: tuple[int, int]


def image_prompt(tokens: TokenIds, prompt_ids: Sequence[int], uncon_text_ids: Sequence[int], *,
                 grid: tuple[int, int], input_image_codes: np.ndarray | None = None) -> ImagePrompt:
    """Lumina-DiMOO's generation sequences (``P`` = ``tokenizer("<system>S</system><user>I</user>")``,
    ``U`` the same with ``<uncondition>``, ``A`` = ``<answer> <boi> MASK-grid <eoi> </answer>``):

    * text-to-image: cond ``P A``, one uncond ``U A``;
    * image-to-image (``input_image_codes``): cond ``P[:-1] img P[-1:] A``, unconds
      ``U[:-1] img U[-1:] A`` (no instruction) and ``P A`` (no image).
    """
    rows = masked_grid(tokens, grid)
    prompt, uncon = _turn(prompt_ids), _turn(uncon_text_ids)
    answer = np.asarray([tokens["boa"], tokens["boi"], *rows, tokens["eoi"], tokens["eoa"]], np.int32)
    positions = image_positions(answer, 2, 2 + len(rows), tokens["newline"])
    grid = tuple(int(g) for g in grid)
    join = lambda *parts: np.concatenate([*parts, answer]).astype(np.int32)
    if input_image_codes is None:
        return ImagePrompt(join(prompt), (join(uncon),), len(answer), positions, grid)
    image = image_tokens_with_breaks(tokens, input_image_codes)
    return ImagePrompt(join(with_image(prompt, image)), (join(with_image(uncon, image)), join(prompt)),
                       len(answer), positions, grid)

"""MMaDA-Parallel-A / Lumina-DiMOO inputs from token ids, id for id as the reference builds them
(layout: :mod:`mmada_jax.parallel_a.layout`; golden: ``shared/golden/prompting_a``).

Thinking-aware editing (``inference.py``), with ``P`` = the tokenized prompt turn and ``U`` the
same turn with ``<uncondition>`` as the instruction::

    cond input          = P[:-1] img P[-1:]      (the input image sits inside the user turn)
    uncond-text prefix  = U[:-1] img U[-1:]
    uncond-image prefix = P                      (no image)
    full = cond input  answer(MASK grid, MASK*T)

The unconditional model inputs are not the prefixes themselves: the sampler copies the current
full sequence and overwrites its first ``len(prefix)`` positions, so when a prefix is shorter than
the cond input the tail of the cond input stays visible (as the reference does).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..config import TokenIds
from ..sequences import join
from .layout import Layout, answer, image_segment, turn_head

#: the system turn of MMaDA-Parallel-A's editing prompt (``inference.py``, and its training data)
EDIT_SYSTEM_PROMPT = "Generate an image applying the following editing instruction based on the original image."

#: the system turn of Lumina-DiMOO's text-to-image prompt (``prompt_utils.create_prompt_templates``)
T2I_SYSTEM_PROMPT = "Generate an image according to the text prompt."

#: the instruction of the unconditional turn
UNCONDITION = "<uncondition>"


def turn_text(system: str, user: str) -> str:
    """The -A prompt text the reference tokenizes: ``<system>S</system><user>U</user>``."""
    return f"<system>{system}</system><user>{user}</user>"


@dataclasses.dataclass(frozen=True)
class EditPrompt:
    """All sequences of one editing request (int32 arrays; the reference's names) and its layout."""

    prompt_ids: np.ndarray          # P
    uncon_text_ids: np.ndarray      # U
    input_img_token: np.ndarray     # BOI rows-with-newlines EOI
    con_input_list: np.ndarray      # cond input
    uncon_input_text: np.ndarray    # uncond-text prefix
    uncon_input_image: np.ndarray   # uncond-image prefix (= P)
    full_input_ids: np.ndarray      # cond input + masked answer
    layout: Layout

    @property
    def image_position_mapping(self) -> np.ndarray:
        return self.layout.image_positions()

    @property
    def uncond_text_full_initial(self) -> np.ndarray:
        """The uncond-text model input of the initial sequence."""
        return overwrite_prefix(self.full_input_ids, self.uncon_input_text)

    @property
    def uncond_img_full_initial(self) -> np.ndarray:
        """The uncond-image model input of the initial sequence."""
        return overwrite_prefix(self.full_input_ids, self.uncon_input_image)


def image_ids(tokens: TokenIds, codes: np.ndarray) -> np.ndarray:
    """The image ids of a [rows, cols] grid of VQ codes (checked to lie in the codebook)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"image codes must be a [rows, cols] grid, got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= tokens.codebook_size):
        raise ValueError(f"image codes must lie in [0, {tokens.codebook_size})")
    return codes.astype(np.int64) + tokens.image_offset


def input_image(tokens: TokenIds, codes: np.ndarray) -> np.ndarray:
    """``<boi>`` + every row of ``codes`` [h, w] (as image ids) followed by NEWLINE + ``<eoi>``."""
    ids = image_ids(tokens, codes)
    return image_segment(tokens, ids.reshape(-1), ids.shape[1])


def system_user_prompt(tokens: TokenIds, system_ids: Sequence[int], user_ids: Sequence[int],
                       bos: bool = True) -> np.ndarray:
    """``BOS <system> S </system> <user> user </user>`` from the token table."""
    return join(*turn_head(tokens, system_ids, bos), np.asarray(user_ids, np.int32).reshape(-1), tokens["end_user"])


def overwrite_prefix(sequence: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """A copy of ``sequence`` [..., L] whose first ``len(prefix)`` positions are ``prefix``."""
    out = np.array(sequence, np.int32, copy=True)
    prefix = np.asarray(prefix, np.int32)
    out[..., :prefix.shape[-1]] = prefix
    return out


def with_image(turn: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A tokenized user turn with the image segment before its last token (``</user>``)."""
    return join(turn[:-1], image, turn[-1:])


def _turn(ids: Sequence[int]) -> np.ndarray:
    turn = np.asarray(ids, np.int32).reshape(-1)
    if len(turn) < 2:
        raise ValueError(f"a tokenized prompt needs at least two tokens (the image goes before the last one, "
                         f"</user>), got {turn.tolist()}")
    return turn


def masked_answer(tokens: TokenIds, grid: tuple[int, int], text_len: int, eoa=None) -> np.ndarray:
    """The answer the samplers start from: MASK codes in the grid, ``text_len`` MASK text slots."""
    rows, cols = (int(g) for g in grid)
    if rows < 1 or cols < 1:
        raise ValueError(f"need a non-empty output grid, got {grid}")
    return answer(tokens, np.full(rows * cols, tokens.mask_id, np.int32), np.full(text_len, tokens.mask_id, np.int32),
                  cols, eoa)


def edit_prompt_from_ids(tokens: TokenIds, system_ids: Sequence[int], instruction_ids: Sequence[int],
                         input_image_codes: np.ndarray, *, grid: tuple[int, int], text_len: int,
                         bos: bool = True) -> EditPrompt:
    """:func:`edit_prompt` with the turns built from id lists and the token table's tags."""
    prompt = system_user_prompt(tokens, system_ids, instruction_ids, bos)
    uncon = system_user_prompt(tokens, system_ids, [tokens["uncondition"]], bos)
    return edit_prompt(tokens, prompt, uncon, input_image_codes, grid=grid, text_len=text_len)


def edit_prompt(tokens: TokenIds, prompt_ids: Sequence[int], uncon_text_ids: Sequence[int],
                input_image_codes: np.ndarray, *, grid: tuple[int, int], text_len: int,
                eoa_ids: Sequence[int] | None = None) -> EditPrompt:
    """The editing sequences from the tokenized turns, as ``inference.py`` builds them:
    ``prompt_ids`` = ``tokenizer("<system>S</system><user>I</user>")``, ``uncon_text_ids`` = the
    same with ``<uncondition>`` as the instruction, ``eoa_ids`` =
    ``tokenizer("</answer>", add_special_tokens=False)`` (default: the table's ``</answer>``)."""
    if text_len < 1:
        raise ValueError(f"need a non-empty text budget, got T {text_len}")
    prompt, uncon = _turn(prompt_ids), _turn(uncon_text_ids)
    image = input_image(tokens, input_image_codes)
    con_input, uncon_text = with_image(prompt, image), with_image(uncon, image)
    eoa = None if eoa_ids is None else np.asarray(eoa_ids, np.int32).reshape(-1)
    full = join(con_input, masked_answer(tokens, grid, text_len, eoa))
    layout = Layout(len(con_input), tuple(int(g) for g in grid), text_len, 1 if eoa is None else len(eoa))
    return EditPrompt(prompt_ids=prompt, uncon_text_ids=uncon, input_img_token=image, con_input_list=con_input,
                      uncon_input_text=uncon_text, uncon_input_image=prompt.copy(), full_input_ids=full,
                      layout=layout)


@dataclasses.dataclass(frozen=True)
class ImagePrompt:
    """An image-generation request (T2I / I2I, no reasoning text): the conditional sequence and
    the unconditional ones, each ending with the same masked answer (``answer``: its layout,
    positions counted from the answer's start)."""

    cond: np.ndarray
    unconds: tuple[np.ndarray, ...]
    answer: Layout


def image_prompt(tokens: TokenIds, prompt_ids: Sequence[int], uncon_text_ids: Sequence[int], *,
                 grid: tuple[int, int], input_image_codes: np.ndarray | None = None) -> ImagePrompt:
    """Lumina-DiMOO's generation sequences (``P``, ``U`` as for editing, ``A`` = the masked answer
    with no text):

    * text-to-image: cond ``P A``, one uncond ``U A``;
    * image-to-image (``input_image_codes``): cond ``P[:-1] img P[-1:] A``, unconds
      ``U[:-1] img U[-1:] A`` (no instruction) and ``P A`` (no image).
    """
    ans = masked_answer(tokens, grid, 0)
    prompt, uncon = _turn(prompt_ids), _turn(uncon_text_ids)
    layout = Layout(0, tuple(int(g) for g in grid), 0)
    if input_image_codes is None:
        return ImagePrompt(join(prompt, ans), (join(uncon, ans),), layout)
    image = input_image(tokens, input_image_codes)
    return ImagePrompt(join(with_image(prompt, image), ans), (join(with_image(uncon, image), ans), join(prompt, ans)),
                       layout)

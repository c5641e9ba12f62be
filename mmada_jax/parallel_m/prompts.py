"""MMaDA-Parallel-M inference inputs from token ids, as the reference ``inference.py`` builds them
(layout: :mod:`mmada_jax.parallel_m.layout`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import TokenIds
from ..mmada.prompts import with_bos
from .layout import input_part


def inference_prompt(tokens: TokenIds, image_codes: np.ndarray, instruction: Sequence[int], pad_to: int = 0):
    """The editing input: (cond [Lc], uncond [Lc]).

    ``image_codes`` are raw VQ codes (0..K-1) of the input image; the instruction gets BOS/EOS
    and, by default, no padding (the reference ``inference.py``). ``pad_to`` = L EOS-pads it to
    L tokens, the instruction slot of parallel SFT (``Layout.for_training``): a model trained
    only on padded inputs then sees the positions it was trained on. The unconditional row has
    literal id 0 at every image slot and ``BOS EOS`` text, EOS-padded to the conditional length.
    """
    codes = np.asarray(image_codes).reshape(-1)
    text = with_bos(tokens, instruction) + [tokens.eos_id]
    if pad_to and len(text) > pad_to:
        raise ValueError(f"instruction of {len(text)} tokens (BOS and EOS included) exceeds pad_to={pad_to}")
    text += [tokens.eos_id] * max(0, pad_to - len(text))
    cond = input_part(tokens, codes + tokens.image_offset, text)
    null_text = [tokens.bos_id] + [tokens.eos_id] * (len(cond) - 4 - len(codes))
    return cond, input_part(tokens, np.zeros_like(codes), null_text)

"""MMaDA-Parallel-M inference inputs from token ids, as the reference ``inference.py`` builds them
(layout: :mod:`mmada_jax.parallel_m.layout`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import TokenIds
from ..mmada.prompts import with_bos
from .layout import input_part


def inference_prompt(tokens: TokenIds, image_codes: np.ndarray, instruction: Sequence[int]):
    """The editing input: (cond [Lc], uncond [Lc]).

    ``image_codes`` are raw VQ codes (0..K-1) of the input image; the instruction gets BOS/EOS
    (no padding). The unconditional row has literal id 0 at every image slot and ``BOS EOS`` text,
    EOS-padded to the conditional length.
    """
    codes = np.asarray(image_codes).reshape(-1)
    cond = input_part(tokens, codes + tokens.image_offset, with_bos(tokens, instruction) + [tokens.eos_id])
    null_text = [tokens.bos_id] + [tokens.eos_id] * (len(cond) - 4 - len(codes))
    return cond, input_part(tokens, np.zeros_like(codes), null_text)

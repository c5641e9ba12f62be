"""Base MMaDA's sequences (``UniversalPrompting``), described once and used by the prompt builders,
the samplers and the application (spec ``mmada_m.md`` §3.2)::

    t2i   [iPAD]*p <|t2i|> BOS text EOS <|soi|> image*N <|eoi|>     (the text part left-padded to M+1)
    mmu   <|mmu|> <|soi|> image*N <|eoi|> BOS text EOS EOS...      (right-padded with EOS to M)
    lm    BOS text EOS EOS...                                       (right-padded with EOS)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import TokenIds
from ..sequences import join


@dataclasses.dataclass(frozen=True)
class T2ILayout:
    """A text-to-image sequence: a text part of ``max_text_len + 1`` tokens (the reference's
    ``max_text_len`` counts the task token separately), then ``<|soi|>``, N image tokens, ``<|eoi|>``."""

    max_text_len: int
    num_image_tokens: int

    @property
    def prefix_len(self) -> int:
        return self.max_text_len + 1

    @property
    def image_start(self) -> int:
        return self.prefix_len + 1

    @property
    def image_end(self) -> int:
        return self.image_start + self.num_image_tokens

    @property
    def total(self) -> int:
        return self.image_end + 1

    def image_positions(self) -> np.ndarray:
        return np.arange(self.image_start, self.image_end, dtype=np.int32)

    def text_positions(self) -> np.ndarray:        # no text response (RL estimators read this)
        return np.zeros(0, np.int32)

    generated_text_positions = text_positions


def image_part(tokens: TokenIds, image_ids, xp=np):
    """``<|soi|> image <|eoi|>``."""
    return join(tokens["soi"], image_ids, tokens["eoi"], xp=xp)


def mmu_head(tokens: TokenIds, image_ids, xp=np):
    """The image part of an understanding sequence: ``<|mmu|> <|soi|> image <|eoi|>``."""
    return join(tokens["mmu"], image_part(tokens, image_ids, xp), xp=xp)

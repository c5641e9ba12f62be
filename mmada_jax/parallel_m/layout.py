"""The MMaDA-Parallel-M sequence, described once and used by the prompt builder, the SFT builder
(inside the jitted step), the sampler and the application::

    input  = <|interleave|> <|soi|> in_image <|eoi|> BOS instruction EOS [EOS ...]
    output = <|soi|> out_image(N) <|eoi|> BOS reasoning [EOS ...]            (text budget L, BOS included)

At inference the output starts as ``<|soi|> MASK*N <|eoi|> BOS MASK*(L-1)`` and the null input
(classifier-free guidance) is ``<|interleave|> <|soi|> 0*N <|eoi|> BOS EOS [EOS ...]`` (literal
id 0 in the image slots, as the reference). Spec ``mmada_m.md`` §3.2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import TokenIds
from ..sequences import join


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the segments of a (batch of) -M sequence(s) are: ``input_len`` tokens of input
    (left-padded batches: the padded length), then the output image of ``num_image_tokens`` codes
    and the reasoning text of ``text_len`` slots."""

    input_len: int
    num_image_tokens: int
    text_len: int

    @property
    def image_start(self) -> int:
        return self.input_len + 1

    @property
    def image_end(self) -> int:
        return self.image_start + self.num_image_tokens

    @property
    def text_start(self) -> int:
        return self.image_end + 1

    @property
    def total(self) -> int:
        return self.text_start + self.text_len

    @property
    def output_len(self) -> int:
        return self.total - self.input_len

    def image_positions(self) -> np.ndarray:
        return np.arange(self.image_start, self.image_end, dtype=np.int32)

    def text_positions(self) -> np.ndarray:
        return np.arange(self.text_start, self.total, dtype=np.int32)

    def generated_text_positions(self) -> np.ndarray:
        """The text slots the sampler decodes (all but the leading BOS)."""
        return self.text_positions()[1:]

    @classmethod
    def for_training(cls, input_image_tokens: int, num_image_tokens: int, text_len: int,
                     instruction_len: int | None = None) -> "Layout":
        """The SFT layout: the instruction budget is the output's (``text_len``, the reference's) or
        ``instruction_len``."""
        return cls(3 + input_image_tokens + (instruction_len or text_len), num_image_tokens, text_len)


def input_part(tokens: TokenIds, image, text, xp=np):
    """``<|interleave|> <|soi|> image <|eoi|> text`` (image: image ids; text: ``BOS ... EOS``)."""
    return join(tokens["interleave"], tokens["soi"], image, tokens["eoi"], text, xp=xp)


def output_part(tokens: TokenIds, image, text, xp=np):
    """``<|soi|> image <|eoi|> text``."""
    return join(tokens["soi"], image, tokens["eoi"], text, xp=xp)


def output_init(tokens: TokenIds, layout: Layout) -> np.ndarray:
    """The output the sampler starts from: ``<|soi|> MASK*N <|eoi|> BOS MASK*(L-1)``."""
    masks = lambda n: np.full(n, tokens.mask_id, np.int32)
    return output_part(tokens, masks(layout.num_image_tokens), join(tokens.bos_id, masks(layout.text_len - 1)))

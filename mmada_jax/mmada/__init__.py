"""Base MMaDA (and LLaDA): text-to-image, multimodal understanding and text generation.

* :mod:`.layout` - the t2i / mmu / lm sequences, written once;
* :mod:`.prompts` - the reference's ``UniversalPrompting`` from token ids;
* :mod:`.t2i` - MaskGIT text-to-image (``generate_t2i``, ``T2ISettings``);
* :mod:`.text` - LLaDA semi-autoregressive text and MMU decoding (``generate_text``, ``TextSettings``);
* :mod:`.losses` - the pretraining losses.
"""

from .layout import T2ILayout
from .t2i import T2ISettings, generate_t2i
from .text import TextSettings, generate_text

__all__ = ["T2ILayout", "T2ISettings", "TextSettings", "generate_t2i", "generate_text"]

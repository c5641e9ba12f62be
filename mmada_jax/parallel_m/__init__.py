"""MMaDA-Parallel-M: the MMaDA-8B architecture and MAGVIT-v2 codes, reasoning text and edited
image in one interleaved sequence.

* :mod:`.layout` - the sequence (``Layout``), written once;
* :mod:`.prompts` - inference inputs from token ids;
* :mod:`.sampler` - the joint sampler (``generate``, ``Settings``);
* :mod:`.sft` - parallel SFT (inputs built in the jitted step, loss).
"""

from .layout import Layout
from .prompts import inference_prompt
from .sampler import Settings, generate

__all__ = ["Layout", "Settings", "generate", "inference_prompt"]

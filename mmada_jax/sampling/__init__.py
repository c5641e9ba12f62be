"""Masked-diffusion samplers, each one jitted ``lax.scan`` over its denoising steps.

* :func:`llada_generate` - LLaDA block semi-autoregressive text generation (text and MMU).
* :func:`t2i_generate` - MaskGIT text-to-image.
* :func:`parallel_generate` - MMaDA-Parallel-M joint text + image generation.
* :func:`generate_ti2ti` - MMaDA-Parallel-A (Lumina-DiMOO) joint text + image generation.
* :func:`generate_image` - Lumina-DiMOO text-to-image / image-to-image (MMaDA-Parallel-A).
"""

from .common import Randomness, as_randomness
from .dimoo_image import generate_image
from .llada import llada_generate
from .maskgit import t2i_generate
from .parallel import parallel_generate
from .runner import SamplerOutput
from .ti2ti import generate_ti2ti

__all__ = ["Randomness", "SamplerOutput", "as_randomness", "generate_image", "generate_ti2ti", "llada_generate", "parallel_generate",
           "t2i_generate"]

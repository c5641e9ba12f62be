"""Image tokenizers: MAGVIT-v2 (MMaDA, MMaDA-Parallel-M) and the aMUSEd VQ (MMaDA-Parallel-A).

``load_vq(path)`` returns a :class:`VQTokenizer` (jitted, batched ``encode`` / ``decode``, token
grid helpers, reference image pre/post-processing); ``init_vq(config)`` builds one with random
weights. Importing this package registers the ``magvitv2`` and ``amused`` conversion kinds and
the ``vq:`` config section.
"""

from .base import AmusedTokenizer, MagvitV2Tokenizer, VQTokenizer
from .checkpoint import abstract_model, build_model, init_vq, load_vq, num_params, save_vq
from .config import AMUSED_REAL, MAGVITV2_REAL, AmusedVQConfig, MagvitV2Config
from .image_io import ImageError

__all__ = [
    "AMUSED_REAL", "AmusedTokenizer", "AmusedVQConfig", "ImageError", "MAGVITV2_REAL",
    "MagvitV2Config", "MagvitV2Tokenizer", "VQTokenizer", "abstract_model", "build_model",
    "init_vq", "load_vq", "num_params", "save_vq",
]

"""Image tokenizers: MAGVIT-v2 (MMaDA, MMaDA-Parallel-M) and the aMUSEd VQ (MMaDA-Parallel-A).

``load_vq(path)`` returns a :class:`VQTokenizer` (jitted, batched ``encode`` / ``decode``, token
grid helpers, reference image pre/post-processing); ``init_vq(config)`` builds one with random
weights. Their conversion kinds (``magvitv2``, ``amused``) are defined in :mod:`.checkpoint` and
listed in :data:`mmada_jax.convert.KINDS`; ``load_vq`` / ``save_vq`` are
:mod:`mmada_jax.checkpoints`'s (the one loader), re-exported here.
"""

from .base import AmusedTokenizer, MagvitV2Tokenizer, VQTokenizer
from .checkpoint import abstract_model, build_model, init_vq, num_params
from .config import AMUSED_REAL, MAGVITV2_REAL, AmusedVQConfig, MagvitV2Config
from .image_io import ImageError

__all__ = [
    "AMUSED_REAL", "AmusedTokenizer", "AmusedVQConfig", "ImageError", "MAGVITV2_REAL",
    "MagvitV2Config", "MagvitV2Tokenizer", "VQTokenizer", "abstract_model", "build_model",
    "init_vq", "load_vq", "num_params", "save_vq",
]


def __getattr__(name: str):
    # mmada_jax.checkpoints imports this package (through mmada_jax.convert's table of kinds), so
    # its loaders are looked up on first use rather than imported at the top.
    if name in ("load_vq", "save_vq"):
        from .. import checkpoints
        return getattr(checkpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

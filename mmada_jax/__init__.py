"""mmada-jax: MMaDA and MMaDA-Parallel (masked-diffusion multimodal transformers) in JAX / Flax NNX."""

from .config import ConfigError, ModelConfig, TokenIds, load_config
from .hf_io import CheckpointError
from .loading import load_model, save_model
from .model import LLaDAModel, abstract_model, init_model
from .sharding import LOGICAL_AXIS_RULES, make_mesh, shard_model

__all__ = [
    "CheckpointError", "ConfigError", "LLaDAModel", "LOGICAL_AXIS_RULES", "ModelConfig", "TokenIds",
    "abstract_model", "init_model", "load_config", "load_model", "make_mesh", "save_model",
    "shard_model",
]

# image tokenizers (MAGVIT-v2, aMUSEd VQ); importing them registers their conversion kinds
from .vq import VQTokenizer, init_vq, load_vq  # noqa: E402
__all__ += ["VQTokenizer", "init_vq", "load_vq"]

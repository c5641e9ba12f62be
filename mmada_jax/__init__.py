"""mmada-jax: MMaDA and MMaDA-Parallel (masked-diffusion multimodal transformers) in JAX / Flax NNX."""

from .config import ConfigError, ModelConfig, TokenIds, load_config
from .hf_io import CheckpointError
from .checkpoints import Checkpoint, load_model, load_vq, open_checkpoint, save_model
from .model import LLaDAModel, abstract_model, init_model
from .sharding import LOGICAL_AXIS_RULES, make_mesh, shard_model
from .vq import VQTokenizer, init_vq, save_vq

__all__ = [
    "Checkpoint", "CheckpointError", "ConfigError", "LLaDAModel", "LOGICAL_AXIS_RULES", "ModelConfig",
    "TokenIds", "VQTokenizer", "abstract_model", "init_model", "init_vq", "load_config", "load_model",
    "load_vq", "make_mesh", "open_checkpoint", "save_model", "save_vq", "shard_model",
]

"""Supervised fine-tuning (parallel masked-diffusion SFT) on meshes: config, train step,
checkpoints, the loop, and the AOT memory plan."""

from .config import TrainConfig

__all__ = ["TrainConfig"]

"""Typed SFT configuration: one YAML file (``configs/*_sft.yaml``) plus ``key=value`` overrides.

Defaults are MMaDA-Parallel-M's (spec mmada_m.md §5.3): AdamW lr 5e-5, betas (0.9, 0.999), eps
1e-8, weight decay 0.01 on every parameter, linear warmup then cosine decay to ``min_lr_scale`` of
the peak, global-norm clipping at 1.0, condition dropout 0.1, ``min_masking_rate`` 1e-3.
``configs/mmada_parallel_a_sft.yaml`` holds -A's (mmada_a.md §5.4).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, check_keys


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a parallel-SFT run needs. Paths are relative to the working directory."""

    # model and data
    checkpoint: str = "tests/golden/mmada_tiny"    # converted or HF checkpoint to fine-tune
    model_config: str | None = None                # or a YAML model config: train from random init
    data_dir: str | None = None                    # pretokenized data (python -m train.pretokenize)
    synthetic: int = 0                             # >0: generate and pretokenize this many examples
    vq: str = "tests/golden/magvitv2_tiny"         # image tokenizer, for synthetic data
    synthetic_image_size: int = 64                 # side of the synthetic images in pixels
    tokenizer: str = "tests/fixtures/tiny_tokenizer"
    text_len: int = 32                             # L_t: instruction and reasoning budgets
    # optimisation
    batch_size: int = 8                            # global batch per optimizer step
    grad_accum: int = 1                            # micro-batches per step (batch_size / grad_accum each)
    steps: int = 100
    lr: float = 5e-5
    warmup_steps: int = 10
    min_lr_scale: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    text_coeff: float = 1.0
    image_coeff: float = 1.0
    min_masking_rate: float = 1e-3
    cond_dropout_prob: float = 0.1
    objective: str = "auto"                        # parallel_m | parallel_a | auto (by the checkpoint's kind)
    mask_padding: bool = False                     # -A: mask the 0-padding out of attention (reference: attended)
    # numerics and parallelism
    param_dtype: str = "float32"                   # master weights
    dtype: str = "float32"                         # compute
    remat_policy: str = "none"
    mesh: str = ""                                 # e.g. "fsdp=8" or "data=2,fsdp=2,tensor=2"; "" = all devices on fsdp
    seed: int = 0
    # bookkeeping
    out_dir: str = "runs/sft"
    save_every: int = 50
    keep: int = 3
    log_every: int = 10
    peak_tflops_per_device: float = 0.0            # for MFU; 0 = look up from the device kind

    def __post_init__(self):
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size={self.batch_size} is not a multiple of grad_accum={self.grad_accum}")
        for key in ("batch_size", "grad_accum", "steps", "text_len", "keep", "log_every", "save_every"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key}={getattr(self, key)} must be positive")
        if self.data_dir is None and self.synthetic <= 0:
            raise ConfigError("give data_dir (pretokenized data) or synthetic=N")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "TrainConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        data.pop("description", None)
        data = dict(data.get("train", data))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        check_keys(data, set(fields), str(path))
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} is not key=value")
            check_keys({key: None}, set(fields), "command line")
            data[key] = yaml.safe_load(value)
        try:
            return cls(**data)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

"""Typed SFT configuration: one YAML file (``configs/*_sft.yaml``) plus ``key=value`` overrides.

Defaults are MMaDA-Parallel-M's (spec mmada_m.md §5.3): AdamW lr 5e-5, betas (0.9, 0.999), eps
1e-8, weight decay 0.01 on every parameter, linear warmup then cosine decay to ``min_lr_scale`` of
the peak, global-norm clipping at 1.0, condition dropout 0.1, ``min_masking_rate`` 1e-3.
``configs/mmada_parallel_a_sft.yaml`` holds -A's (mmada_a.md §5.4).

Every value is checked when the config is built, before any model or data loads: its type (a
YAML ``lr: "fast"`` or a command-line ``steps=ten`` is a :class:`ConfigError` naming the key, the
value and where it came from: the YAML file or "command line"), that numbers are finite and in
range (``lr > 0``, ``0 <= min_lr_scale <= 1``, betas in [0, 1), ``warmup_steps <= steps``,
``batch_size`` a multiple of ``grad_accum`` ...), and that exactly one data source is given
(``data_dir``, or ``synthetic: N``).

Paths (``checkpoint``, ``model_config``, ``data_dir``, ``vq``, ``tokenizer``) written in a YAML
file are relative to that file's folder, else to the repository root (where the tiny test models
live), else to the working directory; paths given on the command line or in Python are relative to
the working directory, else to the repository root. ``out_dir`` (an output) is relative to the
working directory. The config records them all as absolute paths, so a run folder stays readable
from anywhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import yaml

from ..config import DTYPES, REMAT_POLICIES, ConfigError, check_keys

#: the repository (package) root: fallback base of relative input paths
REPO_ROOT = Path(__file__).resolve().parents[2]
#: input paths, resolved against the config file's folder / the repository root
INPUT_PATH_KEYS = ("checkpoint", "model_config", "data_dir", "vq", "tokenizer")
OBJECTIVE_NAMES = ("auto", "parallel_m", "parallel_a")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a parallel-SFT run needs (paths: see the module docstring)."""

    # model and data
    checkpoint: str = "tests/golden/mmada_tiny"    # converted or HF checkpoint to fine-tune
    model_config: str | None = None                # or a YAML model config: train from random init
    data_dir: str | None = None                    # pretokenized data (python -m train.pretokenize); never written
    synthetic: int = 0                             # >0 (and no data_dir): generate and pretokenize this many
                                                   # examples into out_dir/synthetic_data (reused on resume)
    vq: str = "tests/golden/magvitv2_tiny"         # image tokenizer, for synthetic data
    synthetic_image_size: int = 64                 # side of the synthetic images in pixels
    synthetic_t2i_fraction: float = 0.1            # share of t2i-style synthetic examples (half of them
                                                   # drawing requests: data.synthetic.make_example)
    tokenizer: str = "tests/fixtures/tiny_tokenizer"
    text_len: int = 32                             # L_t: instruction and reasoning budgets
    instruction_len: int = 0                       # -M: a separate instruction budget (BOS, EOS included);
                                                   # 0 = text_len (the reference's layout). Sample with
                                                   # pad_instruction = this value
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
    changed_image_weight: float = 1.0              # -M: weight of the output image codes that differ from
                                                   # the input image's code at the same position (1 = the
                                                   # reference; >1 counters the copy-the-input prior of edits)
    min_masking_rate: float = 1e-3
    cond_dropout_prob: float = 0.1
    base_text_len: int = 0                         # -M: > 0 adds base MMaDA's t2i and mmu rows about each output
                                                   # image (mmada_jax.mmada.sft; data pretokenized --base-tasks),
                                                   # text part M of both (sample with t2i max_text_len = M)
    t2i_coeff: float = 1.0                         # weights of their losses (MMaDA stage 3: 1.0 and 0.5)
    mmu_coeff: float = 1.0
    objective: str = "auto"                        # parallel_m | parallel_a | auto (by the checkpoint's kind)
    mask_padding: bool = False                     # -A: mask the 0-padding out of attention (reference: attended)
    padding_bias: bool = True                      # -M: the reference's additive 0/1 attention bias, 0 on the EOS
                                                   # padding of both texts; false: no attention mask, as sampling
                                                   # sees the sequence (the bias leaks the reasoning's length)
    max_skipped_updates: int = 5                   # stop (error) after this many consecutive non-finite updates
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
        values = validate({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, {})
        for key in INPUT_PATH_KEYS:
            if values[key] is not None:
                values[key] = resolve_path(values[key], (Path.cwd(), REPO_ROOT))
        values["out_dir"] = _absolute(Path(values["out_dir"]))
        for key, value in values.items():
            if value != getattr(self, key) or type(value) is not type(getattr(self, key)):
                object.__setattr__(self, key, value)

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "TrainConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        data, sources = read_config_file(path, "train", set(fields), INPUT_PATH_KEYS, overrides)
        data = validate(data, sources, defaults={k: f.default for k, f in fields.items()})
        return cls(**data)

    @property
    def instruction_budget(self) -> int:
        """The padded instruction length: ``instruction_len``, or ``text_len`` when it is 0."""
        return self.instruction_len or self.text_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# validation

_INT, _FLOAT, _STR, _OPT_STR, _BOOL = "an integer", "a number", "a string", "a string (or null)", "true or false"
_KIND = {
    "checkpoint": _STR, "model_config": _OPT_STR, "data_dir": _OPT_STR, "synthetic": _INT, "vq": _STR,
    "synthetic_image_size": _INT, "synthetic_t2i_fraction": _FLOAT, "tokenizer": _STR, "text_len": _INT, "instruction_len": _INT,
    "batch_size": _INT, "grad_accum": _INT,
    "steps": _INT, "lr": _FLOAT, "warmup_steps": _INT, "min_lr_scale": _FLOAT, "b1": _FLOAT, "b2": _FLOAT,
    "adam_eps": _FLOAT, "weight_decay": _FLOAT, "max_grad_norm": _FLOAT, "text_coeff": _FLOAT,
    "image_coeff": _FLOAT, "changed_image_weight": _FLOAT, "min_masking_rate": _FLOAT, "cond_dropout_prob": _FLOAT, "objective": _STR,
    "base_text_len": _INT, "t2i_coeff": _FLOAT, "mmu_coeff": _FLOAT,
    "mask_padding": _BOOL, "padding_bias": _BOOL, "max_skipped_updates": _INT, "param_dtype": _STR, "dtype": _STR,
    "remat_policy": _STR, "mesh": _STR, "seed": _INT, "out_dir": _STR, "save_every": _INT, "keep": _INT,
    "log_every": _INT, "peak_tflops_per_device": _FLOAT,
}
# key -> (low, low included, high, high included); None: unbounded
_RANGE = {
    "synthetic": (0, True, None, False), "synthetic_image_size": (1, True, None, False),
    "text_len": (2, True, None, False), "instruction_len": (0, True, None, False),
    "batch_size": (1, True, None, False), "grad_accum": (1, True, None, False),
    "steps": (1, True, None, False), "warmup_steps": (0, True, None, False), "seed": (0, True, None, False),
    "save_every": (1, True, None, False), "keep": (1, True, None, False), "log_every": (1, True, None, False),
    "max_skipped_updates": (1, True, None, False),
    "lr": (0, False, None, False), "min_lr_scale": (0, True, 1, True), "b1": (0, True, 1, False),
    "b2": (0, True, 1, False), "adam_eps": (0, False, None, False), "weight_decay": (0, True, None, False),
    "max_grad_norm": (0, False, None, False), "text_coeff": (0, True, None, False),
    "image_coeff": (0, True, None, False), "changed_image_weight": (0, False, None, False),
    "synthetic_t2i_fraction": (0, True, 1, True), "min_masking_rate": (0, True, 1, False),
    "cond_dropout_prob": (0, True, 1, True), "peak_tflops_per_device": (0, True, None, False),
    "base_text_len": (0, True, None, False), "t2i_coeff": (0, True, None, False), "mmu_coeff": (0, True, None, False),
}
_CHOICES = {"objective": OBJECTIVE_NAMES, "param_dtype": DTYPES, "dtype": DTYPES, "remat_policy": REMAT_POLICIES}


def _where(sources: dict, key: str) -> str:
    return sources.get(key, "default")


def _check_one(key: str, value: Any) -> Any:
    """``value`` converted to the field's type and range-checked; ConfigError (no source) if bad."""
    kind = _KIND[key]
    bad = ConfigError(f"{key}={value!r} must be {kind}")
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise bad
        return value
    if kind in (_STR, _OPT_STR):
        if value is None and kind == _OPT_STR:
            return None
        if not isinstance(value, str) or (not value.strip() and key != "mesh"):
            raise bad
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{key}={value!r}: choose one of {list(_CHOICES[key])}")
        if key == "mesh":
            from ..sharding import parse_mesh
            try:
                parse_mesh(value)
            except ValueError as e:
                raise ConfigError(f"{key}={value!r}: {e}") from None
        return value
    if isinstance(value, bool):
        raise bad
    if kind == _INT:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise bad
    else:
        if isinstance(value, str):   # YAML 1.1 reads 3e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number")
    lo, lo_in, hi, hi_in = _RANGE[key]
    if (lo is not None and (value < lo if lo_in else value <= lo)) or (
            hi is not None and (value > hi if hi_in else value >= hi)):
        if hi is None:
            want = f"{'>=' if lo_in else '>'} {lo}"
        else:
            want = f"lie in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"
        raise ConfigError(f"{key}={value!r} must {'be ' if hi is None else ''}{want}")
    return value


def validate(values: dict, sources: dict, defaults: dict | None = None) -> dict:
    """``values`` (some or all fields) type-converted and checked, each alone and together (with
    ``defaults`` for the fields not given). Errors name the key, the value and its source
    (``sources[key]``: a YAML file, "command line"; none for a config built in Python)."""
    out = {}
    for key, value in values.items():
        try:
            out[key] = _check_one(key, value)
        except ConfigError as e:
            raise ConfigError(f"{sources[key]}: {e}" if key in sources else str(e)) from None
    full = {**(defaults or {}), **out}

    def named(key):
        return f"{key}={full[key]!r}" + (f" ({_where(sources, key)})" if sources else "")

    if full["batch_size"] % full["grad_accum"]:
        raise ConfigError(f"{named('batch_size')} is not a multiple of {named('grad_accum')}")
    if full["warmup_steps"] > full["steps"]:
        raise ConfigError(f"{named('warmup_steps')} must not exceed {named('steps')}")
    if full["data_dir"] is not None and full["synthetic"] > 0:
        raise ConfigError(f"give either data_dir or synthetic, not both: {named('data_dir')} and "
                          f"{named('synthetic')} (synthetic data is generated into out_dir/synthetic_data; "
                          f"drop synthetic to train on data_dir, e.g. override synthetic=0)")
    if full["data_dir"] is None and full["synthetic"] <= 0:
        raise ConfigError("give data_dir (pretokenized data) or synthetic=N" +
                          (f" ({', '.join(sorted(set(sources.values())))})" if sources else ""))
    if 0 < full["base_text_len"] < 4:
        raise ConfigError(f"{named('base_text_len')} must be 0 (no base-task rows) or >= 4")
    if 0 < full["instruction_len"] < 3:
        raise ConfigError(f"{named('instruction_len')} must be 0 (= text_len) or >= 3 (BOS + instruction + EOS)")
    if full["synthetic"] > 0 and full["text_len"] < 3:
        raise ConfigError(f"{named('text_len')} must be >= 3 to pretokenize synthetic data (BOS + text + EOS)")
    return out


def _absolute(path: Path) -> str:
    return os.path.normpath(path if path.is_absolute() else Path.cwd() / path)


def resolve_path(value: str, bases) -> str:
    """``value`` made absolute: ``~`` expanded; relative to the first of ``bases`` where it exists,
    else to the working directory."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return os.path.normpath(path)
    for base in bases:
        candidate = Path(base) / path
        if candidate.exists():
            return _absolute(candidate)
    return _absolute(path)


def read_config_file(path: str | Path, section: str, names: set[str], input_path_keys, overrides=()) -> tuple[dict, dict]:
    """(values, sources) of a YAML config: its ``section:`` mapping (or the whole file), unknown
    keys named with the closest known one, input paths resolved against the file's folder, else the
    repository, else the working directory, then ``key=value`` command-line overrides (YAML
    values). ``sources[key]``: the file or "command line", for error messages."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (or a '{section}:' section), got {type(data).__name__}")
    data.pop("description", None)
    data = data.get(section, data)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the '{section}' section must be a mapping of keys, got {type(data).__name__}")
    data = dict(data)
    check_keys(data, names, str(path))
    sources = {key: str(path) for key in data}
    base = path.absolute().parent
    for key in input_path_keys:   # relative to the config file, else the repository
        if isinstance(data.get(key), str):
            data[key] = resolve_path(data[key], (base, REPO_ROOT, Path.cwd()))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"command line: override {item!r} is not key=value")
        check_keys({key: None}, names, "command line")
        try:
            data[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            data[key] = value
        sources[key] = "command line"
    return data, sources

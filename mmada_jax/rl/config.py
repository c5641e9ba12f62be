"""Typed ParaRL configuration: one YAML file (``configs/*_pararl.yaml``, keys under ``pararl:``) plus
``key=value`` overrides. Each field is written once with its default, help, range and choices
(:func:`~mmada_jax.settings.setting`); the sampler's settings and the task's options sit in
``sampling:`` and ``options:`` mappings checked by the ``task``'s own classes (-M:
:class:`~mmada_jax.parallel_m.Settings`, :class:`~mmada_jax.app.tasks.ParallelMOptions`; -A:
:class:`~mmada_jax.parallel_a.Settings`, :class:`~mmada_jax.app.tasks.ParallelAOptions`).

Defaults are the paper's where it gives them (``pararl.md`` §1): s = 3 steps per rollout shared by
a group, beta 1e-4, AdamW lr 2e-5 with 500 warm-up steps and a cosine decay, one inner update;
and its suggested choices where it does not: G = 8, epsilon 0.2, k3 KL, the step-mean loss.
Every value is checked before anything loads; an error names the key, the value and where it
came from (the YAML file or "command line"). Input paths in a YAML file are relative to its
folder, else to the repository; ``out_dir`` to the working directory.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ..config import DTYPES, REMAT_POLICIES, ConfigError
from ..settings import setting
from ..training.config import REPO_ROOT, _absolute, read_config_file, resolve_path
from .advantages import ADVANTAGE_ESTIMATORS
from .losses import AGGREGATIONS, POLICY_LOSSES
from .rewards import REWARDS
from .rollout import TEXT_VIEWS
from .steps import MODES

INPUT_PATH_KEYS = ("checkpoint", "model_config", "vq", "tokenizer", "prompts", "benchmark", "reward_checkpoint")
ESTIMATORS = ("trajectory", "random_remask", "unigrpo")
#: task -> the checkpoint kind it runs: the joint tasks (ParaRL) and base MMaDA's (UniGRPO)
TASKS = {"parallel_m": "mmada", "parallel_a": "dimoo", "text": "mmada", "mmu": "mmada", "t2i": "mmada"}
BASE_TASKS = ("text", "mmu", "t2i")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Everything a ParaRL run needs."""

    # policy and prompts
    task: str = setting("parallel_m", "parallel_m (MMaDA-Parallel-M) or parallel_a (MMaDA-Parallel-A, editing "
                                      "only: every prompt needs an input image); base MMaDA (UniGRPO): text, "
                                      "mmu (every prompt needs an input image) or t2i", choices=tuple(TASKS))
    checkpoint: str = setting("demo/parallel_m_shapes", "the SFT model: starting policy and frozen reference")
    model_config: str | None = setting(None, "a YAML model config: the architecture --compile-only plans for "
                                             "without the checkpoint (default: the checkpoint's)")
    vq: str | None = setting(None, "image tokenizer (default: the checkpoint's)")
    tokenizer: str | None = setting(None, "text tokenizer (default: the checkpoint's)")
    prompts: str | None = setting(None, "a JSONL of requests (lines with instruction and input_image, relative "
                                        "to the file; benchmark files qualify)")
    synthetic: int = setting(0, "or: this many training prompts of the synthetic world (t2i / mmu: its "
                                "base-task items)", minimum=0)
    synthetic_seed: int = setting(0, "their seed (the SFT data's, for the world's training prompts)", minimum=0)
    sampling: dict = setting(None, "sampler settings (the sampler's names, e.g. text_steps)")
    options: dict = setting(None, "task options (e.g. pad_instruction)")
    prompt_len: int = setting(0, "text / mmu: left-pad every rollout batch's prompts to this many tokens for the "
                                 "learner, whose step then compiles once (0: to the batch's longest prompt, a "
                                 "recompile whenever a longer one comes)", minimum=0)
    # rollouts and rewards
    group_size: int = setting(8, "G: rollouts per prompt", minimum=2)
    prompts_per_step: int = setting(2, "prompts per rollout batch (B = prompts_per_step x G rollouts)", minimum=1)
    s: int = setting(3, "recorded steps per rollout, shared by its group", minimum=1)
    steps_mode: str = setting("sampled", "sampled: s uniform steps per group; final: the last step only",
                              choices=MODES)
    estimator: str = setting("trajectory", "log-probabilities from the stored states (trajectory, Eq. 3) or from "
                                           "random re-maskings of the final output (random_remask, App. D.2), "
                                           "or UniGRPO's scheduled re-maskings of the response, one per inner "
                                           "update (unigrpo: the base tasks' estimator; rewards of the final "
                                           "outputs, s = 1)", choices=ESTIMATORS)
    unigrpo_timesteps: int = setting(1000, "unigrpo: T of Algorithm 1 (ratios t_n / T)", minimum=1)
    t2i_remap: bool = setting(True, "unigrpo: image mask ratio cos(pi/2 * 0.9 * t_n / T) as the reference "
                                    "code (false: t_n / T)")
    group_masks: bool = setting(False, "unigrpo: one re-masking per group, shared by its G rollouts (their "
                                       "zero-sum advantages then cancel on tokens they share: lower variance); "
                                       "false: one per rollout, as Algorithm 1")
    advantage: str = setting("per_step", "advantage estimator", choices=sorted(ADVANTAGE_ESTIMATORS))
    reward: str = setting("synthetic", "reward (mmada_jax.rl.rewards)", choices=tuple(REWARDS))
    reward_function: str = setting("", "for reward=callable: package.module:function")
    reward_checkpoint: str | None = setting(None, "for reward=clip: a converted CLIP checkpoint (convert_torch_weights.py "
                                                  "on a HF CLIPModel folder, e.g. openai/clip-vit-large-patch14)")
    reward_text: str = setting("decoded", "the text a reward reads at a recorded step: decoded (so far) or "
                                          "predicted (x0, every slot filled)", choices=TEXT_VIEWS)
    calibration_prompts: int = setting(8, "prompts whose rollouts calibrate the reward's mu and sigma", minimum=1)
    # the policy loss
    loss: str = setting("clipped", "policy loss", choices=sorted(POLICY_LOSSES))
    beta: float = setting(1e-4, "k3 KL weight against the reference", minimum=0.0)
    epsilon: float = setting(0.2, "ratio clip", minimum=0.0)
    epsilon_high: float | None = setting(None, "upper ratio clip (default: epsilon)", minimum=0.0)
    log_ratio_clamp: float = setting(10.0, "clamp on the log-ratio", minimum=0.0)
    inner_updates: int = setting(1, "mu: optimizer steps per rollout batch", minimum=1)
    aggregation: str = setting("step_mean", "loss aggregation", choices=AGGREGATIONS)
    # optimisation (the SFT step's names)
    steps: int = setting(100, "rollout batches", minimum=1)
    lr: float = setting(2e-5, "peak learning rate", minimum=0.0)
    warmup_steps: int = setting(500, "linear warm-up steps (capped at steps)", minimum=0)
    min_lr_scale: float = setting(0.0, "cosine floor as a fraction of lr", minimum=0.0)
    b1: float = setting(0.9, "Adam beta1", minimum=0.0)
    b2: float = setting(0.999, "Adam beta2", minimum=0.0)
    adam_eps: float = setting(1e-8, "Adam epsilon", minimum=0.0)
    weight_decay: float = setting(0.0, "AdamW weight decay", minimum=0.0)
    max_grad_norm: float = setting(1.0, "global-norm clipping", minimum=0.0)
    grad_accum: int = setting(1, "micro-batches per update (rollouts split evenly)", minimum=1)
    max_skipped_updates: int = setting(5, "stop after this many consecutive non-finite updates", minimum=1)
    # numerics and parallelism (the SFT config's names and defaults)
    param_dtype: str = setting("float32", "policy master weights", choices=DTYPES)
    dtype: str = setting("float32", "compute (rollouts and learner)", choices=DTYPES)
    remat_policy: str = setting("none", "learner rematerialisation", choices=REMAT_POLICIES)
    reference_dtype: str | None = setting(None, "the frozen reference's weights (default: param_dtype; bfloat16 "
                                                "halves its memory at 8B)", choices=(None,) + tuple(DTYPES))
    mesh: str = setting("", "e.g. fsdp=8; empty: all devices on fsdp")
    seed: int = setting(0, "prompts, steps and sampling noise derive from (seed, step)", minimum=0)
    # bookkeeping
    out_dir: str = setting("runs/pararl", "run folder (checkpoints, metrics, sheets)")
    save_every: int = setting(50, "checkpoint every this many steps", minimum=1)
    keep: int = setting(3, "checkpoints kept", minimum=1)
    log_every: int = setting(1, "progress line every this many steps", minimum=1)
    sample_every: int = setting(0, "sample sheet of fixed prompts every this many steps (0: never)", minimum=0)
    benchmark: str | None = setting(None, "a benchmark JSONL to evaluate on")
    eval_every: int = setting(0, "evaluate every this many steps (0: only at the end when benchmark is set)",
                              minimum=0)
    eval_items: int = setting(0, "evaluate on the first N items (0: all)", minimum=0)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _convert(f, getattr(self, f.name)))
        for key in INPUT_PATH_KEYS:
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, resolve_path(value, (Path.cwd(), REPO_ROOT)))
        object.__setattr__(self, "out_dir", _absolute(Path(self.out_dir)))
        object.__setattr__(self, "sampling", dict(self.sampling or {}))
        object.__setattr__(self, "options", dict(self.options or {}))
        self._check()

    def _check(self) -> None:
        if self.group_masks and self.estimator != "unigrpo":
            raise ConfigError(f"group_masks: only for estimator=unigrpo (its re-maskings), not {self.estimator}")
        if self.task in BASE_TASKS and self.estimator != "unigrpo":
            raise ConfigError(f"task={self.task} (base MMaDA) trains with estimator=unigrpo, not {self.estimator} "
                              f"(its sampler records no steps)")
        if self.prompt_len and self.task not in ("text", "mmu"):
            raise ConfigError(f"prompt_len={self.prompt_len}: only for task text or mmu (their prompts differ in "
                              f"length), not {self.task}")
        if self.task == "text" and self.synthetic:
            raise ConfigError(f"synthetic={self.synthetic}: the synthetic world has no text-only task; give prompts")
        if (self.prompts is None) == (self.synthetic <= 0):
            raise ConfigError("give exactly one prompt source: prompts (a JSONL) or synthetic=N")
        if self.reward == "callable" and not self.reward_function:
            raise ConfigError("reward=callable needs reward_function='package.module:function'")
        if self.reward == "clip" and not self.reward_checkpoint:
            raise ConfigError("reward=clip needs reward_checkpoint=<a converted CLIP checkpoint>")
        if (self.prompts_per_step * self.group_size) % self.grad_accum:
            raise ConfigError(f"grad_accum={self.grad_accum} does not divide the {self.prompts_per_step} x "
                              f"{self.group_size} rollouts of a step")
        self.sampler_settings()
        if self.eval_every and self.benchmark is None:
            raise ConfigError(f"eval_every={self.eval_every} needs a benchmark")
        for name in ("b1", "b2"):
            if getattr(self, name) >= 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be below 1")
        if self.min_lr_scale > 1:
            raise ConfigError(f"min_lr_scale={self.min_lr_scale!r} must not exceed 1")

    def sampler_settings(self):
        """(sampler settings, task options) of the rollouts, checked by their own classes."""
        from ..settings import resolve
        task = self.make_task()
        out = []
        for key, cls in (("sampling", task.settings), ("options", task.options)):
            try:
                out.append(resolve(cls, **getattr(self, key)))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{key}: {e}") from None
        return tuple(out)

    def make_task(self):
        """The app task whose sampler rolls out (:mod:`mmada_jax.app.tasks`)."""
        from ..app.tasks import TASKS as APP_TASKS
        return APP_TASKS[self.task]()

    @property
    def micro_batch(self) -> int:
        return self.prompts_per_step * self.group_size // self.grad_accum

    @property
    def slots(self) -> int:
        """Reward slots per rollout: the s recorded steps, one for the final output."""
        return 1 if self.estimator == "unigrpo" or self.steps_mode == "final" else self.s

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.group_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides=(), section: str = "pararl") -> "RLConfig":
        """The config in ``path`` (its ``pararl:`` section; ``section="unigrpo"``: a ``unigrpo:``
        section, whose unset keys take :data:`UNIGRPO_DEFAULTS`)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        data, sources = read_config_file(path, section, set(fields), INPUT_PATH_KEYS, overrides)
        for key, value in data.items():
            try:
                _convert(fields[key], value)
            except ConfigError as e:
                raise ConfigError(f"{sources[key]}: {e}") from None
        if section == "unigrpo":
            data = {**UNIGRPO_DEFAULTS, **data}
        return cls(**data)


#: UniGRPO's defaults where they differ from ParaRL's (``pararl.md`` §3.1, §4.2, §5): MMaDA's
#: stated AdamW lr 5e-5 with a cosine decay, the reference trainer's ``bnpo`` aggregation, one
#: inner update (mu, not given; the bytecode's ``num_iterations``), beta 1e-4 (MMaDA-Parallel's
#: statement of MMaDA's value; the bytecode's TRL default is 0.04), G = 8 (the bytecode's).
UNIGRPO_DEFAULTS = {"estimator": "unigrpo", "task": "text", "aggregation": "bnpo", "lr": 5e-5, "reward": "correctness"}


def _convert(field: dataclasses.Field, value):
    """``value`` as the field's type, in its range and choices; ConfigError naming the key."""
    kind = str(field.type)
    name, meta = field.name, field.metadata
    optional = "None" in kind
    if value is None and (optional or kind == "dict"):
        return value
    bad = ConfigError(f"{name}={value!r} must be {kind.replace(' | None', ' (or null)')}")
    if kind == "dict":
        if not isinstance(value, dict):
            raise bad
        return value
    base = kind.replace(" | None", "")
    if base == "bool":
        if not isinstance(value, bool):
            raise bad
    elif base == "str":
        if not isinstance(value, str):
            raise bad
    elif base == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or isinstance(value, float) and value.is_integer()):
            raise bad
        value = int(value)
    elif base == "float":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name}={value!r} must be a finite number")
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"{name}={value!r}: choose one of {list(meta['choices'])}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ConfigError(f"{name}={value!r} must be >= {meta['minimum']}")
    return value

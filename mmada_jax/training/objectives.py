"""The SFT objective of a run: MMaDA-Parallel-M's or MMaDA-Parallel-A's, chosen by the config.

Both read the same pretokenized records (raw VQ codes, instruction and reasoning ids) and build
their own sequences inside the jitted step from the step's PRNG key, so every random choice
(masks, condition dropout) is reproducible on resume:

* ``parallel_m``: ``<|interleave|> <|soi|> in <|eoi|> instr | <|soi|> out <|eoi|> reasoning``, one
  shared double-cosine mask ratio, 1/t-weighted text loss (:func:`~mmada_jax.parallel_m.sft.sft_inputs`);
* ``parallel_a``: ``<system> S </system> <user> I in </user> <answer> out reasoning </answer>``
  (Lumina-DiMOO tags, NEWLINE after image rows), independent cosine ratios for image and text,
  token-mean loss (:func:`~mmada_jax.parallel_a.sft.sft_inputs`).

-M with ``base_text_len`` M > 0 adds base MMaDA's t2i and mmu rows about every record's output
image (:mod:`mmada_jax.mmada.sft`): ``loss = parallel + t2i_coeff * t2i_loss + mmu_coeff * mmu_loss``.

``objective: auto`` picks ``parallel_a`` for a ``dimoo`` checkpoint, else ``parallel_m``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import numpy as np

from ..config import ConfigError, ModelConfig
from ..flops import train_flops
from ..mmada import sft as sft_base
from ..parallel_a import sft as sft_a
from ..parallel_m import sft as sft_m
from ..parallel_m.layout import Layout as LayoutM
from .config import TrainConfig

OBJECTIVES = ("auto", "parallel_m", "parallel_a")


@dataclasses.dataclass(frozen=True)
class DataLayout:
    """What the pretokenized data fixes: codes per image, the grid they form (row-major), and
    for -A the tokenized system prompt."""

    num_image_tokens: int
    grid: tuple[int, int]
    system_ids: tuple[int, ...] = ()

    @classmethod
    def from_metadata(cls, meta: dict) -> "DataLayout":
        n = int(meta["num_image_tokens"])
        grid = meta.get("grid")
        if grid is None:
            side = math.isqrt(n)
            grid = (side, n // side)
        return cls(n, (int(grid[0]), int(grid[1])), tuple(int(i) for i in meta.get("system_ids", ())))


@dataclasses.dataclass(frozen=True)
class Objective:
    """``loss(model, micro_batch, key) -> {loss, text_loss, image_loss, ...}``; ``sequence_length``
    and ``head_length`` (positions that reach the LM head) size the FLOP count, with ``extra_rows``:
    the (sequence length, head length) of more rows each example gives (base-task rows)."""

    name: str
    loss: Callable
    sequence_length: int
    head_length: int
    batch_keys: tuple[str, ...]
    extra_rows: tuple[tuple[int, int], ...] = ()

    def flops_and_tokens(self, model_config: ModelConfig) -> tuple[float, int]:
        """Training FLOPs and tokens per example (all its rows)."""
        rows = ((self.sequence_length, self.head_length),) + self.extra_rows
        return sum(train_flops(model_config, h, t) for t, h in rows), sum(t for t, _ in rows)


M_KEYS = ("input_image_codes", "output_image_codes", "input_text", "output_text", "input_text_len", "output_text_len")
BASE_KEYS = ("t2i_text", "t2i_text_len", "mmu_text", "mmu_prompt_len")


def resolve(config: TrainConfig, model_config: ModelConfig) -> str:
    """The objective's name for this model (``auto`` resolved), checked against its token table."""
    if config.objective not in OBJECTIVES:
        raise ConfigError(f"objective={config.objective!r}; choose one of {OBJECTIVES}")
    dimoo = model_config.kind == "dimoo"
    name = config.objective if config.objective != "auto" else ("parallel_a" if dimoo else "parallel_m")
    if (name == "parallel_a") != dimoo:
        raise ConfigError(f"objective={name} needs a {'dimoo (MMaDA-Parallel-A)' if name == 'parallel_a' else 'MMaDA'} "
                          f"checkpoint, but {config.checkpoint} is of kind {model_config.kind!r}")
    return name


def make_objective(config: TrainConfig, model_config: ModelConfig, layout: DataLayout) -> Objective:
    tokens, n, length = model_config.tokens, layout.num_image_tokens, config.text_len
    name = resolve(config, model_config)
    if name == "parallel_a" and config.instruction_len:
        raise ConfigError(f"instruction_len={config.instruction_len}: only for MMaDA-Parallel-M (-A lays its "
                          f"instruction out in the system turn)")
    if name == "parallel_a" and not config.padding_bias:
        raise ConfigError("padding_bias=false: only for MMaDA-Parallel-M (-A: mask_padding)")
    if name == "parallel_a" and config.changed_image_weight != 1.0:
        raise ConfigError(f"changed_image_weight={config.changed_image_weight}: only for MMaDA-Parallel-M")
    if name == "parallel_a" and config.base_text_len:
        raise ConfigError(f"base_text_len={config.base_text_len}: base MMaDA's t2i / mmu rows are for MMaDA-Parallel-M")
    if name == "parallel_m":
        def loss(model, micro, key):
            b = micro["output_image_codes"].shape[0]
            inputs = sft_m.sft_inputs(tokens, micro, sft_m.random_draws(key, b, n, length),
                                      eps=config.min_masking_rate, cond_dropout_prob=config.cond_dropout_prob)
            return sft_m.sft_forward(model, inputs, num_image_tokens=n, text_len=length,
                                     text_coeff=config.text_coeff, image_coeff=config.image_coeff,
                                     padding_bias=config.padding_bias,
                                     changed_image_weight=config.changed_image_weight)
        layout = LayoutM.for_training(n, n, length, config.instruction_budget)
        if not config.base_text_len:
            return Objective(name, loss, layout.total, layout.output_len, M_KEYS)

        def mixed(model, micro, key):
            parallel_key, base_key = jax.random.split(key)
            parts = loss(model, micro, parallel_key)
            base = sft_base.base_task_losses(model, tokens, micro, base_key, min_masking_rate=config.min_masking_rate,
                                             cond_dropout_prob=config.cond_dropout_prob)
            return dict(parts, **base, loss=parts["loss"] + config.t2i_coeff * base["t2i_loss"]
                        + config.mmu_coeff * base["mmu_loss"])
        m = config.base_text_len   # t2i rows (M + 1) + N + 2 tokens, head on N + 2; mmu rows N + 3 + M, head on M
        rows = ((m + n + 3, n + 2), (n + 3 + m, m))
        return Objective(name, mixed, layout.total, layout.output_len, M_KEYS + BASE_KEYS, rows)

    if not layout.system_ids:
        raise ConfigError("objective parallel_a needs data pretokenized for MMaDA-Parallel-A (its metadata holds "
                          "system_ids): run `python -m train.pretokenize` with the -A checkpoint and aMUSEd VQ")
    grid_w = layout.grid[1]
    system_ids = np.asarray(layout.system_ids, np.int32)

    def build(micro, key):
        b = micro["output_image_codes"].shape[0]
        return sft_a.sft_inputs(tokens, micro, sft_a.random_draws(key, b, n, length), system_ids=system_ids,
                                input_grid_w=grid_w, output_grid_w=grid_w, cond_dropout_prob=config.cond_dropout_prob)

    def loss(model, micro, key):
        return sft_a.sft_forward(model, build(micro, key), tokens, attend_padding=not config.mask_padding)

    static = {}

    def probe(micro, key):    # trace once for the sequence width and the (static) answer window
        inputs = build(micro, key)
        static["answer_len"] = inputs.answer_len
        return inputs.input_ids
    width = jax.eval_shape(probe, {k: jax.ShapeDtypeStruct((1,) + s, np.int32) for k, s in
                                   _batch_shapes(n, length, length).items()}, jax.random.key(0)).shape[1]
    return Objective(name, loss, width, static["answer_len"], M_KEYS + ("has_input_image",))


def _batch_shapes(n: int, length: int, instruction_len: int, base_text_len: int = 0) -> dict:
    return {"input_image_codes": (n,), "output_image_codes": (n,), "input_text": (instruction_len,),
            "output_text": (length,), "input_text_len": (), "output_text_len": (), "has_input_image": (),
            "t2i_text": (base_text_len,), "t2i_text_len": (), "mmu_text": (base_text_len,), "mmu_prompt_len": ()}


def abstract_batch(objective: Objective, layout: DataLayout, text_len: int, grad_accum: int, micro: int,
                   instruction_len: int | None = None, base_text_len: int = 0) -> dict:
    """ShapeDtypeStructs of a step's batch [grad_accum, micro, ...] (for AOT compilation)."""
    shapes = _batch_shapes(layout.num_image_tokens, text_len, instruction_len or text_len, base_text_len)
    return {k: jax.ShapeDtypeStruct((grad_accum, micro) + shapes[k], np.bool_ if k == "has_input_image" else np.int32)
            for k in objective.batch_keys}

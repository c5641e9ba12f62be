"""AOT memory plan of ParaRL: what one device holds during a ParaRL step, with no weights.

The model is abstract (ShapeDtypeStructs of ``model_config``'s architecture, or the checkpoint's,
with the run's ``param_dtype`` / ``dtype`` / ``remat_policy``), placed by the logical rules on the
run's mesh (on a CPU host: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` fake devices, as
``python -m train.pararl --compile-only`` sets). Each program the loop (:mod:`.loop`) runs on the
devices is lowered with ShapeDtypeStruct inputs carrying their shardings, compiled, and its
``memory_analysis()`` read per device:

* **persistent** state, alive the whole run (sizes from the shardings, no compile): the policy's
  parameters in ``param_dtype`` and its AdamW state (the train state), and the frozen reference
  in ``reference_dtype`` on the same shardings;
* the **rollout sampler**: the task's ``lax.scan`` over its denoising steps with ``record_steps``
  [B, s] (B = prompts_per_step x group_size rows) on the policy's parameters, per-row inputs split
  by the ``batch`` rule as :mod:`mmada_jax.sampling.runner` places them. The prompt is a
  representative one: -M ``inference_prompt`` with a 1024-code (512 px, ``resolution``) input
  image and ``pad_instruction`` tokens of instruction (or ``max_prompt_tokens`` + BOS/EOS when
  unpadded); -A an edit prompt with a 20-token system turn, a 256-token instruction, a 32 x 32
  input grid and the configured output size;
* the **log-probability forwards** (:func:`~mmada_jax.rl.trajectory.token_logp`) of the reference
  and of the policy on the learner's B x s states (the ``estimator``'s: recorded states or random
  re-maskings; one forward each, not micro-batched), the batch split by the ``batch`` rule;
* the **RL train step** (:func:`~mmada_jax.training.step.make_train_step` over the ParaRL
  objective) on the micro-batched learner batch [grad_accum, B / grad_accum, s, ...], the state
  donated.

Every program is lowered under ``jax.set_mesh`` (so the model's activation constraints apply) with
its batch split over (data, fsdp), as the SFT loop compiles its step. A forward fed unplaced
(replicated) inputs, or a step traced outside the mesh, needs far more: measured at 8B on fsdp=8
with 32 rollouts, 234 GiB of temporaries for the reference forward on replicated inputs (35 GiB
split) and 63 GiB for the train step traced outside the mesh (39 GiB under it).

A program's *extra* is what it needs beyond the persistent arrays it reads: arguments minus those
(the policy's parameters for the sampler and the policy forward, the reference for the reference
forward, the whole train state for the train step) + outputs - aliased + temporaries. The phases
run one after another (their outputs come back to the host in between), so

    peak = persistent + max(sampler extra, forward extras, train-step extra).

Caveats. The CPU compiler's numbers estimate a GPU/TPU's: it keeps fp32 copies of bf16 matmul
operands and schedules buffers differently, so treat the temporaries as an upper bound. Not
counted: the reward model (CLIP) and the VQ decoder of the rollouts' images (small and replicated
next to the policy), the allocator's fragmentation and the runtime's own reserve.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Callable

import jax
import numpy as np
from flax import nnx

from ..config import ModelConfig, load_config
from ..model import abstract_model
from ..sampling.recording import Recording
from ..sampling.runner import lower_abstract
from ..sharding import make_mesh, parse_mesh
from ..training.step import (batch_shardings, jit_train_step, make_train_step, optimizer, param_shardings,
                             row_shardings, state_shardings_for)
from .config import TASKS, RLConfig
from .loop import learner_batches, micro_batches, optimizer_config, reference_leaf_dtype
from .objective import LossOptions, make_objective, rollout_batch
from .steps import draw_steps
from .trajectory import token_logp

GIB = 1024 ** 3
#: pixels per VQ code (MAGVIT-v2 of -M and aMUSEd of -A both downsample by 16)
DOWNSAMPLE = 16
#: the -A representative prompt: system-turn and instruction tokens
SYSTEM_TOKENS_A, INSTRUCTION_TOKENS_A = 20, 256
#: the id every representative prompt's text is made of (an ordinary text id in every vocabulary)
TEXT_ID = 100
#: the phases whose extras compete for the memory above the persistent state
PHASES = ("sampler", "reference_forward", "policy_forward", "train_step")


def model_config(config: RLConfig) -> ModelConfig:
    """The planned architecture: ``model_config`` (or the checkpoint's) with the run's dtypes and
    remat policy; its kind must be the task's."""
    base = ModelConfig.from_yaml(config.model_config) if config.model_config else load_config(config.checkpoint)
    if base.kind != TASKS[config.task]:
        raise ValueError(f"task {config.task} runs models of kind {TASKS[config.task]!r}; "
                         f"{config.model_config or config.checkpoint} is {base.kind!r}")
    return dataclasses.replace(base, param_dtype=config.param_dtype, dtype=config.dtype,
                               remat_policy=config.remat_policy)


def device_bytes(tree) -> int:
    """Bytes one device holds of ``tree``'s ShapeDtypeStructs (the largest shard of each)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _abstract(tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=s), tree, shardings)


def _memory(compiled, persistent: int) -> dict:
    """A compiled program's per-device bytes and its extra beyond the ``persistent`` arguments."""
    mem = compiled.memory_analysis()
    out = {"arguments": mem.argument_size_in_bytes, "outputs": mem.output_size_in_bytes,
           "aliased": mem.alias_size_in_bytes, "temporaries": mem.temp_size_in_bytes, "persistent": persistent}
    out["extra"] = out["arguments"] - persistent + out["outputs"] - out["aliased"] + out["temporaries"]
    return out


def _sampler_args(config: RLConfig, model, settings, options, record_steps: np.ndarray):
    """(step function, :func:`~mmada_jax.sampling.runner.run_scan` arguments, layout) of the
    task's sampler on B copies of the representative prompt."""
    t = model.config.tokens
    b = record_steps.shape[0]
    if config.task == "t2i":
        from ..mmada.layout import T2ILayout
        from ..mmada.prompts import t2i_gen_prompt
        from ..mmada.t2i import _step, prepare
        side = (options.resolution or 512) // DOWNSAMPLE
        layout = T2ILayout(options.max_text_len, side * side)
        ids, _, uids, _ = t2i_gen_prompt(t, [[TEXT_ID] * (options.max_text_len - 2)] * b, layout.num_image_tokens,
                                         options.max_text_len)
        return _step, prepare(model, ids, uids, layout=layout, settings=settings, seed=0), layout
    if config.task in ("text", "mmu"):
        from ..mmada.prompts import mmu_question
        from ..mmada.text import _step, prepare
        chat = [TEXT_ID] * options.max_prompt_tokens
        prompt = (mmu_question(t, np.full(((options.resolution or 512) // DOWNSAMPLE) ** 2, t.image_offset, np.int32),
                               chat) if config.task == "mmu" else np.asarray(chat, np.int32))
        args = prepare(model, np.stack([prompt] * b), settings=settings, seed=0)
        return _step, args, args[0].layout
    if config.task == "parallel_m":
        from ..parallel_m.prompts import inference_prompt
        from ..parallel_m.sampler import _step, prepare
        side = (options.resolution or 512) // DOWNSAMPLE
        words = options.pad_instruction - 2 if options.pad_instruction else options.max_prompt_tokens
        cond, uncond = inference_prompt(t, np.zeros(side * side, np.int32), [TEXT_ID] * words,
                                        options.pad_instruction)
        args = prepare(model, [cond] * b, [uncond] * b, num_image_tokens=side * side, settings=settings,
                       seed=0, record_steps=record_steps)
    else:
        from ..parallel_a.layout import output_grid
        from ..parallel_a.prompts import edit_prompt_from_ids
        from ..parallel_a.sampler import _step, prepare
        side = options.input_size // DOWNSAMPLE
        prompt = edit_prompt_from_ids(t, [TEXT_ID] * SYSTEM_TOKENS_A, [TEXT_ID] * INSTRUCTION_TOKENS_A,
                                      np.zeros((side, side), np.int32), grid=output_grid(options.height, options.width),
                                      text_len=settings.text_len)
        args = prepare(model, [prompt] * b, settings=settings, seed=0, record_steps=record_steps)
    return _step, args[:-1], args[0].layout


def _learner_batch(config: RLConfig, layout, tokens, record_steps: np.ndarray, slots: int) -> tuple[dict, dict]:
    """(the forwards' inputs [B*s, ...], the train step's micro-batched batch) with the loop's
    shapes for the config's estimator (:func:`~mmada_jax.rl.loop.learner_batch`,
    ``rollout_batch``, ``micro_batches``), built from a rollout batch of zeros."""
    b, s = record_steps.shape
    n, length = layout.num_image_tokens, layout.total
    zeros = lambda *shape: np.zeros(shape, np.int32)
    rec = None if config.estimator == "unigrpo" else Recording(
        steps=record_steps, before=zeros(b, s, length), after=zeros(b, s, length), image_codes=zeros(b, s, n),
        text_ids=zeros(b, s, len(layout.text_positions())), logp=zeros(b, s, length).astype(np.float32))
    out = types.SimpleNamespace(recording=rec, ids=zeros(b, length), image_codes=zeros(b, n), pads=zeros(b),
                                layout=layout)
    sb = learner_batches(config, out, tokens, slots, step=0)[0]
    forward = {k: sb[k] for k in ("ids", "attention_mask", "position_ids", "text_positions", "targets")}
    logp = np.zeros(sb["targets"].shape, np.float32)
    batch = rollout_batch(sb, np.zeros((b, s), np.float32), logp, logp if config.inner_updates > 1 else None)
    return forward, micro_batches(batch, config.grad_accum)


@dataclasses.dataclass
class _State:
    """The abstract model and the persistent arrays of a run, placed on its mesh."""

    mesh: jax.sharding.Mesh
    model_config: ModelConfig
    model: nnx.Module
    graphdef: nnx.GraphDef
    params: dict             # the policy's, param_dtype
    reference: dict          # reference_dtype, the same shardings
    opt_config: object
    shardings: dict          # the train state's
    train_state: dict        # params, opt_state, step, key
    bytes: dict              # per device: params, optimizer, reference, other, total


def _state(config: RLConfig) -> _State:
    mesh = make_mesh(parse_mesh(config.mesh) if config.mesh else None)
    mconfig = model_config(config)
    model = abstract_model(mconfig)
    graphdef, state = nnx.split(model)
    p_shardings = param_shardings(model, mesh)
    params = _abstract(nnx.to_pure_dict(state), p_shardings)
    dtype = config.reference_dtype or config.param_dtype
    reference = jax.tree.map(lambda p: jax.ShapeDtypeStruct(
        p.shape, reference_leaf_dtype(p.dtype, dtype), sharding=p.sharding), params)
    opt_config = optimizer_config(config)
    with jax.set_mesh(mesh):
        shardings = state_shardings_for(params, p_shardings, opt_config, mesh)
        train_state = _abstract({"params": params, "opt_state": jax.eval_shape(optimizer(opt_config).init, params),
                                 "step": jax.ShapeDtypeStruct((), np.int32),
                                 "key": jax.ShapeDtypeStruct((2,), np.uint32)}, shardings)
    sizes = {"params": device_bytes(train_state["params"]), "optimizer": device_bytes(train_state["opt_state"]),
             "reference": device_bytes(reference), "other": device_bytes({k: train_state[k] for k in ("step", "key")})}
    sizes["total"] = sum(sizes.values())
    return _State(mesh, mconfig, model, graphdef, params, reference, opt_config, shardings, train_state, sizes)


def persistent(config: RLConfig) -> dict:
    """Per-device bytes of the arrays alive the whole run (no compile): the policy's ``params``,
    its ``optimizer`` state, the ``reference``, ``other`` (step, key) and their ``total``."""
    return _state(config).bytes


def plan(config: RLConfig, prompts_per_step: int | None = None) -> dict:
    """Per-device bytes of a ParaRL step of ``config`` (``prompts_per_step`` overrides its own):
    ``persistent`` (:func:`persistent`), ``sampler``, ``reference_forward``, ``policy_forward``
    and ``train_step`` (arguments, outputs, aliased, temporaries, the persistent arguments among
    them, extra), and ``peak`` (see the module docstring)."""
    if prompts_per_step is not None:
        config = dataclasses.replace(config, prompts_per_step=prompts_per_step)
    st = _state(config)
    mesh, model, graphdef, params, reference = st.mesh, st.model, st.graphdef, st.params, st.reference
    task = config.make_task()
    settings, options = config.sampler_settings()
    restrict_text = bool(getattr(settings, "restrict_text", False))
    rng = np.random.default_rng(config.seed)
    steps = task.steps(settings)
    record_steps = draw_steps(rng, config.prompts_per_step, config.group_size, config.slots, steps,
                              "final" if config.estimator == "unigrpo" else config.steps_mode)
    b, s = record_steps.shape
    kept = st.bytes
    reference_dtype = config.reference_dtype or config.param_dtype

    # the rollout sampler on the policy's parameters
    step_fn, args, layout = _sampler_args(config, model, settings, options, record_steps)
    sampler = lower_abstract(graphdef, params, mesh, step_fn, *args).compile()

    # the log-probability forwards on the learner's states, then the train step
    slots = task.max_text_per_step(settings)
    forward, micro = _learner_batch(config, layout, model.config.tokens, record_steps, slots)
    forward = _abstract(forward, row_shardings(forward, mesh))
    logp = jax.jit(lambda p, batch: token_logp(nnx.merge(graphdef, p), batch, layout, restrict_text))
    loss_options = LossOptions(**{f.name: getattr(config, f.name) for f in dataclasses.fields(LossOptions)})
    objective = make_objective(layout, loss_options, restrict_text)
    b_shardings = batch_shardings(micro, mesh)
    with jax.set_mesh(mesh):
        ref_forward = logp.lower(reference, forward).compile()
        policy_forward = ref_forward if reference_dtype == config.param_dtype else logp.lower(params, forward).compile()
        train = jit_train_step(make_train_step(graphdef, st.opt_config, objective), st.shardings, b_shardings)
        train = train.lower(st.train_state, _abstract(micro, b_shardings)).compile()

    out = {"persistent": kept,
           "sampler": _memory(sampler, kept["params"]),
           "reference_forward": _memory(ref_forward, kept["reference"]),
           "policy_forward": _memory(policy_forward, kept["params"]),
           "train_step": _memory(train, kept["params"] + kept["optimizer"] + kept["other"])}
    out["peak"] = kept["total"] + max(out[k]["extra"] for k in PHASES)
    out.update(devices=mesh.size, mesh=dict(mesh.shape), params=st.model_config.num_params(), task=config.task,
               prompts_per_step=config.prompts_per_step, group_size=config.group_size, rollouts=b, s=s,
               grad_accum=config.grad_accum, sequence_length=layout.total, text_steps=steps,
               reference_dtype=reference_dtype)
    return out


def rollout_quantum(config: RLConfig, mesh_shape: dict) -> int:
    """The smallest prompts_per_step step that keeps every batch split evenly: B = p x G rows
    divisible by grad_accum x the batch shards (data x fsdp), so the micro-batches (and the
    sampler's rows) split over the devices instead of being replicated."""
    shards = mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1) * config.grad_accum
    return shards // math.gcd(shards, config.group_size)


def largest_fitting(evaluate: Callable[[int], float], budget: float, known: dict[int, float],
                    max_k: int = 4096) -> int:
    """The largest k >= 1 with ``evaluate(k) <= budget`` (0 if none), for an ``evaluate`` that
    grows about linearly: each probe is the least-squares line's guess inside the current bracket
    (bisection after two guesses that did not close it). ``known``: points already evaluated
    (filled in place with the probes)."""
    guesses = 0
    while True:
        lo = max((k for k, v in known.items() if v <= budget), default=0)
        hi = min((k for k, v in known.items() if v > budget), default=None)
        if hi is not None and hi <= lo + 1 or hi is None and lo >= max_k:
            return lo
        upper = max_k if hi is None else hi - 1
        ks = np.asarray(sorted(known), float)
        if not known:
            guess = 1
        elif len(known) == 1 or guesses >= 2:
            guess = lo * 2 if hi is None else (lo + hi) // 2
        else:
            slope, intercept = np.polyfit(ks, [known[int(k)] for k in ks], 1)
            guess = int((budget - intercept) // slope) if slope > 0 else lo * 2
            guesses += 1
        guess = min(max(guess, lo + 1), upper)
        known[guess] = evaluate(guess)


def _size(x: float) -> str:
    return f"{x / GIB:.2f} GiB" if abs(x) >= 0.1 * GIB else f"{x / 1024 ** 2:.2f} MiB"


def print_plan(config: RLConfig, budgets_gb=(80,), log=print) -> dict:
    """Log the plan at the config's rollouts per step and, for each budget (GB = 1e9 bytes), the
    largest G x prompts_per_step whose estimated peak fits (G fixed; prompts_per_step searched
    over multiples of :func:`rollout_quantum`). Returns the plan."""
    p = plan(config)
    gib = _size
    names = {"sampler": "rollout sampler", "reference_forward": "reference log-prob forward",
             "policy_forward": "policy log-prob forward", "train_step": "train step"}
    per = p["persistent"]
    log(f"{p['params'] / 1e9:.2f}B parameters, task {p['task']}, on {p['devices']} devices, mesh {p['mesh']}; "
        f"{p['prompts_per_step']} prompts x G={p['group_size']} = {p['rollouts']} rollouts per step, "
        + (f"final outputs of {p['text_steps']} steps, one re-masked response per inner update"
           if config.estimator == "unigrpo" else f"s={p['s']} recorded steps of {p['text_steps']}")
        + f" (learner batch {p['rollouts'] * p['s']} sequences of "
        f"{p['sequence_length']} tokens, grad_accum {p['grad_accum']}); params {config.param_dtype}, "
        f"compute {config.dtype}, reference {p['reference_dtype']}, remat {config.remat_policy}")
    log(f"per device, persistent: policy params {gib(per['params'])} + optimizer {gib(per['optimizer'])} + "
        f"reference {gib(per['reference'])} = {gib(per['total'])}")
    for key in PHASES:
        m = p[key]
        log(f"  {names[key]}: arguments {gib(m['arguments'])} (persistent {gib(m['persistent'])}), outputs "
            f"{gib(m['outputs'])} (aliased {gib(m['aliased'])}), temporaries {gib(m['temporaries'])} "
            f"-> extra {gib(m['extra'])}")
    log(f"estimated peak per device: persistent {gib(per['total'])} + max(extras) "
        f"{gib(p['peak'] - per['total'])} = {gib(p['peak'])} (CPU-compiler estimate: an upper bound)")
    if budgets_gb:
        quantum = rollout_quantum(config, p["mesh"])
        known = {}
        if config.prompts_per_step % quantum == 0:
            known[config.prompts_per_step // quantum] = p["peak"]

        def evaluate(k):
            return plan(config, k * quantum)["peak"]

        for budget in budgets_gb:
            k = largest_fitting(evaluate, budget * 1e9, known)
            if k == 0:
                log(f"within {budget:g} GB: no step fits ({quantum} prompts x G={config.group_size} already "
                    f"peaks at {gib(known[1])})")
            else:
                log(f"within {budget:g} GB: at most {k * quantum} prompts x G={config.group_size} = "
                    f"{k * quantum * config.group_size} rollouts per step (peak {gib(known[k])}; "
                    f"prompts_per_step searched in multiples of {quantum})")
    return p

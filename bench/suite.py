"""The GPU benchmark suite: forward, both joint samplers and the SFT train step at real shapes, in
one command that prints ONE table and writes it as JSON and markdown.

    python bench/suite.py                              # on a GPU: real shapes, 235 s on one H200
    python bench/suite.py --only sampler_m,sampler_a --batch 1,8
    python bench/suite.py --smoke --out /tmp/suite     # tiny shapes (the default on CPU): a smoke test
    python bench/suite.py --dry-run                    # lower every program at the GPU shapes, abstract
                                                       # weights: shape bugs without a GPU, no memory

Results go to ``--out`` (default ``bench_results/``) as ``suite.json`` and ``suite.md``; existing
files are not overwritten unless ``--overwrite``. Every measurement catches its own exception and
prints it in its row (e.g. out of memory at B=32 with the step cache), so one failure never stops
the suite. Random weights throughout (speed does not depend on their values); bf16 compute.

Rows (GPU shapes; ``--smoke`` / a CPU backend shrinks every one of them, see ``SMOKE``):

* ``forward``: the jitted ``LLaDAModel`` forward, bf16 weights and compute, B x L = 8 x 2048 tokens,
  no attention mask (cuDNN flash attention on GPU), the LM head on the last 256 positions of each row
  over the full vocabulary (what a sampler's text step needs). Two shapes: ``1b`` (d_model 2048,
  16 layers, 16 heads, MLP 5632, the real 134,656-row vocabulary: 0.82B block parameters + 0.55B
  embedding/head = 1.37B) and ``8b`` (configs/mmada_parallel_m.yaml: d 4096, 32 layers, MLP 12288,
  8.08B). tokens/s = B*L / median seconds per call (``--repeats`` calls after a warm-up); MFU =
  :func:`mmada_jax.flops.forward_flops` (projections, MLP, full bidirectional attention, the head on
  the 256 positions; 2 FLOPs per multiply-add; elementwise work not counted) / seconds / the data-sheet
  dense bf16 peak of the device (:func:`mmada_jax.flops.peak_flops`; H100/H200: 989 TFLOP/s).
* ``sampler_m``: MMaDA-Parallel-M's joint sampler at 8B shape: 1024 input + 1024 output image tokens,
  256 text tokens, text_cfg 2.5 and image_cfg 4.0 (2B rows per forward), ``exact=False`` (float32
  sampling arithmetic: the off-TPU default is float64, which is slow on a GPU and not what a GPU
  user runs). Built as ``bench/sampler.py`` does: ``prepare(...)`` then the program ``run_scan``
  runs (:func:`mmada_jax.sampling.runner.compile_scan` returns it); B = 1, 8, 32, without and with
  the step cache (``cache_interval=4, cache_fraction=0.25``).
* ``sampler_a``: MMaDA-Parallel-A's (configs/mmada_parallel_a.yaml) at 8B shape, prompts from
  ``edit_prompt_from_ids`` (20-token system prompt, 16-token instruction, a 32x32 input image),
  32x32 output grid, 256 text tokens, instruction_cfg 2.5 and image_cfg 4.0 (an image step runs
  the B conditional rows plus 2B unconditional ones), the same B, cache and ``exact=False``.
* ``train``: one SFT step of MMaDA-Parallel-M (configs/mmada_parallel_m_sft.yaml: fp32 master
  weights, bf16 compute, full remat, AdamW, the additive 0/1 padding bias, so XLA attention, not
  flash) on the 8B shape cut to ``--train-layers`` layers (default 8: the 32 layers with fp32
  weights, gradients and Adam moments need ~130 GB before activations), sequences of 2565 tokens
  (1024 + 1024 image codes, 256 + 256 text), ``--train-batch`` rows per step, random data, one
  device. tokens/s = B*2565 / median seconds per step; MFU = B * :func:`mmada_jax.flops.train_flops`
  (3 x the forward with the head on the 1282 output positions: the model FLOPs, the remat
  recomputation not counted) / seconds / peak.

How the sampler rows are timed. The sampler's step schedules depend on the step count, so the
measurement runs the real sampler with a SHORT schedule: -M ``text_steps=8, image_steps=2`` (the
default 128/30 updates the image on 23% of the steps, 2/8 = 25%), -A ``8 / 4`` (default 128/64:
50%; an -A image step costs ~3x a text step, so the share matters). 8 is a multiple of the cache
interval 4: 2 full and 6 cached steps, the default's 1:3. ``s/step`` = device seconds of the whole
compiled scan (``block_until_ready``, the outputs still on the device) / 8; ``s/traj`` =
``s/step`` x the default step count (128) + the seconds to copy the final carry to the host (what
``run_scan`` / ``generate`` also do once per trajectory; the step cache is not part of it), marked ``*`` (extrapolated); ``samples/s`` = B / ``s/traj``. The image-schedule details
(how many tokens each step commits) are not extrapolated, only the per-step cost. A run shorter than
5 s is repeated once and the faster taken. MFU (uncached rows): the trajectory's matmul FLOPs as
``bench/sampler.py`` counts them (-M: every step the 2B-row forward with the text head on both
rows' 256 positions, image steps the image head over 1024 positions x 8192 codes; -A: every step
the B-row forward with the text head over the full vocabulary, image steps also the 2B-row
unconditional forward and the image head on 3B rows).

Memory. ``plan GiB``: the compiled program's ``memory_analysis()`` (arguments + outputs - aliased +
temporaries; the arguments include the weights; available on CPU too, where it is the CPU
compiler's plan). ``peak GiB``: ``device.memory_stats()['peak_bytes_in_use']`` read after the row,
a RUNNING maximum over the process (JAX cannot reset it), so it is exact only for the row that set
it; absent on CPU. ``XLA_PYTHON_CLIENT_MEM_FRACTION`` is set to 0.94 (unless already set) so the
GPU allocator may use ~94% of the device instead of JAX's default 75%. Before compiling a cached
sampler row the suite checks that the step cache fits at all (it is built inside the program and
never crosses to the host: every layer's K/V of every forward row, -M at B=32 ~74 GiB); a row
that cannot fit is skipped with that reason instead of spending a compile on it. Before running a
compiled sampler program it checks that its outputs + temporaries (``memory_analysis``) fit the
free device memory, and skips it with the numbers otherwise; anything else that runs out of memory
fails in its row. ``--dry-run --aot-compile`` compiles every GPU-shaped program on CPU and fills
``plan GiB`` with the CPU compiler's plan (an upper bound: it keeps fp32 copies of bf16 operands).

Compile times are reported per row (``compile s``: lowering + XLA compile). The programs of a row
are compiled ahead of time, ``--compile-workers`` at once in threads (XLA compiles outside the
GIL; ``--compile-workers 1`` compiles one at a time), all before any of them is timed, so nothing
else runs on the device while a row is timed; a sampler row's note says if the timed program had to
be compiled again. After ``--budget-s`` seconds (default 480) no further measurement starts (its
row says so), and the result files are rewritten after every row kind, so a run cut short still
leaves the rows it measured (``meta.complete`` is false until the end).

Measured on one H200 (2026-12-04, jax 0.11.2; bench/results/suite_h200.md): 235 s in all: start-up
and weights ~9 s; forward 20 s; sampler_m 90 s (6 programs compiled 4 at a time, ~26 s each; B=32
uncached runs 8 steps x 3.5 s); sampler_a 91 s (the B=32 cached program skipped: 129 GiB); train
34 s (compile 25 s). Trim with ``--steps 4``, ``--batch 1,8`` or ``--only``.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.94")   # before jax is imported

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmada_jax import ModelConfig, abstract_model, init_model, make_mesh, shard_model  # noqa: E402
from mmada_jax.flops import forward_flops, peak_flops, train_flops  # noqa: E402
from mmada_jax.parallel_a import sampler as sampler_a  # noqa: E402
from mmada_jax.parallel_a.prompts import edit_prompt_from_ids  # noqa: E402
from mmada_jax.parallel_m import inference_prompt  # noqa: E402
from mmada_jax.parallel_m import sampler as sampler_m  # noqa: E402
from mmada_jax.sampling import runner, step_cache  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from forward import timed as timed_calls  # noqa: E402  (median of calls after a warm-up)

ROW_KINDS = ("forward", "sampler_m", "sampler_a", "train")
GIB = 1024 ** 3
M_YAML, A_YAML = ROOT / "configs/mmada_parallel_m.yaml", ROOT / "configs/mmada_parallel_a.yaml"
TINY_YAML, SFT_YAML = ROOT / "configs/mmada_tiny.yaml", ROOT / "configs/mmada_parallel_m_sft.yaml"
DIMOO_TINY = ROOT / "tests/golden/dimoo_tiny"      # the tiny -A token layout (its config.json only)


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Every size the suite uses; ``FULL`` on a GPU, ``SMOKE`` on CPU."""

    name: str
    forward_models: dict            # name -> ModelConfig overrides of the -M config ({}: as is)
    forward_batch: int
    forward_length: int
    head_positions: int
    tiny_tokens: bool               # the small token layouts (mmada_tiny / the dimoo_tiny golden)
    sampler_model: dict             # overrides of the 8B configs for the samplers (smoke: tiny)
    image_side: int                 # output (and input) image: side x side codes
    text_len: int
    instruction_len: int
    system_len: int
    steps_m: tuple[int, int]        # measured (text_steps, image_steps)
    steps_a: tuple[int, int]
    default_m: tuple[int, int] = (128, 30)
    default_a: tuple[int, int] = (128, 64)
    batches: tuple[int, ...] = (1, 8, 32)
    train_model: dict = dataclasses.field(default_factory=dict)
    train_image_tokens: int = 1024
    train_text_len: int = 256


FULL = Shapes(
    name="full",
    forward_models={"1b": dict(d_model=2048, n_layers=16, n_heads=16, n_kv_heads=16, mlp_hidden_size=5632),
                    "8b": {}},
    forward_batch=8, forward_length=2048, head_positions=256, tiny_tokens=False, sampler_model={},
    image_side=32, text_len=256, instruction_len=16, system_len=20, steps_m=(8, 2), steps_a=(8, 4))

SMOKE = Shapes(
    name="smoke",
    forward_models={"1b-smoke": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=192),
                    "8b-smoke": dict(d_model=128, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=384)},
    forward_batch=2, forward_length=64, head_positions=16, tiny_tokens=True,
    sampler_model=dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=192),
    image_side=4, text_len=16, instruction_len=8, system_len=6, steps_m=(4, 1), steps_a=(4, 2), batches=(1, 2),
    train_model=dict(d_model=64, n_heads=4, n_kv_heads=4, mlp_hidden_size=192), train_image_tokens=16,
    train_text_len=16)


# ----------------------------------------------------------------------------- helpers

T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {message}", flush=True)


def short_error(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return text[:600]


def _inference_config(base: ModelConfig, tiny: ModelConfig | None, overrides: dict) -> ModelConfig:
    """``base`` in bf16 without remat (inference), with ``tiny``'s token layout and vocabulary."""
    if tiny is not None:
        base = dataclasses.replace(base, tokens=tiny.tokens, vocab_size=tiny.vocab_size)
    return dataclasses.replace(base, **{**dict(dtype="bfloat16", param_dtype="bfloat16", remat_policy="none"),
                                        **overrides})


def m_config(shapes: Shapes, **overrides) -> ModelConfig:
    """The -M transformer (configs/mmada_parallel_m.yaml; smoke: the mmada_tiny token layout and
    its 576-row vocabulary), bf16, no remat (inference)."""
    tiny = ModelConfig.from_yaml(TINY_YAML) if shapes.tiny_tokens else None
    return _inference_config(ModelConfig.from_yaml(M_YAML), tiny, overrides)


def a_config(shapes: Shapes, **overrides) -> ModelConfig:
    """The -A transformer (configs/mmada_parallel_a.yaml; smoke: the dimoo_tiny golden's token
    layout and 468-row vocabulary), bf16, no remat."""
    tiny = ModelConfig.from_hf_dir(DIMOO_TINY) if shapes.tiny_tokens else None
    return _inference_config(ModelConfig.from_yaml(A_YAML), tiny, overrides)


def describe(c: ModelConfig) -> str:
    n = c.num_params()
    size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"
    return f"d{c.d_model} L{c.n_layers} H{c.n_heads} mlp{c.mlp_hidden_size} V{c.vocab_size} {size}"


def device_model(config: ModelConfig, abstract: bool, seed: int = 0):
    """Random weights built by a jitted init directly on the default device (no host copy of an
    8B model), or the abstract model (ShapeDtypeStruct leaves) for ``--dry-run``."""
    if abstract:
        return abstract_model(config)
    graphdef, _ = nnx.split(abstract_model(config))
    state = jax.jit(lambda: nnx.split(init_model(config, seed))[1])()
    return nnx.merge(graphdef, state)


def tree_bytes(tree) -> int:
    return int(sum(math.prod(np.shape(x)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
                   if hasattr(x, "dtype")))


def plan_bytes(compiled) -> int | None:
    """arguments + outputs - aliased + temporaries of a compiled program (XLA's plan)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend has it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def memory_stats() -> dict:
    try:
        return jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001
        return {}


def free_device_bytes() -> int | None:
    """bytes_limit - bytes_in_use of the default device, or None where unknown (CPU)."""
    s = memory_stats()
    if "bytes_limit" not in s:
        return None
    return int(s["bytes_limit"] - s.get("bytes_in_use", 0))


def new_row(kind: str, name: str, **fields) -> dict:
    row = dict(row=kind, name=name, config=None, batch=None, cache=None, compile_s=None, s_per_step=None,
               s_per_traj=None, samples_per_s=None, tokens_per_s=None, mfu=None, plan_bytes=None,
               peak_bytes=None, extrapolated=False, error=None, note=None)
    row.update(fields)
    return row


def dry_result(ctx, lowered) -> dict:
    """A dry run's job result: the lowered program, compiled with ``--aot-compile`` (XLA's memory
    plan of this backend's compiler: on CPU an upper bound of a GPU's, it keeps fp32 copies)."""
    if not ctx.args.aot_compile:
        return {"lowered": lowered}
    return {"lowered": lowered, "plan_bytes": plan_bytes(lowered.compile())}


def dry_note(ctx, row, res) -> None:
    row["plan_bytes"] = res.get("plan_bytes")
    row["note"] = "lowered and compiled (dry run)" if ctx.args.aot_compile else "lowered (dry run)"


def compile_all(jobs: list, workers: int) -> list:
    """Run ``jobs`` ((label, callable returning a result dict)) with ``workers`` threads; an
    exception is returned as {"error": ...}, never raised."""
    def guarded(labelled):
        label, job = labelled
        t = time.perf_counter()
        try:
            out = job()
        except Exception as e:  # noqa: BLE001 - reported in the row
            traceback.print_exc()
            say(f"  {label}: FAILED after {time.perf_counter() - t:.1f}s: {short_error(e)[:200]}")
            return {"error": short_error(e), "compile_s": time.perf_counter() - t}
        out.setdefault("compile_s", time.perf_counter() - t)
        say(f"  {label}: {'lowered' if 'lowered' in out else 'compiled'} in {out['compile_s']:.1f}s")
        return out
    if workers <= 1 or len(jobs) <= 1:
        return [guarded(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(guarded, jobs))


class Models:
    """The models of the run (random weights on the device), one per config, kept only while a
    later row needs them (the forward's 8B -M model serves the -M sampler)."""

    def __init__(self, abstract: bool):
        self.abstract, self.cache = abstract, {}

    def get(self, config: ModelConfig):
        if config not in self.cache:
            t = time.perf_counter()
            self.cache[config] = device_model(config, self.abstract)
            if not self.abstract:
                jax.block_until_ready(nnx.state(self.cache[config]))
                say(f"  random weights {describe(config)} built on the device in {time.perf_counter() - t:.1f}s")
        return self.cache[config]

    def keep_only(self, *configs: ModelConfig) -> None:
        for config in list(self.cache):
            if config not in configs:
                del self.cache[config]
        gc.collect()


# ----------------------------------------------------------------------------- rows

def forward_rows(ctx) -> list:
    shapes, args = ctx.shapes, ctx.args
    b, length, p = shapes.forward_batch, shapes.forward_length, shapes.head_positions
    rows, jobs = [], []
    for name, overrides in shapes.forward_models.items():
        config = m_config(shapes, **overrides)
        model = ctx.models.get(config)
        graphdef, state = nnx.split(model)
        positions = jnp.arange(length - p, length)

        def forward(state, ids, graphdef=graphdef, positions=positions):
            return nnx.merge(graphdef, state)(ids, positions=positions)

        ids_spec = jax.ShapeDtypeStruct((b, length), jnp.int32)
        row = new_row("forward", name, config=f"{describe(config)}, {b}x{length} tokens, head on {p} pos/row",
                      batch=b)
        rows.append(row)

        def job(forward=forward, state=state, ids_spec=ids_spec):
            lowered = jax.jit(forward).lower(state, ids_spec)
            if ctx.dry:
                return dry_result(ctx, lowered)
            return {"compiled": lowered.compile()}
        jobs.append((row, config, state, job))
    say(f"forward: compiling {len(jobs)} programs")
    results = compile_all([(f"forward {j[0]['name']}", j[-1]) for j in jobs], ctx.workers)
    for (row, config, state, _), res in zip(jobs, results):
        if not compiled_to_run(ctx, row, res):
            continue
        compiled = res["compiled"]
        row["plan_bytes"] = plan_bytes(compiled)
        try:
            ids = jax.device_put(np.random.default_rng(0).integers(0, config.vocab_size, (b, length), dtype=np.int32))
            seconds = timed_calls(lambda: jax.block_until_ready(compiled(state, ids)), args.repeats)
            flops = forward_flops(config, b, length, head_positions=p)
            row.update(s_per_step=seconds, tokens_per_s=b * length / seconds, mfu=flops / seconds / ctx.peak,
                       note=f"median of {args.repeats} calls; {flops / 1e12:.3g} TFLOP/call")
            say(f"  forward {row['name']}: {row['tokens_per_s']:.0f} tok/s, MFU {row['mfu']:.1%}")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            row["error"] = short_error(e)
    return rows


def compiled_to_run(ctx, row: dict, res: dict) -> bool:
    """Record a compile job's result in its row; True when the row goes on to be measured (compiled
    without error, not a dry run)."""
    row["compile_s"] = res["compile_s"]
    if "error" in res:
        row["error"] = res["error"]
        return False
    if ctx.dry:
        dry_note(ctx, row, res)
        return False
    return True


def abstract_prepare(prepare):
    """``prepare()``'s arguments with the initial carry as ShapeDtypeStructs: traced by
    ``jax.eval_shape``, so the step cache's zeros (tens of GB at 8B, B=32) are never allocated.
    Everything else ``prepare`` returns is plain numpy / the PRNG keys passed in."""
    holder = {}

    def carry():
        holder["out"] = prepare()
        return holder["out"][1]
    init = jax.eval_shape(carry)
    out = holder["out"]
    return (out[0], init) + tuple(out[2:])


def sampler_rows(ctx, kind: str) -> list:
    """Rows of one joint sampler (``kind``: sampler_m or sampler_a) for every B, without and with
    the step cache."""
    shapes, args = ctx.shapes, ctx.args
    is_m = kind == "sampler_m"
    config = (m_config if is_m else a_config)(shapes, **shapes.sampler_model)
    model = ctx.models.get(config)
    t = config.tokens
    side, text_len = shapes.image_side, shapes.text_len
    n = side * side
    measured = shapes.steps_m if is_m else shapes.steps_a       # (text steps, image steps) timed
    steps = args.steps or measured[0]
    image_steps = max(1, round(measured[1] * steps / measured[0]))
    default_steps, default_image = shapes.default_m if is_m else shapes.default_a
    module = sampler_m if is_m else sampler_a
    rng = np.random.default_rng(0)
    batches = ctx.batches or shapes.batches
    biggest = max(batches)
    if is_m:
        prompts = [inference_prompt(t, rng.integers(0, t.codebook_size, n),
                                    rng.integers(0, 100, shapes.instruction_len).tolist()) for _ in range(biggest)]
    else:
        system = rng.integers(0, 100, shapes.system_len)
        prompts = [edit_prompt_from_ids(t, system, rng.integers(0, 100, shapes.instruction_len),
                                        rng.integers(0, t.codebook_size, (side, side)), grid=(side, side),
                                        text_len=text_len) for _ in range(biggest)]
    guidance = dict(text_cfg=2.5, image_cfg=4.0) if is_m else dict(instruction_cfg=2.5, image_cfg=4.0)
    weights = tree_bytes(nnx.state(model))

    def prepare_fn(b: int, cached: bool):
        cache = dict(cache_interval=args.cache_interval, cache_fraction=args.cache_fraction) if cached \
            else dict(cache_interval=0)
        keys = jax.random.split(jax.random.key(0), b)
        common = dict(text_len=text_len, text_steps=steps, image_steps=image_steps, seed=keys, exact=False,
                      **guidance, **cache)
        if is_m:
            return lambda: sampler_m.prepare(model, [p[0] for p in prompts[:b]], [p[1] for p in prompts[:b]],
                                             num_image_tokens=n, **common)
        return lambda: sampler_a.prepare(model, prompts[:b], **common)

    rows, jobs = [], []
    for cached in (False, True):
        for b in batches:
            what = (f"{describe(config)}; {n}+{n} image, {text_len} text tokens; {steps} steps "
                    f"({image_steps} image) timed, x{default_steps / steps:g} -> {default_steps}/{default_image}")
            row = new_row(kind, f"{'-M' if is_m else '-A'} B={b}{' cache' if cached else ''}", config=what,
                          batch=b, cache=cached, extrapolated=True)
            rows.append(row)
            try:
                prepared = abstract_prepare(prepare_fn(b, cached))
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                row["error"] = short_error(e)
                continue
            spec = prepared[0].scan_state      # the step cache, built inside the program
            cache_bytes = tree_bytes(jax.eval_shape(lambda: spec(model, b))) if spec is not None else 0
            free = free_device_bytes()
            if cached and free is not None and cache_bytes > free:
                row["error"] = (f"skipped: the step cache holds {cache_bytes / GIB:.1f} GiB > "
                                f"{free / GIB:.1f} GiB free beside the {weights / GIB:.1f} GiB of weights")
                continue

            def job(b=b, cached=cached, prepared=prepared):
                if ctx.dry:
                    return dry_result(ctx, runner.lower_scan(model, module._step, *prepared[:-1]))
                real = prepare_fn(b, cached)()
                runner.compile_scan(model, module._step, *real[:-1])
                return {}
            jobs.append((row, b, cached, job))
    say(f"{kind}: compiling {len(jobs)} programs ({ctx.workers} at a time)")
    results = compile_all([(j[0]["name"], j[-1]) for j in jobs], ctx.workers)
    peak = ctx.peak
    for (row, b, cached, _), res in zip(jobs, results):
        if not compiled_to_run(ctx, row, res):
            continue
        if ctx.over_budget():
            row["error"] = f"skipped: past the time budget ({ctx.args.budget_s:.0f}s)"
            continue
        try:
            measure_sampler(ctx, row, model, module, prepare_fn(b, cached)(), b, cached, is_m, config, n,
                            text_len, steps, image_steps, default_steps, peak)
        except MemoryError as e:
            row["error"] = str(e)
            say(f"  {row['name']}: {e}")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            row["error"] = short_error(e)
        gc.collect()
    return rows


def measure_sampler(ctx, row, model, module, prepared, b, cached, is_m, config, n, text_len, steps, image_steps,
                    default_steps, peak) -> None:
    recompiled = []
    with runner.report_compiles(recompiled.append):
        compiled = runner.compile_scan(model, module._step, *prepared[:-1])   # the program run_scan runs
    row["plan_bytes"] = plan_bytes(compiled)
    free = free_device_bytes()
    try:
        m = compiled.memory_analysis()
        extra = m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes   # the arguments are resident
    except Exception:  # noqa: BLE001
        extra = None
    if free is not None and extra is not None and extra > free:
        raise MemoryError(f"skipped: the program needs {extra / GIB:.1f} GiB of outputs + temporaries beside its "
                          f"arguments, {free / GIB:.1f} GiB free")
    _, _, call_args = runner._arguments(model, *prepared[1:5])          # placed as run_scan places them
    with jax.enable_x64(False):
        out = None
        times = []
        for attempt in range(2):
            out = None
            t = time.perf_counter()
            out = jax.block_until_ready(compiled(*call_args))
            times.append(time.perf_counter() - t)
            if times[-1] >= 5.0:
                break
        t = time.perf_counter()
        runner.to_host(out[0])                                          # final carry -> host, as run_scan
        host_s = time.perf_counter() - t
        del out
    seconds = min(times)
    per_step = seconds / steps
    traj = per_step * default_steps + host_s
    row.update(s_per_step=per_step, s_per_traj=traj, samples_per_s=b / traj)
    note = [f"{len(times)} run(s) of {steps} steps, best {seconds:.3g}s; carry to host {host_s:.2g}s"]
    if recompiled:     # the program compiled ahead was not the one run_scan would run: its compile time is off
        note.append(f"compiled again at run time ({recompiled[0]:.1f}s)")
    if cached:
        refresh = step_cache.refresh_steps(steps, step_cache.CacheSettings(cache_interval=ctx.args.cache_interval))
        note.append(f"{int(refresh.sum())} full + {int((~refresh).sum())} cached steps")
    else:
        c, t = config, config.tokens
        if is_m:
            flops = (steps * forward_flops(c, 2 * b, prepared[0].layout.total, head_positions=text_len)
                     + image_steps * forward_flops(c, 2 * b, 0, head_positions=n, head_columns=t.codebook_size))
        else:
            length = prepared[0].layout.total
            flops = (steps * forward_flops(c, b, length, head_positions=text_len)
                     + image_steps * (forward_flops(c, 2 * b, length)
                                      + forward_flops(c, 3 * b, 0, head_positions=n, head_columns=t.codebook_size)))
        row["mfu"] = flops / seconds / peak
    row["note"] = "; ".join(note)
    mfu = f", MFU {row['mfu']:.1%}" if row["mfu"] is not None else ""
    say(f"  {row['name']}: {per_step:.3f} s/step, {traj:.1f} s/traj*, {row['samples_per_s']:.3f} samples/s{mfu}")


def train_rows(ctx) -> list:
    from mmada_jax.training.config import TrainConfig
    from mmada_jax.training.objectives import DataLayout, abstract_batch, make_objective
    from mmada_jax.training.step import (batch_shardings, jit_train_step, make_train_step, optimizer,
                                         param_shardings, setup_state, state_shardings_for)
    shapes, args = ctx.shapes, ctx.args
    b, n, text_len = args.train_batch or (8 if shapes is FULL else 2), shapes.train_image_tokens, shapes.train_text_len
    config = TrainConfig.from_yaml(SFT_YAML, [f"batch_size={b}", "grad_accum=1", f"text_len={text_len}",
                                              f"remat_policy={args.remat}"])
    layers = args.train_layers or (8 if shapes is FULL else 2)
    base = m_config(shapes, **shapes.train_model)
    model_config = dataclasses.replace(base, n_layers=layers, param_dtype=config.param_dtype, dtype=config.dtype,
                                       remat_policy=config.remat_policy)
    side = math.isqrt(n)
    layout = DataLayout(n, (side, n // side))
    objective = make_objective(config, model_config, layout)
    row = new_row("train", f"SFT {layers} layers", batch=b,
                  config=(f"{describe(model_config)}; params {config.param_dtype}, compute {config.dtype}, remat "
                          f"{config.remat_policy}; {b}x{objective.sequence_length} tokens"))
    mesh = make_mesh({"fsdp": 1}, devices=[jax.devices()[0]])
    try:
        model = device_model(model_config, ctx.dry)
        t = time.perf_counter()
        with jax.set_mesh(mesh):
            if ctx.dry:
                graphdef, state = nnx.split(model)
                params = nnx.to_pure_dict(state)
                shardings = state_shardings_for(params, param_shardings(model, mesh), config, mesh)
                state = {"params": params, "opt_state": jax.eval_shape(optimizer(config).init, params),
                         "step": jax.ShapeDtypeStruct((), np.int32), "key": jax.ShapeDtypeStruct((2,), np.uint32)}
                state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state,
                                     shardings)
            else:
                shard_model(model, mesh)
                graphdef, state, shardings = setup_state(model, config, mesh)
                del model
            spec = abstract_batch(objective, layout, config.text_len, 1, b, config.instruction_budget)
            b_shardings = batch_shardings(spec, mesh)
            step = jit_train_step(make_train_step(graphdef, config, objective), shardings, b_shardings)
            if ctx.dry:
                batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=b_shardings[k]) for k, v in spec.items()}
                res = dry_result(ctx, step.lower(state, batch))
                row.update(compile_s=time.perf_counter() - t)
                dry_note(ctx, row, res)
                return [row]
            batch = jax.device_put(random_batch(spec, model_config, text_len), b_shardings)
            compiled = step.lower(state, batch).compile()
            row.update(compile_s=time.perf_counter() - t, plan_bytes=plan_bytes(compiled))
            say(f"train: compiled in {row['compile_s']:.1f}s")
            holder = {"state": state}
            del state

            def one():
                holder["state"], metrics = compiled(holder["state"], batch)
                jax.block_until_ready(metrics)
                return metrics
            seconds = timed_calls(one, args.repeats)
            metrics = jax.device_get(one())
        flops = b * train_flops(model_config, objective.head_length, objective.sequence_length)
        row.update(s_per_step=seconds, tokens_per_s=b * objective.sequence_length / seconds,
                   mfu=flops / seconds / ctx.peak,
                   note=(f"median of {args.repeats} steps; {flops / 1e12:.3g} TFLOP/step (3x forward, head on "
                         f"{objective.head_length} pos); loss {float(metrics['loss']):.3f}"))
        say(f"  train: {row['tokens_per_s']:.0f} tok/s, MFU {row['mfu']:.1%}")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        row["error"] = short_error(e)
    finally:
        holder = None
        gc.collect()
    return [row]


def random_batch(spec: dict, config: ModelConfig, text_len: int) -> dict:
    """A random SFT batch of ``spec``'s shapes: codes in the codebook, text ids below 100 with
    BOS first, every text full length."""
    rng = np.random.default_rng(0)
    t = config.tokens
    out = {}
    for k, s in spec.items():
        if k.endswith("image_codes"):
            out[k] = rng.integers(0, t.codebook_size, s.shape).astype(np.int32)
        elif k.endswith("_text"):
            ids = rng.integers(0, 100, s.shape).astype(np.int32)
            ids[..., 0], ids[..., -1] = t.bos_id, t.eos_id
            out[k] = ids
        elif k.endswith("_len"):
            out[k] = np.full(s.shape, text_len, np.int32)
        else:
            out[k] = np.ones(s.shape, s.dtype)
    return out


# ----------------------------------------------------------------------------- table

COLUMNS = [("row", "row"), ("name", "name"), ("compile_s", "compile s"), ("s_per_step", "s/step"),
           ("s_per_traj", "s/traj*"), ("samples_per_s", "samples/s"), ("tokens_per_s", "tok/s"), ("mfu", "MFU"),
           ("plan_bytes", "plan GiB"), ("peak_bytes", "peak GiB"), ("error", "error / note")]


def cell(key: str, value, full: bool = False) -> str:
    if value is None:
        return "-"
    if key in ("plan_bytes", "peak_bytes"):
        return f"{value / GIB:.1f}" if value >= GIB else f"{value / GIB:.2g}"
    if key == "mfu":
        return f"{value:.1%}"
    if key in ("compile_s",):
        return f"{value:.1f}"
    if key in ("s_per_step", "s_per_traj", "samples_per_s"):
        return f"{value:.3g}"
    if key == "tokens_per_s":
        return f"{value:,.0f}"
    text = str(value)
    return text if full or len(text) <= 70 else text[:67] + "..."


def table(rows: list, markdown: bool) -> str:
    lines = []
    last = lambda r: f"ERROR {r['error']}" if r["error"] else r["note"]  # noqa: E731
    cells = [[cell(k, last(r) if k == "error" else r[k], markdown) for k, _ in COLUMNS] for r in rows]
    heads = [h for _, h in COLUMNS]
    if markdown:
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("|" + "|".join("---" for _ in heads) + "|")
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    else:
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
        widths[-1] = len(heads[-1])
        fmt = lambda cs: "  ".join(c.ljust(w) if i in (0, 1, len(cs) - 1) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cs, widths)))
        lines.append(fmt(heads))
        lines += [fmt(c) for c in cells]
    return "\n".join(lines)


FOOTNOTES = [
    "s/step: seconds per forward call (forward), per sampler step (samplers: device time of the compiled "
    "scan / steps timed), per optimizer step (train).",
    "s/traj*: extrapolated: s/step x the default step count (-M 128 steps / 30 image updates, -A 128 / 64; the "
    "timed schedule keeps the share of image steps and of cached steps) + the final carry's copy to the host.",
    "MFU: model matmul FLOPs (mmada_jax.flops: full bidirectional attention counted, elementwise work not, the "
    "remat recomputation not) / seconds / the device's data-sheet dense bf16 peak; cached sampler rows: none.",
    "plan GiB: the compiled program's memory_analysis() (arguments incl. weights + outputs - aliased + temporaries);"
    " peak GiB: device peak_bytes_in_use after the row, a running maximum over the whole process.",
    "exact=False for both samplers (float32 sampling arithmetic; the off-TPU default is float64).",
]


# ----------------------------------------------------------------------------- main

class Context:
    def __init__(self, args, shapes: Shapes, dry: bool):
        self.args, self.shapes, self.dry = args, shapes, dry
        self.models = Models(dry)
        self.batches = tuple(int(b) for b in args.batch.split(",")) if args.batch else None
        self.workers = args.compile_workers
        self.peak, self.peak_source = peak_flops("bfloat16")

    def over_budget(self) -> bool:
        return not self.dry and time.perf_counter() - T0 > self.args.budget_s


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_results", help="folder for suite.json and suite.md")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    p.add_argument("--smoke", action="store_true", help="tiny shapes (the default on a CPU backend)")
    p.add_argument("--dry-run", action="store_true",
                   help="lower every program with abstract weights (GPU shapes unless --smoke); no run, no files")
    p.add_argument("--aot-compile", action="store_true",
                   help="with --dry-run: also compile each program and report its memory plan (this backend's)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="after this many seconds the remaining measurements are skipped (their rows say so); "
                        "results are written after every row kind either way")
    p.add_argument("--only", default=",".join(ROW_KINDS), help=f"comma-separated of {', '.join(ROW_KINDS)}")
    p.add_argument("--batch", default="", help="sampler batch sizes, e.g. 1,8,32 (default: 1,8,32; smoke 1,2)")
    p.add_argument("--steps", type=int, default=0,
                   help="sampler steps timed (default 8; smoke 4); keep it a multiple of --cache-interval")
    p.add_argument("--cache-interval", type=int, default=4)
    p.add_argument("--cache-fraction", type=float, default=0.25)
    p.add_argument("--train-layers", type=int, default=0, help="layers of the 8B-shaped train step (default 8)")
    p.add_argument("--train-batch", type=int, default=0, help="rows per train step (default 8; smoke 2)")
    p.add_argument("--remat", default="full", choices=["full", "save_dots", "none"], help="train remat policy")
    p.add_argument("--repeats", type=int, default=0, help="timed calls of forward / train (default 5; smoke 2)")
    p.add_argument("--compile-workers", type=int, default=0,
                   help="programs compiled at once per row (default 4 on GPU, 1 on CPU)")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ROW_KINDS)
    if unknown:
        p.error(f"--only: unknown rows {sorted(unknown)}; choose from {', '.join(ROW_KINDS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    backend = jax.default_backend()
    dry = args.dry_run
    smoke = args.smoke or (backend == "cpu" and not dry)
    shapes = SMOKE if smoke else FULL
    if not smoke and backend == "cpu" and not dry:
        print("refusing to run the GPU shapes on CPU: add --dry-run (lowering only) or --smoke", file=sys.stderr)
        return 2
    args.repeats = args.repeats or (2 if smoke else 5)
    args.compile_workers = args.compile_workers or (1 if backend == "cpu" else 4)
    out = Path(args.out)
    files = [out / "suite.json", out / "suite.md"]
    if not dry:
        existing = [str(f) for f in files if f.exists()]
        if existing and not args.overwrite:
            print(f"refusing to overwrite {', '.join(existing)} (pass --overwrite or another --out)", file=sys.stderr)
            return 2
    ctx = Context(args, shapes, dry)
    dev = jax.devices()[0]
    say(f"device {dev.device_kind} ({backend}, {jax.device_count()} device(s)); jax {jax.__version__}; shapes "
        f"{shapes.name}{' (dry run: lowering only)' if dry else ''}; bf16 peak {ctx.peak / 1e12:.1f} TFLOP/s "
        f"({ctx.peak_source})")
    if args.steps and args.steps % args.cache_interval:
        say(f"note: --steps {args.steps} is not a multiple of --cache-interval {args.cache_interval}")

    rows = []
    only = args.only.split(",")
    for kind in ROW_KINDS:
        if kind not in only:
            continue
        say(f"== {kind}")
        t = time.perf_counter()
        if ctx.over_budget():
            got = [new_row(kind, kind, error=f"skipped: past the time budget ({args.budget_s:.0f}s, --budget-s)")]
        else:
            try:
                got = {"forward": forward_rows, "sampler_m": lambda c: sampler_rows(c, "sampler_m"),
                       "sampler_a": lambda c: sampler_rows(c, "sampler_a"), "train": train_rows}[kind](ctx)
            except Exception as e:  # noqa: BLE001 - a row kind that failed as a whole is one error row
                traceback.print_exc()
                got = [new_row(kind, kind, error=short_error(e))]
        peak = memory_stats().get("peak_bytes_in_use")
        for r in got:
            r["peak_bytes"] = peak
        rows += got
        later = [k for k in ROW_KINDS[ROW_KINDS.index(kind) + 1:] if k in only]
        ctx.models.keep_only(*([m_config(shapes, **shapes.sampler_model)] if "sampler_m" in later else []))
        runner._COMPILED.clear()
        jax.clear_caches()
        gc.collect()
        say(f"== {kind} done in {time.perf_counter() - t:.1f}s")
        if not dry and kind != [k for k in ROW_KINDS if k in only][-1]:
            write(files, ctx, rows, complete=False)       # a run cut short still leaves its rows

    print()
    print(table(rows, markdown=False))
    for note in FOOTNOTES:
        print("  " + note)
    errors = sum(r["error"] is not None for r in rows)
    say(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}; {len(rows)} rows ({errors} with an error "
        f"or skipped); total {time.perf_counter() - T0:.1f}s")
    if not dry:
        write(files, ctx, rows, complete=True)
        say(f"wrote {files[0]} and {files[1]}")
    return 0


def write(files, ctx, rows: list, complete: bool) -> None:
    """suite.json and suite.md of the rows so far (``complete``: the run finished)."""
    dev, total = jax.devices()[0], time.perf_counter() - T0
    meta = dict(device=str(dev), device_kind=dev.device_kind, backend=jax.default_backend(),
                device_count=jax.device_count(), jax=jax.__version__,
                flax=getattr(sys.modules.get("flax"), "__version__", "?"), python=platform.python_version(),
                shapes=ctx.shapes.name, argv=sys.argv[1:], peak_flops_bf16=ctx.peak, peak_source=ctx.peak_source,
                compile_workers=ctx.args.compile_workers, mem_fraction=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
                total_s=total, complete=complete, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    files[0].parent.mkdir(parents=True, exist_ok=True)
    files[0].write_text(json.dumps({"meta": meta, "rows": rows, "footnotes": FOOTNOTES}, indent=1) + "\n")
    md = [f"# bench/suite.py ({ctx.shapes.name} shapes){'' if complete else ' (INCOMPLETE: the run did not finish)'}",
          "", f"{dev.device_kind} ({meta['backend']}), jax {jax.__version__}, bf16 peak {ctx.peak / 1e12:.1f} TFLOP/s "
          f"({ctx.peak_source}); total {total:.0f} s; {meta['finished']}; `python bench/suite.py "
          f"{' '.join(sys.argv[1:])}`", "", table(rows, markdown=True), ""]
    md += [f"* {n}" for n in FOOTNOTES]
    md += ["", "Row configurations:", ""] + [f"* {r['row']} {r['name']}: {r['config']}" for r in rows if r["config"]]
    files[1].write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())

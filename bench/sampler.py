"""Parallel (MMaDA-Parallel-M) sampler speed: per trajectory, per sample across batch sizes, achieved
GFLOP/s against the machine's peak, for the sampler as it was before the speed work (baseline), as it
is, and with the step cache; all in one run.

    python bench/sampler.py                       # d_model 256, 4 layers, 134,656 vocab, B=1,8
    python bench/sampler.py --variants ours,cached --cache-interval 4 --cache-fraction 0.25
    python bench/sampler.py --dtype float32,bfloat16 --variants ours --loop --compile-steps 16,64,256
    python bench/sampler.py --d-model 64 --vocab 576 --batch 1
    python bench/sampler.py --checkpoint demo/parallel_m_shapes_pararl --image-tokens 64 --input-tokens 64 \
        --text-tokens 96 --steps 96 --image-steps 20 --text-cfg 0 --image-cfg 0 --batch 1,25 --variants ours,cached

Variants: ``baseline`` (batched XLA attention, the text decision over the whole vocabulary in one
piece on every text position: what the sampler did before issue 15), ``ours`` (the defaults:
attention one row at a time on CPU, the text decision in cache-sized vocabulary chunks on the
still-masked positions only, ``sampling.common.on_masked``) and ``cached`` (``ours`` with the step
cache, ``--cache-*``). Prints per batch size: seconds per trajectory, samples/s, its ratio to the
first batch size (batching pays off when B=8 gives more samples/s than B=1) and to the baseline and
to ``ours`` at the same B (when measured before it); for uncached variants the trajectory's matmul
GFLOP (mmada_jax.flops: the forward of the cond+uncond rows, the text head every step on the
positions it runs on, the image head on image steps), achieved GFLOP/s and
the share of the dtype's peak, next to a plain 2048^3 matmul's rate measured in the same run (what
these cores reach at all); with --loop the Python-loop time and the loop/scan ratio; with
--compile-steps the compile time of the scan program at those step counts (it must stay flat).
Shape: 256 output + 256 input image tokens, 64 text tokens, 64 steps, 16 image updates, both
guidances on (the issue's yardstick: the PyTorch reference took 51.9 s per trajectory at B=1 on
these 2 cores; ``bench/reference.py`` measures it side by side).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np
from flax import nnx

from mmada_jax import ModelConfig, init_model, load_model
from mmada_jax.flops import forward_flops, peak_flops
from mmada_jax.parallel_m import inference_prompt
from mmada_jax.parallel_m import sampler as par
from mmada_jax.sampling import common, vocab_chunks
from mmada_jax.sampling.common import num_transfer_tokens
from mmada_jax.sampling.runner import lower_scan, run_scan


def build(args, dtype: str = "float32", attention: str = "auto") -> tuple:
    if args.checkpoint:
        model, config = load_model(args.checkpoint, dtype=dtype, attention_impl=attention)
    else:
        base = ModelConfig.from_yaml("configs/mmada_parallel_m.yaml")
        tokens = base.tokens if args.vocab >= 134656 else ModelConfig.from_yaml("configs/mmada_tiny.yaml").tokens
        config = dataclasses.replace(base, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                                     n_kv_heads=args.heads, mlp_hidden_size=3 * args.d_model, vocab_size=args.vocab,
                                     tokens=tokens, dtype=dtype, param_dtype="float32", remat_policy="none",
                                     attention_impl=attention)
        model = init_model(config, seed=0)
    rng = np.random.default_rng(0)
    rows = [inference_prompt(config.tokens, rng.integers(0, config.tokens.codebook_size, args.input_tokens),
                             rng.integers(0, 100, 8).tolist()) for _ in range(max(args.batch))]
    return model, rows


VARIANTS = {   # name -> (attention implementation, vocabulary chunk (None: chunk_size, 0: whole), cached,
               #          text decision on the still-masked positions only)
    "baseline": ("xla", 0, False, False),
    "ours": ("auto", None, False, True),
    "cached": ("auto", None, True, True),
}


def matmul_rate(dtype: str) -> float:
    """GFLOP/s of one 2048^3 matmul: what the cores reach on the friendliest work."""
    import jax.numpy as jnp
    a = jnp.ones((2048, 2048), dtype)
    f = jax.jit(lambda a: a @ a)
    seconds = timed(lambda: jax.block_until_ready(f(a)), repeats=3)
    return 2 * 2048 ** 3 / seconds / 1e9


def settings(args, steps, cached: bool = False):
    cache = dict(cache_interval=args.cache_interval, cache_fraction=args.cache_fraction,
                 cache_warmup=args.cache_warmup) if cached else {}
    return dict(num_image_tokens=args.image_tokens, text_len=args.text_tokens, text_steps=steps,
                image_steps=min(args.image_steps, steps - steps // 4), text_cfg=args.text_cfg,
                image_cfg=args.image_cfg, **cache)


def text_head_positions(args) -> list[int]:
    """Text positions the head runs on at each step: the whole budget, or (masked-only decision)
    the smallest compiled width holding the positions still masked before the step."""
    if not common.MASKED_ONLY:
        return [args.text_tokens] * args.steps
    k = num_transfer_tokens(np.asarray([args.text_tokens - 1]), args.steps)[0]
    masked = (args.text_tokens - 1) - np.concatenate([[0], np.cumsum(k)[:-1]])
    widths = common.decision_widths(args.text_tokens)
    return [min(w for w in widths if w >= m) for m in masked]


def trajectory_flops(model, layout, batch: int, args) -> float:
    """Matmul FLOPs of one batched trajectory (guided: 2B rows; text_cfg != 0: the text head on both)."""
    c, t = model.config, model.config.tokens
    image_steps = settings(args, args.steps)["image_steps"]
    rows = 2 * batch if args.text_cfg or args.image_cfg else batch
    head_rows = 2 * batch if args.text_cfg else batch
    text = sum(forward_flops(c, head_rows, 0, head_positions=p) for p in text_head_positions(args))
    image = forward_flops(c, rows, 0, head_positions=args.image_tokens, head_columns=t.codebook_size)
    return args.steps * forward_flops(c, rows, layout.total) + text + image_steps * image


def python_loop(model, static, init, xs, consts, rnd, exact):
    """The same step function, one jitted dispatch per step."""
    graphdef, state = nnx.split(model)

    def one(state, carry, x, consts, keys, tape):
        m = nnx.merge(graphdef, state)
        return par._step(m, carry, x, consts, type(rnd)(keys=keys, tape=tape), static)
    with jax.enable_x64(exact):
        step = jax.jit(one)
        carry = init
        n = len(xs[0])
        for i in range(n):
            carry, _ = step(state, carry, tuple(a[i] for a in xs), consts, rnd.keys, None)
        return jax.block_until_ready(carry)


def timed(fn, repeats=2):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", help="a trained -M checkpoint instead of random weights (--d-model, --layers, "
                        "--heads, --vocab ignored), e.g. demo/parallel_m_shapes_pararl")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=134656)
    parser.add_argument("--image-tokens", type=int, default=256)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--input-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--image-steps", type=int, default=16)
    parser.add_argument("--text-cfg", type=float, default=2.5)
    parser.add_argument("--image-cfg", type=float, default=4.0)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--dtype", default="float32", help="compute dtypes to measure, e.g. float32,bfloat16")
    parser.add_argument("--variants", default="baseline,ours,cached", help=f"of {sorted(VARIANTS)}")
    parser.add_argument("--cache-interval", type=int, default=4)
    parser.add_argument("--cache-fraction", type=float, default=0.25)
    parser.add_argument("--cache-warmup", type=float, default=0.0)
    parser.add_argument("--loop", action="store_true", help="also time a Python loop of the jitted step")
    parser.add_argument("--compile-steps", default="", help="e.g. 16,64,256: compile time of the scan program")
    args = parser.parse_args()
    args.batch = [int(b) for b in args.batch.split(",")]
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
    what = args.checkpoint or f"d={args.d_model} L={args.layers} V={args.vocab}"
    print(f"backend {jax.default_backend()}; {what}; {args.image_tokens} "
          f"output + {args.input_tokens} input image tokens, {args.text_tokens} text tokens, {args.steps} steps "
          f"({min(args.image_steps, args.steps - args.steps // 4)} image updates), text_cfg {args.text_cfg}, "
          f"image_cfg {args.image_cfg}; cache: every {args.cache_interval} steps a full forward, "
          f"{args.cache_fraction:.0%} recomputed in between, warm-up {args.cache_warmup:.0%}")
    rates = {}
    for dtype in args.dtype.split(","):
        peak, how = peak_flops(dtype)
        attainable = matmul_rate(dtype)
        print(f"\n{dtype}: peak {peak / 1e9:.0f} GFLOP/s ({how}); a 2048^3 matmul runs at "
              f"{attainable:.0f} GFLOP/s here ('of mm')")
        for variant in variants:
            attention, chunk, cached, masked_only = VARIANTS[variant]
            model, rows = build(args, dtype, attention)
            vocab_chunks.VOCAB_CHUNK = None if chunk is None else chunk or args.vocab
            common.MASKED_ONLY = masked_only
            jax.clear_caches()
            print(f"\n{variant} ({model.config.num_params() / 1e6:.1f}M params; attention {attention}, text decision "
                  f"in {'cache-sized' if chunk is None else 'whole-vocabulary' if chunk == 0 else chunk} chunks"
                  f"{' on the masked positions' if masked_only else ''}"
                  f"{', step cache' if cached else ''})")
            print(f"{'B':>3} {'s/traj':>8} {'samples/s':>10} {'vs B=' + str(args.batch[0]):>8} {'vs base':>8} "
                  f"{'vs ours':>8} "
                  f"{'GFLOP':>8} {'GFLOP/s':>8} {'of peak':>8} {'of mm':>6}" + (f" {'loop s':>8} {'loop/scan':>9}" if args.loop else ""))
            first = None
            for b in args.batch:
                cond, uncond = [r[0] for r in rows[:b]], [r[1] for r in rows[:b]]
                prepared = par.prepare(model, cond, uncond, **settings(args, args.steps, cached))[:-1]
                scan_t = timed(lambda: run_scan(model, par._step, *prepared), repeats=1 if b > 1 else 2)
                rate = b / scan_t
                first = first or rate
                rates[dtype, variant, b] = rate
                line = f"{b:3d} {scan_t:8.2f} {rate:10.3f} {rate / first:8.2f} "
                for other in ("baseline", "ours"):
                    ref = rates.get((dtype, other, b)) if other != variant else None
                    line += f"{rate / ref:8.2f} " if ref else f"{'-':>8} "
                if cached:
                    line += f"{'-':>8} {'-':>8} {'-':>8} {'-':>6}"
                else:
                    flops = trajectory_flops(model, prepared[0].layout, b, args)
                    achieved = flops / scan_t / 1e9
                    line += f"{flops / 1e9:8.0f} {achieved:8.1f} {achieved * 1e9 / peak:8.1%} {achieved / attainable:6.0%}"
                if args.loop:
                    loop_t = timed(lambda: python_loop(model, *prepared), repeats=1)
                    line += f" {loop_t:8.2f} {loop_t / scan_t:9.2f}"
                print(line, flush=True)
    vocab_chunks.VOCAB_CHUNK, common.MASKED_ONLY = None, True
    if args.compile_steps:
        model, rows = build(args)
        cond, uncond = rows[0]
        print(f"{'steps':>6} {'compile s':>10} {'vs first':>9}")
        first = None
        for steps in map(int, args.compile_steps.split(",")):
            prepared = par.prepare(model, cond, uncond, **settings(args, steps))[:-1]
            t = time.perf_counter()
            lower_scan(model, par._step, *prepared).compile()
            seconds = time.perf_counter() - t
            first = first or seconds
            print(f"{steps:6d} {seconds:10.2f} {seconds / first:9.2f}", flush=True)


if __name__ == "__main__":
    main()

"""Parallel (MMaDA-Parallel-M) sampler speed: one jitted lax.scan vs a Python loop of the same
jitted step (one dispatch per step), measured in the same run.

    python bench/sampler.py                       # d_model 256, 4 layers, 134,656 vocab, B=1,8
    python bench/sampler.py --d-model 64 --vocab 576 --batch 1

Prints per trajectory wall time, per-step time, the scan/loop ratio, and the compile time of the
scan program at 16/64/256 steps (it must stay flat). Shape of the run: 256 image + 64 text
tokens, a 64-token input image + 8-token instruction, both guidances on, like the DEVELOPERS.md
yardstick (PyTorch reference: 77 s per trajectory at these sizes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np
from flax import nnx

from mmada_jax import ModelConfig, init_model
from mmada_jax.parallel_m import inference_prompt
from mmada_jax.parallel_m import sampler as par
from mmada_jax.sampling.runner import lower_scan, run_scan


def build(args) -> tuple:
    base = ModelConfig.from_yaml("configs/mmada_parallel_m.yaml")
    tokens = base.tokens if args.vocab >= 134656 else ModelConfig.from_yaml("configs/mmada_tiny.yaml").tokens
    config = dataclasses.replace(base, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                                 n_kv_heads=args.heads, mlp_hidden_size=3 * args.d_model, vocab_size=args.vocab,
                                 tokens=tokens, dtype="float32", param_dtype="float32", remat_policy="none")
    model = init_model(config, seed=0)
    rng = np.random.default_rng(0)
    rows = [inference_prompt(config.tokens, rng.integers(0, config.tokens.codebook_size, args.input_tokens),
                             rng.integers(0, 100, 8).tolist()) for _ in range(max(args.batch))]
    return model, rows


def settings(args, steps):
    return dict(num_image_tokens=args.image_tokens, text_len=args.text_tokens, text_steps=steps,
                image_steps=min(args.image_steps, steps - steps // 4), text_cfg=2.5, image_cfg=4.0)


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
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=134656)
    parser.add_argument("--image-tokens", type=int, default=256)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--input-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--image-steps", type=int, default=30)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--compile-steps", default="16,64,256")
    args = parser.parse_args()
    args.batch = [int(b) for b in args.batch.split(",")]
    model, rows = build(args)
    print(f"backend {jax.default_backend()}; model d={args.d_model} L={args.layers} V={args.vocab} "
          f"({model.config.num_params() / 1e6:.1f}M); {args.image_tokens} image + {args.text_tokens} text tokens, "
          f"{args.steps} steps, text_cfg 2.5, image_cfg 4.0")
    print(f"{'B':>3} {'scan s/traj':>12} {'loop s/traj':>12} {'scan ms/step':>13} {'loop ms/step':>13} {'loop/scan':>10}")
    for b in args.batch:
        cond, uncond = [r[0] for r in rows[:b]], [r[1] for r in rows[:b]]
        prepared = par.prepare(model, cond, uncond, **settings(args, args.steps))[:-1]
        scan_t = timed(lambda: run_scan(model, par._step, *prepared))
        loop_t = timed(lambda: python_loop(model, *prepared))
        print(f"{b:3d} {scan_t:12.2f} {loop_t:12.2f} {1e3 * scan_t / args.steps:13.1f} "
              f"{1e3 * loop_t / args.steps:13.1f} {loop_t / scan_t:10.2f}", flush=True)
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

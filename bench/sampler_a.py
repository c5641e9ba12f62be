"""MMaDA-Parallel-A sampler (``parallel_a.generate``) speed against the MMaDA-Parallel-M sampler at the
same sizes, measured in the same run.

    python bench/sampler_a.py                      # d_model 256, 4 layers, real vocabularies, B=1
    python bench/sampler_a.py --d-model 64 --batch 1,4

Both models: the DEVELOPERS.md yardstick shape (256 output image codes, 64 text tokens, 64 steps,
an input image of 64 codes, both guidances). -A's layout adds a NEWLINE per image row (16x16
grid), its text argmax runs over the whole vocabulary (as the reference) and its image steps run
two unconditional rows (three rows in all, against -M's two). Prints seconds per trajectory
(best of 2 after a warm-up; compile excluded) of each sampler without and with the step cache
(``--cache-interval``, ``--cache-fraction``; 0: leave the cached runs out), the -A/-M ratio and each
sampler's speed-up from the cache.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from mmada_jax import ModelConfig, init_model
from mmada_jax import parallel_a, parallel_m
from mmada_jax.parallel_a.prompts import edit_prompt_from_ids
from sampler import timed


def model_of(config_path: str, args):
    base = ModelConfig.from_yaml(config_path)
    config = dataclasses.replace(base, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                                 n_kv_heads=args.heads, mlp_hidden_size=3 * args.d_model, dtype="float32",
                                 param_dtype="float32", remat_policy="none")
    return init_model(config, seed=0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--image-steps", type=int, default=30)
    parser.add_argument("--batch", default="1")
    parser.add_argument("--cache-interval", type=int, default=4)
    parser.add_argument("--cache-fraction", type=float, default=0.25)
    args = parser.parse_args()
    side, text, rng = 16, 64, np.random.default_rng(0)
    m_model = model_of("configs/mmada_parallel_m.yaml", args)
    a_model = model_of("configs/mmada_parallel_a.yaml", args)
    print(f"backend {jax.default_backend()}; d={args.d_model} L={args.layers}; -M vocab {m_model.config.vocab_size}, "
          f"-A vocab {a_model.config.vocab_size}; {side * side} image + {text} text tokens, {args.steps} steps "
          f"({args.image_steps} with image updates), both guidances")
    cache = dict(cache_interval=args.cache_interval, cache_fraction=args.cache_fraction)
    print(f"{'B':>3} {'-M s/traj':>10} {'-A s/traj':>10} {'-A/-M':>6}" + (
        f" {'-M cached':>10} {'-A cached':>10} {'-M gain':>8} {'-A gain':>8}" if args.cache_interval else ""))
    ta = a_model.config.tokens
    for b in map(int, args.batch.split(",")):
        keys = jax.random.split(jax.random.key(0), b)
        rows = [parallel_m.inference_prompt(m_model.config.tokens, rng.integers(0, 8192, 64),
                                            rng.integers(0, 100, 8).tolist()) for _ in range(b)]
        run_m = lambda **kw: parallel_m.generate(m_model, [r[0] for r in rows], [r[1] for r in rows],  # noqa: E731
                                                 num_image_tokens=side * side, text_len=text, text_steps=args.steps,
                                                 image_steps=args.image_steps, text_cfg=2.5, image_cfg=4.0, seed=keys,
                                                 **kw)
        prompts = [edit_prompt_from_ids(ta, rng.integers(0, 100, 16), rng.integers(0, 100, 8),
                                        rng.integers(0, 8192, (8, 8)), grid=(side, side), text_len=text)
                   for _ in range(b)]
        run_a = lambda **kw: parallel_a.generate(a_model, prompts, text_len=text, text_steps=args.steps,  # noqa: E731
                                                 image_steps=args.image_steps, instruction_cfg=2.5, image_cfg=4.0,
                                                 text_temperature=0.0, seed=keys, **kw)
        m, a = timed(run_m), timed(run_a)
        line = f"{b:3d} {m:10.2f} {a:10.2f} {a / m:6.2f}"
        if args.cache_interval:
            mc, ac = timed(lambda: run_m(**cache)), timed(lambda: run_a(**cache))
            line += f" {mc:10.2f} {ac:10.2f} {m / mc:7.2f}x {a / ac:7.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()

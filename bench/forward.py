"""Forward-pass throughput of the jitted transformer, against baselines measured in the same run.

    python bench/forward.py                 # CPU: a few sizes, B=1 and B=8
    python bench/forward.py --sizes 1b --batch 8 --length 2048 --dtype bfloat16   # on a GPU

For each (size, batch) it prints tokens/s of
  * ``jax``        : our jitted forward (full [B, L, V] logits),
  * ``jax-slice``  : the same, head only over the image-code columns (what samplers use),
  * ``torch``      : an eager PyTorch forward of the same architecture and weights (written here
                     from the spec, if torch is installed; the usual way these models run),
and the ratios jax/torch and jax-slice/jax. Timings are medians of ``--repeats`` runs after a
warm-up (compile) call.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmada_jax import ModelConfig, init_model

SIZES = {
    # name: (d_model, n_layers, n_heads, mlp_hidden, vocab)
    "tiny": (64, 3, 4, 192, 576),
    "d256": (256, 4, 4, 768, 134656),     # the DEVELOPERS.md sampler yardstick size
    "d512": (512, 8, 8, 1536, 134656),
    "1b": (2048, 16, 16, 6144, 134656),   # ~1.2B parameters: for a lent GPU
}


def config_for(name: str, dtype: str) -> ModelConfig:
    d, n, h, f, v = SIZES[name]
    base = ModelConfig.from_yaml("configs/mmada_parallel_m.yaml")
    tokens = base.tokens if v >= 134656 else ModelConfig.from_yaml("configs/mmada_tiny.yaml").tokens
    return dataclasses.replace(base, d_model=d, n_layers=n, n_heads=h, n_kv_heads=h, mlp_hidden_size=f,
                               vocab_size=v, tokens=tokens, dtype=dtype, param_dtype=dtype,
                               remat_policy="none", attention_mask_mode="hard")


def timed(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_forward(model, config: ModelConfig):
    """An eager PyTorch forward with the same weights (fp32), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    w = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in
         nnx.to_pure_dict(nnx.state(model, nnx.Param)).items()}
    c = config
    hd = c.head_dim

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.rms_norm_eps) * g

    def rope(x, cos, sin):
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

    @torch.no_grad()
    def forward(ids):
        b, l = ids.shape
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        ang = torch.outer(torch.arange(l, dtype=torch.float32), inv)
        ang = torch.cat([ang, ang], -1)
        cos, sin = ang.cos()[None, None], ang.sin()[None, None]
        x = w["wte"][ids]
        for i in range(c.n_layers):
            h = rms(x, w["attn_norm"][i])
            q, k, v = ((h @ w[n][i]).view(b, l, -1, hd).transpose(1, 2) for n in ("q_proj", "k_proj", "v_proj"))
            a = torch.nn.functional.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v)
            x = x + a.transpose(1, 2).reshape(b, l, -1) @ w["attn_out"][i]
            h = rms(x, w["ff_norm"][i])
            x = x + (torch.nn.functional.silu(h @ w["ff_proj"][i]) * (h @ w["up_proj"][i])) @ w["ff_out"][i]
        return rms(x, w["ln_f"]) @ w["lm_head"]
    return forward


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="tiny,d256,d512")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--length", type=int, default=320, help="tokens per row (256 image + 64 text)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    print(f"backend {jax.default_backend()}, devices {jax.devices()}, dtype {args.dtype}, L={args.length}")
    print(f"{'size':>6} {'params':>8} {'B':>3} {'jax tok/s':>10} {'slice tok/s':>11} {'torch tok/s':>11} "
          f"{'jax/torch':>9} {'slice/full':>10}")
    for name in args.sizes.split(","):
        config = config_for(name, args.dtype)
        model = init_model(config, seed=0)
        t = config.tokens
        cols = (t.image_offset, t.image_offset + t.codebook_size)
        full = nnx.jit(lambda m, x: m(x))
        sliced = nnx.jit(lambda m, x: m(x, vocab_range=cols))
        reference = None if args.no_torch or args.dtype != "float32" else torch_forward(model, config)
        for b in map(int, args.batch.split(",")):
            ids = np.random.default_rng(0).integers(0, config.vocab_size, (b, args.length)).astype(np.int32)
            x = jnp.asarray(ids)
            tokens = b * args.length
            t_full = timed(lambda: full(model, x).block_until_ready(), args.repeats)
            t_slice = timed(lambda: sliced(model, x).block_until_ready(), args.repeats)
            if reference is not None:
                import torch
                tx = torch.from_numpy(ids.astype(np.int64))
                t_torch = timed(lambda: reference(tx), args.repeats)
                torch_rate, ratio = f"{tokens / t_torch:11.0f}", f"{t_torch / t_full:9.2f}"
            else:
                torch_rate, ratio = f"{'-':>11}", f"{'-':>9}"
            print(f"{name:>6} {config.num_params() / 1e6:7.1f}M {b:3d} {tokens / t_full:10.0f} "
                  f"{tokens / t_slice:11.0f} {torch_rate} {ratio} {t_full / t_slice:10.2f}", flush=True)


if __name__ == "__main__":
    main()

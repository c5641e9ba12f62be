"""Encode / decode throughput and peak memory of the image tokenizers (real configs, random
weights) at 512x512, against baselines measured in the same run.

    python bench/vq.py                                # both tokenizers, B=1 and B=8, CPU
    python bench/vq.py --compare-whole                # + B=8 in one pass where the default splits
    python bench/vq.py --tokenizers amused --batch-sizes 1 --torch-batch-sizes   # quicker

For every (tokenizer, B, encode|decode) it prints images/s of our jitted call (median of
``--repeats`` runs of the ahead-of-time compiled program, after ``--warmup`` untimed runs), the
compile time, XLA's memory estimate of the
compiled program (arguments + outputs + temporaries) and the process's peak RSS during the timed
runs (VmHWM, reset before each measurement where the kernel allows it). Baselines and ratios:

* ``vs B=1``: per-image throughput at this B over B=1 (what batching buys; ``micro`` is the
  number of images per network pass inside the call, the tokenizer's default micro-batching
  unless ``--micro-batch`` is given, and the whole batch in the ``--compare-whole`` rows);
* ``jax/torch``: against an eager PyTorch forward of the same architecture and weights, written
  here from the spec with ``torch.nn.functional`` (if torch is installed; the way the references
  run). The same run reports how well the two agree on the real-size model (code agreement,
  max |decoded pixel difference|) - a cross-check beyond the tiny goldens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mmada_jax  # noqa: E402
from mmada_jax.vq.checkpoint import num_params, reference_key  # noqa: E402

CONFIGS = {"magvitv2": ROOT / "configs" / "magvitv2.yaml", "amused": ROOT / "configs" / "amused_vq.yaml"}


# ------------------------------------------------------------------------------- memory

def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def timed(fn, repeats: int):
    """(median seconds of ``repeats`` calls, the last call's result)."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


# ------------------------------------------------------------------------------- torch baseline

def torch_tokenizer(tok):
    """(encode, decode) in eager PyTorch with the tokenizer's weights under the reference names,
    or None without torch. Written from spec mmada_m.md §2 / mmada_a.md §2."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    sd = {}
    for path, var in nnx.to_flat_state(nnx.state(tok.model, nnx.Param)):
        key, perm = reference_key(tuple(str(p) for p in path))
        a = np.asarray(var[...], np.float32)
        sd[key] = torch.from_numpy(np.array(np.transpose(a, np.argsort(perm)) if perm else a))
    c = tok.config
    groups = getattr(c, "norm_groups", None) or c.norm_num_groups

    def conv(name, x, stride=1, pad=None):
        w = sd[name + ".weight"]
        return F.conv2d(x, w, sd[name + ".bias"], stride, w.shape[-1] // 2 if pad is None else pad)

    def gn(name, x):
        return F.group_norm(x, groups, sd[name + ".weight"], sd[name + ".bias"], c.norm_eps)

    def res(name, x, shortcut):
        h = conv(name + ".conv1", F.silu(gn(name + ".norm1", x)))
        h = conv(name + ".conv2", F.silu(gn(name + ".norm2", h)))
        if f"{name}.{shortcut}.weight" in sd:
            x = conv(f"{name}.{shortcut}", x)
        return x + h

    def down(name, x):
        return conv(name, F.pad(x, (0, 1, 0, 1)), stride=2, pad=0)

    def up(name, x):
        return conv(name, F.interpolate(x, scale_factor=2.0, mode="nearest"))

    def attn(name, x):
        b, ch, hh, ww = x.shape
        h = gn(name + ".norm", x)
        q, k, v = (conv(f"{name}.{n}", h).reshape(b, ch, hh * ww) for n in "qkv")
        w = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * ch ** -0.5, dim=2)
        return x + conv(name + ".proj_out", torch.bmm(v, w.permute(0, 2, 1)).reshape(b, ch, hh, ww))

    if c.kind == "magvitv2":
        n = len(c.enc_ch_mult)
        powers = 2 ** torch.arange(c.z_channels - 1, -1, -1)

        def mid(p, x):
            return res(p + ".mid.block_2", attn(p + ".mid.attn_1", res(p + ".mid.block_1", x, "nin_shortcut")),
                       "nin_shortcut")

        @torch.no_grad()
        def encode(x):
            x = conv("encoder.conv_in", x)
            for i in range(n):
                for j in range(c.enc_num_res_blocks[i]):
                    x = res(f"encoder.down.{i}.block.{j}", x, "nin_shortcut")
                if i < n - 1:
                    x = down(f"encoder.down.{i}.downsample.conv", x)
            x = conv("encoder.conv_out", F.silu(gn("encoder.norm_out", mid("encoder", x))))
            z = conv("encoder.quant_conv", x)
            return ((z > 0).long() * powers[None, :, None, None]).sum(1).flatten(1)

        @torch.no_grad()
        def decode(codes, grid):
            bits = (codes[..., None] // powers) % 2
            z = (2.0 * bits - 1.0).float().reshape(codes.shape[0], *grid, -1).permute(0, 3, 1, 2)
            x = mid("decoder", conv("decoder.conv_in", conv("decoder.post_quant_conv", z)))
            for i in reversed(range(n)):
                for j in range(c.dec_num_res_blocks[i]):
                    x = res(f"decoder.up.{i}.block.{j}", x, "nin_shortcut")
                if i > 0:
                    x = up(f"decoder.up.{i}.upsample.conv", x)
            return conv("decoder.conv_out", F.silu(gn("decoder.norm_out", x)))
    else:
        n = len(c.block_out_channels)

        @torch.no_grad()
        def encode(x):
            x = conv("encoder.conv_in", x)
            for i in range(n):
                for j in range(c.layers_per_block):
                    x = res(f"encoder.down_blocks.{i}.resnets.{j}", x, "conv_shortcut")
                if i < n - 1:
                    x = down(f"encoder.down_blocks.{i}.downsamplers.0.conv", x)
            for j in range(2):
                x = res(f"encoder.mid_block.resnets.{j}", x, "conv_shortcut")
            z = conv("quant_conv", conv("encoder.conv_out", F.silu(gn("encoder.conv_norm_out", x))))
            flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            return torch.cdist(flat, sd["quantize.embedding.weight"]).argmin(1).reshape(z.shape[0], -1)

        @torch.no_grad()
        def decode(codes, grid):
            z = sd["quantize.embedding.weight"][codes].reshape(codes.shape[0], *grid, -1).permute(0, 3, 1, 2)
            x = conv("decoder.conv_in", conv("post_quant_conv", z))
            for j in range(2):
                x = res(f"decoder.mid_block.resnets.{j}", x, "conv_shortcut")
            for i in range(n):
                for j in range(c.layers_per_block + 1):
                    x = res(f"decoder.up_blocks.{i}.resnets.{j}", x, "conv_shortcut")
                if i < n - 1:
                    x = up(f"decoder.up_blocks.{i}.upsamplers.0.conv", x)
            return conv("decoder.conv_out", F.silu(gn("decoder.conv_norm_out", x)))
    return encode, decode


# ------------------------------------------------------------------------------- main

def measure(compiled, args, repeats, warmup):
    """Run an AOT-compiled call ``warmup`` times untimed, then ``repeats`` times timed."""
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    reset = reset_peak_rss()
    seconds, out = timed(lambda: jax.block_until_ready(compiled(*args)), repeats)
    return out, seconds, (peak_rss_gb() if reset else float("nan"))


def xla_bytes(compiled) -> float:
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizers", nargs="+", default=["magvitv2", "amused"], choices=sorted(CONFIGS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed runs first (compilation is ahead of time, so none is needed "
                             "for runs of seconds; use 1 for small sizes)")
    parser.add_argument("--micro-batch", nargs=2, type=int, default=None, metavar=("ENCODE", "DECODE"),
                        help="images per network pass (0 = whole batch); default: the tokenizer's")
    parser.add_argument("--compare-whole", action="store_true",
                        help="at B > 1 also time the whole batch in one pass where the default splits it")
    parser.add_argument("--torch-batch-sizes", nargs="*", type=int, default=[1],
                        help="batch sizes for the eager PyTorch baseline ('' for none)")
    args = parser.parse_args(argv)

    print(f"backend {jax.default_backend()}, devices {jax.devices()}, jax {jax.__version__}, "
          f"{args.size}x{args.size}, fp32, repeats {args.repeats}, warm-up runs {args.warmup}, "
          f"{os.cpu_count()} CPU cores", flush=True)
    rows = []
    for name in args.tokenizers:
        t = time.perf_counter()
        tok = mmada_jax.init_vq(CONFIGS[name], seed=0)
        if args.micro_batch is not None:
            tok.micro_batch = tuple(None if v == 0 else v for v in args.micro_batch)
        print(f"\n{name}: {num_params(tok.config) / 1e6:.1f}M params, codebook {tok.codebook_size}, "
              f"random init {time.perf_counter() - t:.1f}s, micro-batch (encode, decode) {tok.micro_batch}",
              flush=True)
        grid = tok.grid(args.size, args.size)
        lo, hi = tok.pixel_range
        rng = np.random.default_rng(0)
        images = jnp.asarray(rng.uniform(lo, hi, (max(args.batch_sizes), args.size, args.size, 3))
                             .astype(np.float32))
        reference = torch_tokenizer(tok) if args.torch_batch_sizes else None
        for b in args.batch_sizes:
            x = images[:b]
            variants = [tok.micro_batch]
            if args.compare_whole and b > 1 and any(m is not None and m < b for m in tok.micro_batch):
                variants.append((None, None))
            codes = pixels = None
            for micro in variants:
                if micro == tok.micro_batch:
                    ops = ("encode", "decode")
                else:                  # the whole-batch comparison: only ops the default splits
                    ops = tuple(op for op, m in zip(("encode", "decode"), tok.micro_batch)
                                if m is not None and m < b)
                for op in ops:
                    m = micro[0] if op == "encode" else micro[1]
                    t = time.perf_counter()
                    if op == "encode":
                        compiled = tok._encode.lower(tok.state, x, m).compile()
                        call_args = (tok.state, x)
                    else:              # grid and micro-batch are static (compiled in)
                        compiled = tok._decode.lower(tok.state, codes, grid, m).compile()
                        call_args = (tok.state, codes)
                    comp = time.perf_counter() - t
                    out, seconds, rss = measure(compiled, call_args, args.repeats, args.warmup)
                    if op == "encode":
                        assert out.shape == (b, grid[0] * grid[1]) and out.dtype == jnp.int32
                        codes = out if codes is None else codes
                    else:
                        assert out.shape == (b, args.size, args.size, 3) and bool(jnp.isfinite(out).all())
                        pixels = out if pixels is None else pixels
                    rows.append(dict(tok=name, b=b, op=op, micro=min(m or b, b), ips=b / seconds,
                                     compile=comp, xla=xla_bytes(compiled), rss=rss,
                                     default=micro == tok.micro_batch))
                    print(f"  B={b} {op} (micro-batch {rows[-1]['micro']}): {b / seconds:.3f} img/s "
                          f"(compile {comp:.1f}s, XLA {rows[-1]['xla']:.2f} GB, peak RSS {rss:.2f} GB)",
                          flush=True)
                if reference is not None and b in args.torch_batch_sizes and micro == tok.micro_batch:
                    import torch
                    tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
                    tc = torch.from_numpy(np.asarray(codes).astype(np.int64))
                    reset = reset_peak_rss()
                    s_te, t_codes = timed(lambda: reference[0](tx), args.repeats)
                    rss_te = peak_rss_gb() if reset else float("nan")
                    reset = reset_peak_rss()
                    s_td, t_pix = timed(lambda: reference[1](tc, grid), args.repeats)
                    rss_td = peak_rss_gb() if reset else float("nan")
                    t_codes, t_pix = t_codes.numpy(), t_pix.numpy().transpose(0, 2, 3, 1)
                    agree = float((t_codes == np.asarray(codes)).mean())
                    diff = float(np.abs(t_pix - np.asarray(pixels)).max())
                    for r in [r for r in rows if r["tok"] == name and r["b"] == b and r["default"]]:
                        r.update(torch=b / (s_te if r["op"] == "encode" else s_td),
                                 torch_rss=rss_te if r["op"] == "encode" else rss_td)
                    print(f"  torch B={b}: encode {b / s_te:.3f} img/s, decode {b / s_td:.3f} img/s; "
                          f"cross-check: codes equal {agree:.4%}, max |decoded diff| {diff:.2e}", flush=True)

    print(f"\n{'tokenizer':>9} {'op':>6} {'B':>2} {'micro':>5} {'img/s':>7} {'s/img':>6} {'vs B=1':>6} "
          f"{'torch img/s':>11} {'jax/torch':>9} {'XLA GB':>6} {'RSS GB':>6} {'torch RSS':>9} {'compile s':>9}")
    for r in rows:
        base = next((q for q in rows if q["tok"] == r["tok"] and q["op"] == r["op"] and q["b"] == 1
                     and q["default"]), None)
        scale = f"{r['ips'] / base['ips']:6.2f}" if base and r["b"] != 1 else f"{'-':>6}"
        tr = f"{r['torch']:11.3f}" if "torch" in r else f"{'-':>11}"
        ratio = f"{r['ips'] / r['torch']:9.2f}" if "torch" in r else f"{'-':>9}"
        trss = f"{r['torch_rss']:9.2f}" if "torch" in r else f"{'-':>9}"
        print(f"{r['tok']:>9} {r['op']:>6} {r['b']:2d} {r['micro']:5d} {r['ips']:7.3f} {1 / r['ips']:6.2f} "
              f"{scale} {tr} {ratio} {r['xla']:6.2f} {r['rss']:6.2f} {trss} {r['compile']:9.1f}")
    print(f"\nprocess peak RSS {peak_rss_gb():.2f} GB (VmHWM since the last reset); micro = images per "
          f"network pass inside the jitted call")


if __name__ == "__main__":
    main()

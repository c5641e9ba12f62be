"""FLOP counts of the transformer and the peak of the machine, for speed reports (GFLOP/s, MFU).

:func:`forward_flops` counts the matmul FLOPs of one forward (2 per multiply-add): the block
projections and MLP, full bidirectional attention (scores and values over every key: masked
diffusion attends both ways, so nothing is halved for causality) and the logits of the head
positions and columns asked for. Elementwise work (norms, RoPE, softmax) is left out, as MFU
conventions do. :func:`peak_flops` is the device's dense peak: a GPU's from a table of known
chips, a CPU's as cores x SIMD lanes x 2 (FMA) x FMA units x clock, read from ``/proc/cpuinfo``
(an upper bound: some cores, e.g. AMD Zen 4, run 512-bit instructions at half rate).
"""

from __future__ import annotations

import os
import re

from .config import ModelConfig

#: dense bf16 / fp32 (TF32 off) peaks in FLOP/s of accelerators we may meet (vendor data sheets)
GPU_PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12),
             "L4": (121e12, 30e12), "TPU v5 lite": (197e12, 197e12 / 2), "TPU v4": (275e12, 275e12 / 2)}


def forward_flops(config: ModelConfig, rows: int, length: int, *, head_positions: int = 0,
                  head_columns: int | None = None) -> float:
    """Matmul FLOPs of one forward of ``rows`` sequences of ``length`` tokens, plus the head on
    ``head_positions`` positions per row over ``head_columns`` columns (default: the vocabulary)."""
    c = config
    d, hd = c.d_model, c.head_dim
    proj = d * (c.n_heads * hd) * 2 + d * (c.n_kv_heads * hd) * 2      # q, o and k, v
    mlp = 3 * d * c.mlp_hidden_size
    per_token = 2 * (proj + mlp) * c.n_layers
    attention = 2 * 2 * length * length * c.n_heads * hd * c.n_layers  # QK^T and AV
    head = 2 * d * (c.vocab_size if head_columns is None else head_columns) * head_positions
    return float(rows * (per_token * length + attention + head))


def _cpu_peak(dtype: str) -> tuple[float, str]:
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return float("nan"), "unknown CPU"
    flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)
    clock = float(mhz.group(1)) * 1e6 if mhz else float("nan")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = lanes * 2 * 2          # lanes x FMA (2 FLOPs) x 2 FMA units
    if dtype == "bfloat16" and "amx_bf16" in flags:
        per_cycle = 1024               # AMX: 16x32 bf16 tile multiply-adds per cycle per core
    elif dtype == "bfloat16" and "avx512_bf16" in flags:
        per_cycle *= 2                 # VDPBF16PS: pairs of bf16 per fp32 lane
    name = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    what = (f"{name.group(1) if name else 'CPU'}: {cores} cores x {per_cycle} FLOP/cycle x {clock / 1e9:.2f} GHz"
            f" ({'AMX' if 'amx_bf16' in flags else 'no AMX'}, {'avx512_bf16' if 'avx512_bf16' in flags else 'no avx512_bf16'})")
    return cores * per_cycle * clock, what


def peak_flops(dtype: str = "float32", device=None) -> tuple[float, str]:
    """(peak FLOP/s, how it was found) of ``device`` (default: JAX's first) for ``dtype``."""
    import jax
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return _cpu_peak(dtype)
    kind = getattr(device, "device_kind", "")
    for name, (bf16, fp32) in GPU_PEAKS.items():
        if name.lower() in kind.lower():
            return (bf16 if dtype == "bfloat16" else fp32), f"{kind} (data sheet)"
    return float("nan"), f"{kind}: peak unknown"

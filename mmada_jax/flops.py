"""FLOP counts of the transformer and the peak of the machine, for speed reports (GFLOP/s, MFU).

:func:`forward_flops` counts the matmul FLOPs of one forward (2 per multiply-add): the block
projections and MLP, full bidirectional attention (scores and values over every key: masked
diffusion attends both ways, so nothing is halved for causality) and the logits of the head
positions and columns asked for; :func:`train_flops` is a training step's (3 x the forward:
forward, and backward for activations and weights). Elementwise work (norms, RoPE, softmax) is
left out, as MFU conventions do. :func:`peak_flops` is the device's dense peak: an accelerator's
from a table of data-sheet figures, a CPU's as cores x SIMD lanes x 2 (FMA) x 2 FMA units x clock,
read from ``/proc/cpuinfo`` (the clock it lists, usually the base clock: cores that boost exceed
it; AMD family 25, Zen 3/4, executes 512-bit instructions as two 256-bit halves, so its lanes
count as 8).
"""

from __future__ import annotations

import os
import re

from .config import ModelConfig

#: dense bf16 peaks (TFLOP/s per chip, vendor data sheets) by a substring of ``device_kind``
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "v5p": 459.0, "v6e": 918.0,
                    "v6 lite": 918.0, "v5e": 197.0, "v5 lite": 197.0, "v4": 275.0}
#: dense fp32 peaks (TF32 off) of the GPUs above
PEAK_FP32_TFLOPS = {"H100": 67.0, "H200": 67.0, "A100": 19.5, "L4": 30.0}


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


def train_flops(config: ModelConfig, head_len: int, total_len: int) -> float:
    """Training FLOPs of one sequence of ``total_len`` tokens whose ``head_len`` positions reach
    the head: 3 x :func:`forward_flops`."""
    return 3.0 * forward_flops(config, 1, total_len, head_positions=head_len)


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
    family = re.search(r"^cpu family\s*:\s*(\d+)", info, re.M)
    if "AuthenticAMD" in info and family and int(family.group(1)) == 25:
        lanes = min(lanes, 8)          # Zen 4: 256-bit data paths ("double-pumped" AVX-512)
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
    table = PEAK_BF16_TFLOPS if dtype == "bfloat16" else PEAK_FP32_TFLOPS
    for name, tflops in table.items():
        if name.lower() in kind.lower():
            return tflops * 1e12, f"{kind} ({dtype}, data sheet)"
    return float("nan"), f"{kind}: {dtype} peak unknown"

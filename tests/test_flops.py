"""FLOP counts against XLA's own count of a compiled forward, and the peak lookup."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from mmada_jax import ModelConfig, init_model
from mmada_jax.flops import forward_flops, peak_flops, train_flops


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("length, head_positions", [(64, 64), (256, 16)])
def test_forward_flops_match_xla_cost_analysis(kv_heads, length, head_positions):
    """One layer (XLA counts a scanned layer body once) and batched attention (``xla``: the CPU's
    row-at-a-time map is a loop too): the matmuls we count are XLA's FLOPs but for the elementwise
    work (norms, softmax, RoPE: < 5% at these sizes)."""
    base = ModelConfig.from_yaml("configs/mmada_tiny.yaml")
    c = dataclasses.replace(base, d_model=128, n_layers=1, n_heads=4, n_kv_heads=kv_heads, mlp_hidden_size=384,
                            dtype="float32", param_dtype="float32", remat_policy="none", attention_impl="xla")
    model = init_model(c, seed=0)
    ids = jnp.zeros((2, length), jnp.int32)
    fn = nnx.jit(lambda m, ids: m(ids, positions=jnp.arange(head_positions)))
    cost = fn.lower(model, ids).compile().cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    ours = forward_flops(c, 2, length, head_positions=head_positions)
    assert 1.0 <= xla / ours < 1.05, (xla, ours)
    assert train_flops(c, head_positions, length) == 1.5 * ours      # 3 x one row's forward


def test_peak_of_this_device_is_finite_or_explained():
    peak, how = peak_flops("float32")
    assert how
    if jax.devices()[0].platform == "cpu" and "flags" in open("/proc/cpuinfo").read():
        assert math.isfinite(peak) and peak > 1e9

"""AOT memory plan: compile the train step for abstract shapes on (fake) devices, no weights.

With ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` a CPU host pretends to have N devices;
the 8B train step is lowered and compiled with ShapeDtypeStruct inputs carrying the mesh
shardings, and ``memory_analysis()`` gives each device's arguments (parameters, optimizer state,
batch), outputs and temporaries. The CPU compiler's numbers are an estimate of a GPU/TPU's: it
also keeps fp32 copies of bf16 operands of matmuls, so treat them as an upper bound.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from ..config import ModelConfig, load_config
from ..model import abstract_model
from ..sharding import make_mesh, parse_mesh
from .config import TrainConfig
from .objectives import DataLayout, abstract_batch, make_objective
from .step import batch_shardings, jit_train_step, make_train_step, optimizer, param_shardings, state_shardings_for


def _model_config(config: TrainConfig) -> ModelConfig:
    base = ModelConfig.from_yaml(config.model_config) if config.model_config else load_config(config.checkpoint)
    return dataclasses.replace(base, param_dtype=config.param_dtype, dtype=config.dtype,
                               remat_policy=config.remat_policy)


#: 512 x 512 images (32 x 32 codes); -A: a system prompt of 20 tokens (the reference's is ~17)
DEFAULT_LAYOUT = DataLayout(1024, (32, 32), tuple(range(20)))


def plan(config: TrainConfig, layout: DataLayout = DEFAULT_LAYOUT, per_device_batch: int | None = None) -> dict:
    """Per-device bytes of the compiled train step (arguments, outputs, temporaries, total)."""
    mesh = make_mesh(parse_mesh(config.mesh) if config.mesh else None)
    model_config = _model_config(config)
    model = abstract_model(model_config)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    p_shardings = param_shardings(model, mesh)
    if per_device_batch is not None:   # the batch axis is split over data x fsdp
        shards = mesh.shape["data"] * mesh.shape["fsdp"]
        config = dataclasses.replace(config, batch_size=per_device_batch * shards * config.grad_accum)
    with jax.set_mesh(mesh):
        shardings = state_shardings_for(params, p_shardings, config, mesh)
        abstract_state = {"params": params, "opt_state": jax.eval_shape(optimizer(config).init, params),
                          "step": jax.ShapeDtypeStruct((), np.int32), "key": jax.ShapeDtypeStruct((2,), np.uint32)}
        abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                      abstract_state, shardings)
        objective = make_objective(config, model_config, layout)
        batch = abstract_batch(objective, layout, config.text_len, config.grad_accum, config.micro_batch,
                               config.instruction_budget, config.base_text_len)
        b_shardings = batch_shardings(batch, mesh)
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=b_shardings[k]) for k, v in batch.items()}
        step = make_train_step(graphdef, config, objective)
        compiled = jit_train_step(step, shardings, b_shardings).lower(abstract_state, batch).compile()
    mem = compiled.memory_analysis()
    out = {"arguments": mem.argument_size_in_bytes, "outputs": mem.output_size_in_bytes,
           "aliased": mem.alias_size_in_bytes, "temporaries": mem.temp_size_in_bytes}
    out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    out.update(devices=jax.device_count(), mesh=dict(mesh.shape), global_batch=config.batch_size,
               params=model_config.num_params(), objective=objective.name, sequence_length=objective.sequence_length)
    return out


def print_plan(config: TrainConfig, per_device_batch: int | None = None, budgets_gb=None, log=print) -> None:
    """Print the plan at ``per_device_batch`` (default 1), and for each GB budget the largest
    per-device batch whose compiled step fits."""
    gb = 1024 ** 3
    batch = per_device_batch or 1
    p = plan(config, per_device_batch=batch)
    log(f"{p['params'] / 1e9:.2f}B parameters on {p['devices']} devices, mesh {p['mesh']}, per-device batch "
        f"{batch} (global {p['global_batch']}), {p['objective']}, text_len {config.text_len} (sequences of "
        f"{p['sequence_length']}), remat {config.remat_policy}, "
        f"params {config.param_dtype}, compute {config.dtype}")
    log(f"per device: arguments {p['arguments'] / gb:.2f} GiB, outputs {p['outputs'] / gb:.2f} GiB "
        f"(aliased {p['aliased'] / gb:.2f}), temporaries {p['temporaries'] / gb:.2f} GiB, total {p['total'] / gb:.2f} GiB")
    for budget in budgets_gb or ():
        lo, hi, best = 1, 64, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            total = plan(config, per_device_batch=mid)["total"]
            if total <= budget * 1e9:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        log(f"largest per-device batch within {budget:g} GB: {best}")

"""The SFT train state and the sharded, jitted train step.

State is a plain pytree ``{params, opt_state, step, key}`` (params as NNX's pure dict), so Orbax
saves and restores it onto any mesh. The step: per micro-batch, the objective
(:mod:`.objectives`, -M or -A) draws its masking/dropout uniforms from ``fold_in(key, step,
micro)``, builds the noised sequences and returns the loss; average the gradients over
micro-batches (a ``lax.scan``);
clip by global norm, AdamW with warmup + cosine; if the loss or the gradient norm is not finite the
update is skipped (parameters and optimizer state unchanged) and reported in the metrics. The loop
stops with :class:`TrainingDiverged` after ``max_skipped_updates`` consecutive skipped updates, and
never saves parameters that are not finite (:func:`params_finite`).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..sharding import logical_to_spec, state_shardings
from .config import TrainConfig
from .objectives import Objective


class TrainingDiverged(ValueError):
    """Training cannot go on: too many consecutive skipped (non-finite) updates, no update applied
    at all, or parameters that are not finite. Raised instead of saving a checkpoint."""


@jax.jit
def params_finite(params) -> jax.Array:
    """True when every parameter is finite (a scalar bool on device)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def lr_schedule(config: TrainConfig) -> Callable[[jax.Array], jax.Array]:
    """Linear warmup to ``lr``, then cosine to ``min_lr_scale * lr`` at ``steps`` (reference)."""
    base, warm, total, floor = config.lr, config.warmup_steps, config.steps, config.min_lr_scale

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warmup = base * step / max(warm, 1)
        progress = jnp.clip((step - warm) / max(total - warm, 1), 0.0, 1.0)
        decay = base * (floor + (1 - floor) * 0.5 * (1 + jnp.cos(math.pi * progress)))
        return jnp.where(step < warm, warmup, decay)
    return schedule


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (decay on every parameter, as the reference)."""
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(lr_schedule(config), b1=config.b1, b2=config.b2, eps=config.adam_eps,
                    weight_decay=config.weight_decay))


def state_shardings_for(params: dict, params_shardings: dict, config: TrainConfig, mesh: Mesh) -> dict:
    """Shardings of a whole train state: params by the logical rules, the optimizer's per-parameter
    moments like their parameters, its scalars and the step/key replicated."""
    replicated = NamedSharding(mesh, P())
    tx = optimizer(config)
    opt = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, params), params_shardings,
                                transform_non_params=lambda _: replicated)
    return {"params": params_shardings, "opt_state": opt, "step": replicated, "key": replicated}


def init_state(params: dict, config: TrainConfig, shardings: dict) -> dict:
    """A fresh train state around ``params`` (pure dict), laid out as ``shardings`` says."""
    opt_state = jax.jit(optimizer(config).init, out_shardings=shardings["opt_state"])(params)
    put = lambda x, s: jax.device_put(x, s)
    return {"params": params, "opt_state": opt_state, "step": put(jnp.zeros((), jnp.int32), shardings["step"]),
            "key": put(jax.random.key_data(jax.random.key(config.seed)), shardings["key"])}


def param_shardings(model, mesh: Mesh) -> dict:
    return nnx.to_pure_dict(state_shardings(nnx.state(model, nnx.Param), mesh))


def setup_state(model, config: TrainConfig, mesh: Mesh):
    """(graphdef, fresh train state, its shardings) for a model already placed on ``mesh``."""
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    with jax.set_mesh(mesh):
        shardings = state_shardings_for(params, param_shardings(model, mesh), config, mesh)
        return graphdef, init_state(params, config, shardings), shardings


def row_shardings(batch: dict, mesh: Mesh) -> dict:
    """Per-row inputs [B, ...] (one forward, no micro-batches): batch axis over (data, fsdp)."""
    def one(x):
        return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (x.ndim - 1), mesh, x.shape))
    return jax.tree.map(one, batch)


def batch_shardings(batch: dict, mesh: Mesh) -> dict:
    """Micro-batched inputs [accum, B, ...]: batch axis over (data, fsdp)."""
    def one(x):
        return NamedSharding(mesh, logical_to_spec((None, "batch") + (None,) * (x.ndim - 2), mesh, x.shape))
    return jax.tree.map(one, batch)


def make_train_step(graphdef, config: TrainConfig, objective: Objective) -> Callable:
    """``step(state, batch) -> (state, metrics)``; ``batch`` holds [grad_accum, micro_batch, ...].
    The metrics are the objective's parts (averaged over micro-batches; SFT's losses, RL's loss,
    KL and clip statistics) plus ``grad_norm``, ``lr`` and ``skipped``."""
    tx = optimizer(config)
    schedule = lr_schedule(config)

    def micro_loss(params, micro, key):
        parts = objective.loss(nnx.merge(graphdef, params), micro, key)
        return parts["loss"], parts

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def step(state, batch):
        params = state["params"]
        base = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
        accum = jax.tree.leaves(batch)[0].shape[0]

        def one(carry, xs):
            i, micro = xs
            (_, parts), grads = grad_fn(params, micro, jax.random.fold_in(base, i))
            total, sums = carry
            return (jax.tree.map(jnp.add, total, grads), jax.tree.map(jnp.add, sums, parts)), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        first = jax.tree.map(lambda x: x[0], batch)
        zero_parts = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                                  jax.eval_shape(lambda: micro_loss(params, first, base)[1]))
        (grads, parts), _ = jax.lax.scan(one, (zeros, zero_parts), (jnp.arange(accum), batch))
        grads = jax.tree.map(lambda g: g / accum, grads)
        parts = {k: v / accum for k, v in parts.items()}
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(parts["loss"]) & jnp.isfinite(grad_norm)
        updates, new_opt = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = {"params": keep(new_params, params), "opt_state": keep(new_opt, state["opt_state"]),
                     "step": state["step"] + 1, "key": state["key"]}
        metrics = dict(parts, grad_norm=grad_norm, lr=schedule(state["step"]),
                       skipped=jnp.logical_not(finite).astype(jnp.int32))
        return new_state, metrics

    return step


def jit_train_step(step_fn, state_shardings: dict, batch_shardings_: dict):
    """The step jitted with explicit shardings and the old state donated."""
    return jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings_),
                   out_shardings=(state_shardings, None), donate_argnums=0)



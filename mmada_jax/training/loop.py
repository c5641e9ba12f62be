"""The SFT training loop: mesh, model, data, state, resume, steps, metrics, checkpoints.

Progress lines (process 0 only) give the step, the loss and its text/image parts, the learning
rate, the gradient norm, tokens/s, MFU (when the device's peak is known) and an ETA; the same
metrics go to ``out_dir/metrics.jsonl``, plotted to ``out_dir/loss.png`` at the end. Checkpoints land in ``out_dir/checkpoints`` every
``save_every`` steps and at the end; a run restarted with the same ``out_dir`` resumes from the
latest one, bit-exactly (same parameters, same data order, same random masks).

Guards: the data (``data_dir``, checked, never written; or synthetic data generated into
``out_dir/synthetic_data``) is opened before the model loads; an update whose loss or gradient
norm is not finite is skipped (the step keeps the old state), and ``max_skipped_updates``
consecutive skips stop the run with :class:`~.step.TrainingDiverged`; a checkpoint is written only
when the parameters are finite and at least one update of this run was applied.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from ..checkpoints import load_model
from ..model import init_model
from ..config import ModelConfig
from ..sharding import make_mesh, parse_mesh
from .checkpoint import RunCheckpoints, abstract_like
from .config import TrainConfig
from .objectives import DataLayout, make_objective, resolve
from ..flops import peak_flops
from .step import TrainingDiverged, batch_shardings, jit_train_step, make_train_step, params_finite, setup_state


def maybe_initialize_distributed(log: Callable[[str], None] | None = None) -> bool:
    """:func:`mmada_jax.distributed.initialize`: ``jax.distributed.initialize()`` when launched
    multi-process (and not yet initialized); True when it is initialized."""
    from .. import distributed
    return distributed.initialize(log)


def check_process_rows(b_shardings: dict, local: dict, mesh) -> None:
    """Several processes: each one's local batch [accum, b, ...] must be its block of the global
    [accum, b * P, ...] (rows ``i * b`` to ``(i + 1) * b`` for process ``i``), which is what the
    data pipeline gives it (``shard="batch"``); a mesh whose batch axes do not split the batch over
    the processes in process order is an error here, not a silently different batch."""
    count, index = jax.process_count(), jax.process_index()
    if count == 1:
        return
    for key, value in local.items():
        b = value.shape[1]
        shape = (value.shape[0], b * count) + value.shape[2:]
        indices = b_shardings[key].addressable_devices_indices_map(shape).values()
        spans = [idx[1].indices(shape[1])[:2] for idx in indices]
        held = (min(s for s, _ in spans), max(e for _, e in spans))
        if held != (index * b, (index + 1) * b):
            raise ValueError(f"mesh {dict(mesh.shape)}: its batch axes (data, fsdp) do not split the batch over the "
                             f"{count} processes in process order (process {index} holds rows {held[0]}-{held[1]} "
                             f"of each micro-batch of {shape[1]}, its data is rows {index * b}-{(index + 1) * b}); "
                             f"give data x fsdp a multiple of the process count (tensor within a host)")


def build_model(config: TrainConfig, mesh):
    overrides = dict(param_dtype=config.param_dtype, dtype=config.dtype, remat_policy=config.remat_policy)
    if config.model_config:
        model_config = dataclasses.replace(ModelConfig.from_yaml(config.model_config), **overrides)
        model = init_model(model_config, seed=config.seed)
        if mesh is not None:
            from ..sharding import shard_model
            shard_model(model, mesh)
        return model, model_config
    return load_model(config.checkpoint, mesh=mesh, **overrides)


def _stack_micro(batch: dict, accum: int, keys) -> dict:
    """The objective's ``keys`` of a batch, [B, ...] -> [accum, B / accum, ...]."""
    return {k: np.asarray(batch[k]).reshape((accum, -1) + np.asarray(batch[k]).shape[1:]) for k in keys}


def _last_good(checkpoints: RunCheckpoints) -> str:
    checkpoints.wait()
    last = checkpoints.latest_step()
    return (f"The last good checkpoint is step {last} in {checkpoints.directory}." if last is not None
            else "No checkpoint was written.")


def _diverged(config: TrainConfig, skipped: list, checkpoints: RunCheckpoints) -> str:
    """The message of a run stopped for skipped updates: which steps, their loss and |g|."""
    first, last = skipped[0][0], skipped[-1][0]
    loss, gnorm = skipped[-1][1], skipped[-1][2]
    why = (f"{len(skipped)} consecutive updates skipped (max_skipped_updates={config.max_skipped_updates})"
           if len(skipped) >= config.max_skipped_updates else
           f"every update of this run was skipped ({len(skipped)} of {len(skipped)})")
    return (f"training diverged: {why}, steps {first}-{last}: the loss ({loss}) or the gradient norm ({gnorm}) "
            f"is not finite; lower lr (now {config.lr}) or check the data. {_last_good(checkpoints)}")


class _Meter:
    def __init__(self, config: TrainConfig, flops_per_seq: float, tokens_per_seq: int, start_step: int, log):
        self.config, self.flops, self.tokens, self.log = config, flops_per_seq, tokens_per_seq, log
        self.start_step, self.t0 = start_step, time.perf_counter()
        self.window_t, self.window_steps = time.perf_counter(), 0
        device = jax.devices()[0]
        peak = config.peak_tflops_per_device * 1e12 if config.peak_tflops_per_device else (
            peak_flops("bfloat16", device)[0] if device.platform != "cpu" else 0.0)   # MFU on accelerators
        self.peak = peak * jax.device_count() if peak == peak else 0.0             # NaN: unknown chip

    def step(self, step: int, metrics: dict) -> dict:
        self.window_steps += 1
        if step % self.config.log_every and step != self.config.steps:
            return {}
        now = time.perf_counter()
        seconds = (now - self.window_t) / self.window_steps
        self.window_t, self.window_steps = now, 0
        seqs = self.config.batch_size
        row = {k: float(v) for k, v in metrics.items()}
        row.update(step=step, seconds_per_step=seconds, tokens_per_s=seqs * self.tokens / seconds,
                   mfu=(seqs * self.flops / seconds / self.peak) if self.peak else None)
        done = step - self.start_step
        eta = (now - self.t0) / max(done, 1) * (self.config.steps - step)
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "-"
        base = "".join(f", {k[:3]} {row[k + '_loss']:.4f}" for k in ("t2i", "mmu") if k + "_loss" in row)
        self.log(f"step {step}/{self.config.steps}  loss {row['loss']:.4f} (text {row['text_loss']:.4f}, "
                 f"image {row['image_loss']:.4f}{base})  lr {row['lr']:.2e}  |g| {row['grad_norm']:.3f}  "
                 f"{row['tokens_per_s']:.0f} tok/s  MFU {mfu}  ETA {eta:.0f}s"
                 + ("  [update skipped: non-finite]" if row["skipped"] else ""))
        return row


def run_sft(config: TrainConfig, *, log: Callable[[str], None] = print, open_data=None) -> list[dict]:
    """Train; returns the logged metric rows. ``open_data(config, tokens, out_dir, log)`` ->
    (grain iterator, dataset metadata) defaults to :func:`mmada_jax.training.data.open_data`."""
    maybe_initialize_distributed(log)
    is_main = jax.process_index() == 0
    say = log if is_main else (lambda *_: None)
    out_dir = Path(config.out_dir)
    if open_data is None:   # check (or generate) the data before the expensive model load
        from .data import open_data as _open, prepare_data
        data_dir = prepare_data(config, out_dir, say)
        open_data = lambda c, tokens, o, lg: _open(c, tokens, o, lg, data_dir=data_dir)  # noqa: E731
    out_dir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(parse_mesh(config.mesh) if config.mesh else None)
    say(f"devices {jax.device_count()} ({jax.devices()[0].device_kind}), processes {jax.process_count()}, "
        f"mesh {dict(mesh.shape)}")

    model, model_config = build_model(config, mesh)
    say(f"model: {model_config.num_params() / 1e6:.1f}M parameters ({model_config.kind}), objective "
        f"{resolve(config, model_config)}, params {config.param_dtype}, compute {config.dtype}, "
        f"remat {config.remat_policy}")
    iterator, meta = open_data(config, model_config.tokens, out_dir, say)
    objective = make_objective(config, model_config, DataLayout.from_metadata(meta))

    graphdef, state, s_shardings = setup_state(model, config, mesh)
    checkpoints = RunCheckpoints(out_dir / "checkpoints", keep=config.keep, save_every=config.save_every)
    start = checkpoints.latest_step()
    if start is not None:
        state = checkpoints.restore(start, abstract_like(state, s_shardings), iterator)
        say(f"resumed from step {start} ({out_dir / 'checkpoints'})")
    start = int(state["step"])

    step_fn = make_train_step(graphdef, config, objective)
    meter = _Meter(config, *objective.flops_and_tokens(model_config), start, say)
    jitted = b_shardings = None
    rows = []
    skipped_run, applied, skipped_total = [], 0, 0   # consecutive skipped steps; this process run's counts
    metrics_file = open(out_dir / "metrics.jsonl", "a") if is_main else None
    try:
        for step in range(start + 1, config.steps + 1):
            local = _stack_micro(next(iterator), config.grad_accum, objective.batch_keys)
            if b_shardings is None:   # every batch has the same shapes; the global one is P local ones
                g_shapes = {k: (v.shape[0], v.shape[1] * jax.process_count()) + v.shape[2:] for k, v in local.items()}
                b_shardings = batch_shardings({k: jax.ShapeDtypeStruct(g_shapes[k], v.dtype)
                                               for k, v in local.items()}, mesh)
                check_process_rows(b_shardings, local, mesh)
            batch = {k: jax.make_array_from_process_local_data(b_shardings[k], v, g_shapes[k])
                     for k, v in local.items()}
            if jitted is None:
                t = time.perf_counter()
                with jax.set_mesh(mesh):
                    jitted = jit_train_step(step_fn, s_shardings, b_shardings).lower(state, batch).compile()
                say(f"compiled the train step in {time.perf_counter() - t:.1f}s")
                meter.window_t = time.perf_counter()
            state, metrics = jitted(state, batch)
            metrics = jax.device_get(metrics)
            row = meter.step(step, metrics)
            if row:
                rows.append(row)
                if metrics_file:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
            if int(metrics["skipped"]):
                skipped_total += 1
                skipped_run.append((step, float(metrics["loss"]), float(metrics["grad_norm"])))
                if len(skipped_run) >= config.max_skipped_updates:
                    raise TrainingDiverged(_diverged(config, skipped_run, checkpoints))
            else:
                skipped_run, applied = [], applied + 1
            if step % config.save_every == 0 or step == config.steps:
                if not applied:   # nothing new to save; a run that never applies an update fails
                    if step == config.steps:
                        raise TrainingDiverged(_diverged(config, skipped_run, checkpoints))
                    say(f"step {step}: no checkpoint (no update of this run was applied yet)")
                    continue
                if not bool(params_finite(state["params"])):
                    raise TrainingDiverged(f"step {step}: the parameters are not finite (an update with a finite "
                                           f"loss and gradient norm overflowed: lr={config.lr} too large?); "
                                           f"not saving them. {_last_good(checkpoints)}")
                checkpoints.save(step, state, iterator, config.to_dict(), force=step == config.steps,
                                 model_config=model_config.to_dict())
    finally:
        checkpoints.close()
        if metrics_file:
            metrics_file.close()
    if is_main and (out_dir / "metrics.jsonl").stat().st_size:
        from ..plots import plot_metrics_file
        plot_metrics_file(out_dir / "metrics.jsonl", out_dir / "loss.png",
                          {"SFT: loss (log scale)": ["loss", "text_loss", "image_loss"]
                           + (["t2i_loss", "mmu_loss"] if config.base_text_len else [])}, log_y=True)
    skipped = f" ({skipped_total} update(s) skipped: non-finite loss or gradient norm)" if skipped_total else ""
    say(f"done: {config.steps} steps{skipped}; checkpoints in {out_dir / 'checkpoints'}, curves in "
        f"{out_dir / 'loss.png'}")
    return rows

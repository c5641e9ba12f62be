"""The ParaRL loop (MMaDA-Parallel-M and -A): rollouts with the live policy, rewards at the recorded steps,
advantages, and updates through the SFT train step.

Each step: draw ``prompts_per_step`` prompts and their s shared step indices from (seed, step);
roll out G samples per prompt with the current policy weights (no copy: the sampler runs on the
train state's arrays), recording only those steps; score text and image at each of them with the
reward, normalise with the calibrated (mu, sigma) (computed once on rollouts of the starting policy,
stored in ``out_dir/reward_stats.json``), compute the advantages per step across each group; one
forward of the frozen reference (the SFT weights, kept apart from the policy) gives its
log-probabilities; ``inner_updates`` optimizer steps of the clipped objective follow
(:mod:`.objective`, the SFT step: micro-batches, clipping, AdamW, the non-finite guard).

Progress (every ``log_every`` steps): raw reward mean and spread at each recorded step slot, the
normalised reward, the loss, KL, clip fraction, |log-ratio|, the sampler/learner log-prob gap,
rollout and learner seconds, ETA; all of it in ``out_dir/metrics.jsonl`` and plotted to
``out_dir/rewards.png``. ``sample_every``: a PNG sheet of the final images and texts of fixed
prompts. ``benchmark``: ``evaluate`` every ``eval_every`` steps and at the end, in
``out_dir/eval/step_N``. Checkpoints (policy, optimizer state, step; the reference is the
``checkpoint``, not copied) every ``save_every`` steps; a rerun with the same ``out_dir`` resumes
bit-exactly, since prompts, step indices and sampling noise depend only on (seed, step).
"""

from __future__ import annotations

import dataclasses
import json
import time
import types
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..app import load_pipeline
from ..app.requests import Request
from ..checkpoints import load_model
from ..evaluation.benchmarks import read_benchmark
from ..sharding import make_mesh, parse_mesh
from ..training.checkpoint import RunCheckpoints, abstract_like
from ..training.step import (TrainingDiverged, batch_shardings, jit_train_step, make_train_step, params_finite,
                             row_shardings)
from ..training.step import setup_state
from . import rewards as R
from .advantages import advantages, group_spread
from .config import TASKS, RLConfig
from .objective import LossOptions, make_objective, rollout_batch
from .remask import remask_batch
from .rollout import Rollouts, check_prompt_len, final_rollout, rollout
from .steps import draw_steps
from .trajectory import step_batch, token_logp
from .unigrpo import unigrpo_batches


PLOT_SMOOTHING = 10     # rewards.png: each curve with its trailing mean over this many steps
KL_PANEL = "KL to the reference (log scale)"      # k3 KL can spike 1000-fold for a step


def load_prompts(config: RLConfig, out_dir: Path, log) -> list[Request]:
    """The prompt pool: ``prompts`` (a JSONL), or ``synthetic`` training prompts of the world
    written once into ``out_dir/prompts`` (reused on resume; t2i / mmu: the world's base-task
    items). A task that needs an input image (-A) keeps only the prompts that have one."""
    if config.prompts is not None:
        path = Path(config.prompts)
    else:
        from ..evaluation.synthetic_judge import write_base_benchmark, write_benchmark
        path = out_dir / "prompts" / "benchmark.jsonl"
        if not path.exists():
            log(f"writing {config.synthetic} synthetic-world training prompts (seed {config.synthetic_seed}) "
                f"to {path.parent}")
            if config.task in ("t2i", "mmu"):
                write_base_benchmark(path.parent, config.synthetic, config.task, seed=config.synthetic_seed)
            else:
                write_benchmark(path.parent, config.synthetic, seed=config.synthetic_seed)   # the SFT data's mix
    requests = [Request(prompt=it.get("instruction") or "", image=str(path.parent / it["input_image"])
                        if it.get("input_image") else None, id=it["id"], item=it) for it in read_benchmark(path)]
    if config.make_task().needs_image:
        kept = [r for r in requests if r.image is not None]
        if not kept:
            raise ValueError(f"{path}: task {config.task} needs prompts with an input image; none has one")
        if len(kept) < len(requests):
            log(f"{config.task} edits: {len(requests) - len(kept)} prompts without an input image left out")
        requests = kept
    return requests


def optimizer_config(config: RLConfig):
    """The fields the SFT optimizer reads, warm-up capped at the run's length. The optimizer
    counts updates: ``inner_updates`` per rollout batch, so its schedule's lengths (``steps``,
    ``warmup_steps``, given in rollout batches) are scaled by it."""
    names = ("lr", "min_lr_scale", "b1", "b2", "adam_eps", "weight_decay", "max_grad_norm", "seed")
    mu = config.inner_updates
    return types.SimpleNamespace(**{n: getattr(config, n) for n in names}, steps=config.steps * mu,
                                 warmup_steps=min(config.warmup_steps, config.steps) * mu)


def reference_leaf_dtype(leaf_dtype, dtype: str):
    """The frozen reference's dtype for a policy leaf: ``dtype`` for floating weights, the leaf's
    own otherwise."""
    return jnp.dtype(dtype) if jnp.issubdtype(leaf_dtype, jnp.inexact) else jnp.dtype(leaf_dtype)


def frozen_reference(params, dtype: str):
    """A copy of the starting policy's weights, floating ones in ``dtype`` (same shardings), kept
    apart from the train state (whose buffers the train step donates)."""
    def one(p):
        target = reference_leaf_dtype(p.dtype, dtype)
        return jnp.copy(p) if p.dtype == target else p.astype(target)
    return jax.tree.map(one, params)


class _Policy:
    """The pipeline's model swapped for the live policy (graphdef + the train state's params)."""

    def __init__(self, pipe, graphdef):
        self.pipe, self.graphdef = pipe, graphdef

    def use(self, params) -> None:
        self.pipe.__dict__["model"] = nnx.merge(self.graphdef, params)


def _rollouts(config, task, pipe, requests, step: int, settings, options, log, mode=None, rng_tag=0) -> Rollouts:
    """Rollout batch ``step`` (``rng_tag`` 1: the calibration's): prompts, shared steps and noise
    from (seed, step, tag) only. UniGRPO's rollouts keep their final outputs only."""
    rng = np.random.default_rng([config.seed, step, rng_tag])
    picks = rng.choice(len(requests), size=min(config.prompts_per_step, len(requests)), replace=False)
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), step), rng_tag),
                            len(picks) * config.group_size)
    chosen = [requests[i] for i in picks]
    if config.estimator == "unigrpo":
        return final_rollout(task, pipe, chosen, config.group_size, keys, settings, options, log, config.prompt_len)
    record = draw_steps(rng, len(picks), config.group_size, config.s, settings.text_steps,
                        mode or config.steps_mode)
    return rollout(task, pipe, chosen, config.group_size, record, keys, settings, options,
                   log, text_view=config.reward_text)


def learner_batches(config, out, tokens, slots: int, step: int) -> list[dict]:
    """The estimator's inputs for a rollout batch ``out``, one per inner update: the recorded
    steps' states (``trajectory``) or seeded re-maskings of the final outputs, one per recorded
    step slot (``random_remask``), the same batch for every update; UniGRPO's scheduled
    re-maskings of the response, a new one for each update (``unigrpo``)."""
    rng = np.random.default_rng([config.seed, step, 2])
    if config.estimator == "unigrpo":
        return unigrpo_batches(out.ids, out.image_codes, out.pads, out.layout, config.inner_updates, tokens.mask_id,
                               tokens.image_offset, rng, remap_image=config.t2i_remap, total=config.unigrpo_timesteps,
                               shared=config.group_size if config.group_masks else 1)
    if config.estimator == "random_remask":
        one = remask_batch(out.ids, out.image_codes, out.pads, out.layout, out.recording.steps.shape[1],
                           tokens.mask_id, tokens.image_offset, rng)
    else:
        one = step_batch(out.recording, out.pads, out.layout, tokens.mask_id, tokens.image_offset, slots)
    return [one] * config.inner_updates


def calibrate_reward(config, task, pipe, requests, reward, settings, options, out_dir: Path, log) -> R.RewardStats:
    path = out_dir / "reward_stats.json"
    what = {"reward": config.reward, "reward_function": config.reward_function, "reward_text": config.reward_text,
            **({"reward_checkpoint": config.reward_checkpoint} if config.reward_checkpoint else {})}
    if path.exists():
        stored = json.loads(path.read_text())
        differs = sorted(k for k, v in what.items() if stored.get(k) != v)
        if differs:
            raise ValueError(f"{path} calibrates another reward ({', '.join(f'{k}={stored.get(k)!r}' for k in differs)}"
                             f"); use another out_dir")
        return R.RewardStats(stored["mu"], stored["sigma"], stored["count"])
    scores, step = [], 0
    while len(scores) * config.prompts_per_step < config.calibration_prompts:    # whole rollout batches
        ro = _rollouts(config, task, pipe, requests, step, settings, options, log, mode="sampled", rng_tag=1)
        scores.append(R.score(reward, ro.requests, ro.texts, ro.images))
        step += 1
    stats = R.calibrate(np.concatenate([s.ravel() for s in scores]))
    model = reward.describe() if hasattr(reward, "describe") else {}     # e.g. which CLIP, resolution, scale
    path.write_text(json.dumps({**stats.to_dict(), **what, "reward_model": model, "steps_mode": "sampled",
                                "prompts": len(scores) * config.prompts_per_step}, indent=2) + "\n")
    log(f"reward calibration on the starting policy: mu {stats.mu:.3f}, sigma {stats.sigma:.3f} "
        f"({stats.count} scores) -> {path}")
    return stats


def run_pararl(config: RLConfig, *, log: Callable[[str], None] = print) -> list[dict]:
    """Run ParaRL; returns the logged metric rows."""
    reward = R.get_reward(config.reward, function=config.reward_function,     # checked before any work
                          checkpoint=config.reward_checkpoint)
    mesh = make_mesh(parse_mesh(config.mesh) if config.mesh else None)
    pipe = load_pipeline(config.checkpoint, config.vq, config.tokenizer, mesh=mesh)
    if pipe.config.kind != TASKS[config.task]:
        raise ValueError(f"{config.checkpoint}: task {config.task} runs checkpoints of kind {TASKS[config.task]!r}; "
                         f"this one is {pipe.config.kind!r}")
    task = config.make_task()
    settings, options = config.sampler_settings()
    restrict_text = bool(getattr(settings, "restrict_text", False))
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = load_prompts(config, out_dir, log)
    if config.prompt_len:
        check_prompt_len(task, pipe, requests, options, config.prompt_len)
    tokens = pipe.config.tokens
    slots = task.max_text_per_step(settings)
    if config.estimator == "unigrpo":
        log(f"UniGRPO ({config.task}): {len(requests)} prompts, {config.prompts_per_step} x G={config.group_size} "
            f"rollouts per step, {config.inner_updates} re-masking(s) of each response per step, reward "
            f"{config.reward}, beta {config.beta}, lr {config.lr}")
    else:
        log(f"ParaRL: {len(requests)} prompts, {config.prompts_per_step} x G={config.group_size} rollouts per step, "
            f"s={config.slots} ({config.steps_mode}) of {settings.text_steps} "
            f"steps, reward {config.reward}, beta {config.beta}, lr {config.lr}")

    model = load_model(pipe.checkpoint, mesh=mesh, param_dtype=config.param_dtype, dtype=config.dtype,
                       remat_policy=config.remat_policy)[0]
    pipe.__dict__["model"] = model
    opt_config = optimizer_config(config)
    graphdef, state, shardings = setup_state(model, opt_config, mesh)
    reference = frozen_reference(state["params"], config.reference_dtype or config.param_dtype)
    policy = _Policy(pipe, graphdef)
    checkpoints = RunCheckpoints(out_dir / "checkpoints", keep=config.keep, save_every=config.save_every)
    start = checkpoints.latest_step() or 0        # rollout batches done (the state counts updates)
    if start:
        state = checkpoints.restore(start, abstract_like(state, shardings))
        log(f"resumed from step {start} ({out_dir / 'checkpoints'})")
    policy.use(state["params"])
    stats = (None if config.estimator == "unigrpo" else     # UniGRPO: raw rewards, group-standardised
             calibrate_reward(config, task, pipe, requests, reward, settings, options, out_dir, log))

    loss_options = LossOptions(**{f.name: getattr(config, f.name) for f in dataclasses.fields(LossOptions)})
    logp_fn = jax.jit(lambda params, batch, layout: token_logp(nnx.merge(graphdef, params), batch, layout,
                                                               restrict_text), static_argnums=2)
    jitted, objective_layout = None, None
    rows, skipped_run, applied = [], [], 0
    metrics_file = open(out_dir / "metrics.jsonl", "a")
    t0 = time.perf_counter()
    try:
        for step in range(start + 1, config.steps + 1):
            t = time.perf_counter()
            ro = _rollouts(config, task, pipe, requests, step, settings, options, log)
            raw = R.score(reward, ro.requests, ro.texts, ro.images)
            normalised = raw if stats is None else R.normalize(raw, stats)
            adv = np.asarray(advantages(config.advantage, normalised, config.group_size))
            spread, flat = group_spread(raw, config.group_size)
            out = ro.output
            batches = learner_batches(config, out, tokens, slots, step)
            rollout_s = time.perf_counter() - t
            t = time.perf_counter()
            updates, gap = [], None
            for i, sb in enumerate(batches):
                if i and sb is batches[0]:            # one batch for every inner update
                    updates.append(updates[0])
                    continue
                forward = {k: sb[k] for k in ("ids", "attention_mask", "position_ids", "text_positions", "targets")}
                # placed rows and the mesh in context: each device computes its rows, not the whole batch
                forward = jax.device_put(forward, row_shardings(forward, mesh))
                with jax.set_mesh(mesh):      # the old policy's (the current weights) before any update
                    ref_logp = np.asarray(logp_fn(reference, forward, out.layout))
                    current = np.asarray(logp_fn(state["params"], forward, out.layout))
                batch = rollout_batch(sb, adv, ref_logp, current if config.inner_updates > 1 else None)
                if i == 0 and config.estimator == "trajectory":   # else the sampler never saw these inputs
                    w = sb["weights"]
                    gap = float(np.abs(current.reshape(w.shape) - sb["sampler_logp"])[w > 0].mean())
                local = micro_batches(batch, config.grad_accum)
                if jitted is None or objective_layout != out.layout:
                    objective_layout = out.layout
                    objective = make_objective(out.layout, loss_options, restrict_text)
                    b_shardings = batch_shardings(local, mesh)
                    with jax.set_mesh(mesh):
                        jitted = jit_train_step(make_train_step(graphdef, opt_config, objective), shardings,
                                                b_shardings)
                updates.append({k: jax.device_put(v, b_shardings[k]) for k, v in local.items()})
            trajectory = gap is not None
            with jax.set_mesh(mesh):         # traced under the mesh: the model's activation constraints apply
                for placed in updates:
                    state, metrics = jitted(state, placed)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            policy.use(state["params"])
            learner_s = time.perf_counter() - t
            if metrics["skipped"]:
                skipped_run.append(step)
                if len(skipped_run) >= config.max_skipped_updates:
                    raise TrainingDiverged(f"steps {skipped_run}: {len(skipped_run)} consecutive non-finite "
                                           f"updates (lr={config.lr})")
            else:
                skipped_run, applied = [], applied + 1
            row = {"step": step, **metrics, "reward_raw_mean": float(raw.mean()), "reward_mean": float(normalised.mean()),
                   **{f"reward_raw_slot{j}": float(raw[:, j].mean()) for j in range(raw.shape[1])},
                   **{f"reward_raw_slot{j}_std": float(raw[:, j].std()) for j in range(raw.shape[1])},
                   "final_reward_raw": float(raw.mean()) if config.estimator == "unigrpo" else
                   float(R.score(reward, ro.requests, [[x] for x in ro.final_texts], ro.final_images[:, None]).mean()),
                   "reward_group_std": spread, "flat_groups": flat,
                   **({"logp_gap": gap} if trajectory else {}), "rollout_s": rollout_s, "learner_s": learner_s}
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            rows.append(row)
            if step % config.log_every == 0 or step == config.steps:
                eta = (time.perf_counter() - t0) / (step - start) * (config.steps - step)
                per_slot = " ".join(f"{row[f'reward_raw_slot{j}']:.3g}±{row[f'reward_raw_slot{j}_std']:.2g}"
                                    for j in range(raw.shape[1]))
                log(f"step {step}/{config.steps}  reward {per_slot} (final {row['final_reward_raw']:.3g}, "
                    f"in-group std {spread:.2g}, flat {flat:.0%})  "
                    f"loss {metrics['loss']:.4f}  kl {metrics['kl']:.2e}  clip {metrics['clip_fraction']:.3f}  "
                    f"|log r| {metrics['abs_log_ratio']:.2e}  {f'gap {gap:.1e}  ' if trajectory else ''}lr {metrics['lr']:.2e}  "
                    f"rollout {rollout_s:.1f}s learner {learner_s:.1f}s  ETA {eta:.0f}s"
                    + ("  [update skipped: non-finite]" if metrics["skipped"] else ""))
            if config.sample_every and step % config.sample_every == 0:
                sample_sheet(config, task, pipe, requests, settings, options, out_dir / f"samples_{step:06d}.png", log)
            if config.benchmark and (config.eval_every and step % config.eval_every == 0 or step == config.steps):
                evaluate_policy(config, task, pipe, settings, options, out_dir / "eval" / f"step_{step}", log)
            if step % config.save_every == 0 or step == config.steps:
                if applied and bool(params_finite(state["params"])):
                    checkpoints.save(step, state, None, config.to_dict(), force=step == config.steps,
                                     model_config=pipe.config.to_dict())
    finally:
        checkpoints.close()
        metrics_file.close()
    if rows:
        from ..plots import plot_metrics_file
        rewards = ({"reward (raw, final outputs)": ["final_reward_raw"]} if config.estimator == "unigrpo" else
                   {"reward (raw, per recorded step slot)": [k for k in rows[-1] if k.startswith("reward_raw_slot")
                                                            and not k.endswith("_std")] + ["final_reward_raw"]})
        plot_metrics_file(out_dir / "metrics.jsonl", out_dir / "rewards.png",
                          {**rewards, KL_PANEL: ["kl"]}, smooth=PLOT_SMOOTHING, log_y={KL_PANEL})
    log(f"done: {config.steps} steps; checkpoints in {out_dir / 'checkpoints'}, curves in {out_dir / 'rewards.png'}")
    return rows


def micro_batches(batch: dict, accum: int) -> dict:
    return {k: v.reshape(accum, v.shape[0] // accum, *v.shape[1:]) for k, v in batch.items()}


def sample_sheet(config, task, pipe, requests, settings, options, path: Path, log, count: int = 4) -> None:
    """Final images and texts of the first ``count`` prompts (seed-fixed noise) as one PNG."""
    from PIL import Image

    from ..app.outputs import side_by_side
    picks = requests[:count]
    ro = final_rollout(task, pipe, picks, 1, jax.random.split(jax.random.key(config.seed), len(picks)), settings,
                       options, log)
    images = ro.final_images if ro.final_images is not None else [None] * len(picks)
    blank = Image.new("RGB", (192, 192), "white")          # text tasks: no image
    panels = [side_by_side(blank if img is None else Image.fromarray(img).resize((192, 192), Image.NEAREST), text,
                           title=req.prompt) for img, text, req in zip(images, ro.final_texts, picks)]
    sheet = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), "white")
    y = 0
    for p in panels:
        sheet.paste(p, (0, y))
        y += p.height
    sheet.save(path)


def evaluate_policy(config, task, pipe, settings, options, out: Path, log) -> dict:
    """``evaluate`` of the live policy on ``config.benchmark`` with the synthetic world's judge
    (``synthetic_base`` for base MMaDA's t2i / mmu: Scene Accuracy)."""
    from ..evaluation import get_judge
    from ..evaluation.benchmarks import load_benchmark
    from ..evaluation.run import evaluate
    bench = load_benchmark(config.benchmark)
    judge = get_judge("synthetic_base" if config.task in ("t2i", "mmu") else "synthetic", root=bench.root)
    return evaluate(bench, out, judge, task, lambda: pipe, settings,
                    options, batch_size=config.rollouts_per_step, limit=config.eval_items or None,
                    run_info={"policy_step": out.name}, log=log)

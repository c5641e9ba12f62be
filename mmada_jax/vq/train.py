"""Training a MAGVIT-v2 image tokenizer on images of the synthetic world (``python -m train.vq``).

The model is :class:`~mmada_jax.vq.magvitv2.MagvitV2`, the module that loads the real
``showlab/magvitv2`` weights, built from a scaled-down :class:`MagvitV2Config`. The objective is
MAGVIT-v2's without its GAN and perceptual terms (the world's flat colours need neither):

* reconstruction: mean squared (``recon_loss: l2``) or absolute (``l1``) error of the decoded
  pixels in [-1, 1]; the decoder sees the quantized latent through the straight-through
  estimator ``z + stop_gradient(sign(z) - z)``;
* LFQ commitment: ``mean((z - stop_gradient(sign(z)))^2)``, weight ``commit_weight``;
* LFQ entropy: with ``p = softmax(2 z . c / entropy_temperature)`` over the ``2^z_channels``
  codes ``c`` in {-1, 1}^z, ``mean_position H(p) - diversity_gamma * H(mean_position p)``
  (confident codes, all codes used), weight ``entropy_weight``;
* quantizer warm-up (not in MAGVIT-v2; 0 = off): for the first ``quantize_warmup_steps`` steps the
  decoder sees the continuous latent instead of its signs (the commitment term already pulls it
  towards +-1). Measured on the shapes world: from scratch, sign bits fixed in the first steps
  encode little more than the background (every gray image had the same 16 codes); an
  autoencoder that first learns what to encode keeps it when the bits take over.

Images are drawn on the fly: step ``s`` renders ``batch_size`` random scenes (0 to 4 shapes, so
every edited output of the world is in distribution) from ``numpy.random.default_rng([seed, s])``,
so the data of a step never depends on what ran before it and a resumed run is bit-exact.

A run folder (``out_dir``) holds ``checkpoints/`` (Orbax: params, optimizer state, step),
``metrics.jsonl``, ``loss.png`` and, when the run is complete, ``vq/``: a converted checkpoint
(``load_vq``, ``convert_torch_weights.py --to-hf``, ``--vq`` of every command) and
``vq/reconstruction.json``: the synthetic judge's image scores of held-out ground-truth images
passed through encode/decode (:func:`reconstruction_scores`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from flax import nnx

from ..config import ConfigError, check_keys
from .config import MagvitV2Config

RECON_LOSSES = ("l2", "l1")
FINAL_DIR = "vq"
RECONSTRUCTION_FILE = "reconstruction.json"


@dataclasses.dataclass(frozen=True)
class VQTrainConfig:
    """A tokenizer training run: the model (``vq:``) and the optimisation (``train:``)."""

    model: MagvitV2Config = MagvitV2Config(enc_ch=32, enc_ch_mult=(1, 1, 2, 2, 4), enc_num_res_blocks=(1,) * 5,
                                           dec_ch=32, dec_ch_mult=(1, 1, 2, 2, 4), dec_num_res_blocks=(1,) * 5,
                                           z_channels=10, resolution=64, image_size=64)
    batch_size: int = 32
    steps: int = 1500
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_scale: float = 0.05
    b1: float = 0.9
    b2: float = 0.99
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    recon_loss: str = "l2"
    commit_weight: float = 0.25
    entropy_weight: float = 0.1
    diversity_gamma: float = 1.0
    entropy_temperature: float = 0.01
    quantize_warmup_steps: int = 0
    seed: int = 0
    out_dir: str = "runs/demo_vq"
    save_every: int = 250
    keep: int = 2
    log_every: int = 25
    eval_items: int = 200          # held-out ground-truth images scored after training (0: skip)
    eval_seed: int = 1_000_003

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name == "model":
                continue
            value, default = getattr(self, f.name), f.default
            if isinstance(default, float) and not isinstance(value, bool) and isinstance(value, (int, str)):
                try:   # YAML 1.1 reads 3e-4 (no dot) as a string
                    object.__setattr__(self, f.name, value := float(value))
                except ValueError:
                    pass
            if type(value) is not type(default):
                raise ConfigError(f"{f.name}={value!r} must be {type(default).__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}={value!r} must be finite")
        positive = ("batch_size", "steps", "save_every", "keep", "log_every", "lr", "entropy_temperature")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key}={getattr(self, key)!r} must be > 0")
        for key in ("warmup_steps", "weight_decay", "commit_weight", "entropy_weight", "diversity_gamma",
                    "seed", "eval_items", "eval_seed", "max_grad_norm"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}={getattr(self, key)!r} must be >= 0")
        if self.warmup_steps > self.steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps} must not exceed steps={self.steps}")
        if not 0 <= self.min_lr_scale <= 1:
            raise ConfigError(f"min_lr_scale={self.min_lr_scale} must lie in [0, 1]")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ConfigError(f"b1={self.b1}, b2={self.b2} must lie in [0, 1)")
        if self.recon_loss not in RECON_LOSSES:
            raise ConfigError(f"recon_loss={self.recon_loss!r}: choose one of {list(RECON_LOSSES)}")
        if self.model.kind != "magvitv2":
            raise ConfigError(f"vq.kind={self.model.kind!r}: only MAGVIT-v2 tokenizers are trained here")
        if self.model.z_channels > 16:
            raise ConfigError(f"vq.z_channels={self.model.z_channels}: the LFQ entropy term enumerates "
                              f"2^z codes; use at most 16")
        side = self.model.image_size
        if side % self.model.downsample:
            raise ConfigError(f"vq.image_size={side} is not a multiple of the downsampling "
                              f"factor {self.model.downsample}")

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "VQTrainConfig":
        """``vq:`` (a MagvitV2Config) and ``train:`` sections; ``key=value`` overrides of ``train``
        keys (``vq.key=value`` for the model). Errors name the file or "command line"."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (IsADirectoryError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read the config: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with 'vq' and 'train' sections")
        data.pop("description", None)
        check_keys(data, {"vq", "train"}, str(path))
        model = dict(data.get("vq") or {})
        train = dict(data.get("train") or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"model"}
        check_keys(train, names, f"{path}: train")
        where = str(path)
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"command line: override {item!r} is not key=value")
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = value
            if key.startswith("vq."):
                model[key[3:]] = parsed
            else:
                check_keys({key: None}, names, "command line")
                train[key] = parsed
            where = f"{path} or the command line"
        model.setdefault("kind", "magvitv2")
        try:
            return cls(model=MagvitV2Config.from_dict(model, f"{path}: vq"), **train)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return {"vq": self.model.to_dict(), "train": out}


# ---------------------------------------------------------------------------- data

def world_images(seed: int, step: int, batch: int, size: int) -> np.ndarray:
    """The uint8 images [batch, size, size, 3] of one training step (random scenes, 0-4 shapes)."""
    from ..data.synthetic import random_scene, render
    rng = np.random.default_rng([int(seed), int(step)])
    return np.stack([render(random_scene(rng, 0, 4), size) for _ in range(batch)])


def to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1] (MAGVIT-v2's range)."""
    return images.astype(np.float32) / 127.5 - 1.0


# ---------------------------------------------------------------------------- objective

def lfq_terms(latent: jax.Array, temperature: float, gamma: float) -> dict[str, jax.Array]:
    """MAGVIT-v2's look-up-free quantization terms of a latent [..., z]: the straight-through
    quantized latent ``quantized``, ``commit`` and ``entropy`` (see the module docstring), and
    the codebook usage entropy ``codebook_entropy`` in bits (for monitoring)."""
    z = latent.shape[-1]
    latent = latent.astype(jnp.float32)
    sign = jnp.where(latent > 0, 1.0, -1.0)
    quantized = latent + jax.lax.stop_gradient(sign - latent)
    commit = jnp.mean((latent - jax.lax.stop_gradient(sign)) ** 2)
    bits = (jnp.arange(2 ** z)[:, None] >> jnp.arange(z - 1, -1, -1)[None, :]) & 1
    codebook = 2.0 * bits.astype(jnp.float32) - 1.0                       # [K, z], bit order as the codes
    logits = (2.0 / temperature) * jnp.einsum("...d,kd->...k", latent, codebook).reshape(-1, 2 ** z)
    logp = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(logp)
    per_sample = jnp.mean(-jnp.sum(p * logp, axis=-1))
    avg = jnp.mean(p, axis=0)
    codebook_entropy = -jnp.sum(avg * jnp.log(jnp.clip(avg, 1e-12)))
    return {"quantized": quantized, "commit": commit, "entropy": per_sample - gamma * codebook_entropy,
            "codebook_entropy": codebook_entropy / jnp.log(2.0)}


def vq_loss(model, pixels: jax.Array, config: VQTrainConfig, step=None) -> tuple[jax.Array, dict]:
    latent = model.latent(pixels)
    terms = lfq_terms(latent, config.entropy_temperature, config.diversity_gamma)
    decoder_in = terms["quantized"]
    if step is not None and config.quantize_warmup_steps > 0:
        decoder_in = jnp.where(step < config.quantize_warmup_steps, latent.astype(jnp.float32), decoder_in)
    recon = model.decoder(decoder_in)
    err = recon - pixels
    recon_loss = jnp.mean(err ** 2) if config.recon_loss == "l2" else jnp.mean(jnp.abs(err))
    loss = recon_loss + config.commit_weight * terms["commit"] + config.entropy_weight * terms["entropy"]
    return loss, {"loss": loss, "recon": recon_loss, "commit": terms["commit"], "entropy": terms["entropy"],
                  "codebook_bits": terms["codebook_entropy"], "max_abs_error": jnp.max(jnp.abs(err))}


def make_optimizer(config: VQTrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, max(config.warmup_steps, 1), config.steps,
                                                  end_value=config.lr * config.min_lr_scale)
    chain = [optax.clip_by_global_norm(config.max_grad_norm)] if config.max_grad_norm > 0 else []
    chain.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay))
    return optax.chain(*chain)


def make_step(graphdef, config: VQTrainConfig, optimizer):
    """The jitted update ``(state, pixels) -> (state, metrics)``; ``state`` = {params, opt, step}.
    A non-finite loss or gradient norm leaves the state unchanged (``skipped`` = 1)."""

    def step(state, pixels):
        def loss_fn(params):
            return vq_loss(nnx.merge(graphdef, params), pixels, config, state["step"])

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        gnorm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"params": params, "opt": opt, "step": state["step"] + 1}
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, {**state, "step": state["step"] + 1})
        return new, {**metrics, "grad_norm": gnorm, "skipped": (~ok).astype(jnp.int32)}

    return jax.jit(step, donate_argnums=(0,))


# ---------------------------------------------------------------------------- evaluation

def reconstruction_scores(tokenizer, num: int, seed: int, size: int) -> dict:
    """The synthetic judge's image metrics (Image Quality, Image Alignment, Image Consistency,
    Output Alignment against the ground-truth text) of ``num`` held-out benchmark items whose
    ground-truth output image went through ``tokenizer`` (encode, decode): what a perfect
    transformer could at best score with this tokenizer. Returns the means and the worst items."""
    from ..data.synthetic import make_example
    from ..evaluation.synthetic_judge import SyntheticJudge, benchmark_item
    judge = SyntheticJudge()
    examples = [make_example(seed, i, size) for i in range(num)]
    scores = []
    for start in range(0, num, 32):
        chunk = examples[start:start + 32]
        images = np.stack([ex.output_image for ex in chunk])
        recon = tokenizer.to_uint8(tokenizer.decode(tokenizer.encode(images)))
        for ex, img in zip(chunk, recon):
            item = benchmark_item(ex)
            if ex.input_image is not None:
                item["input_image"] = ex.input_image
            scores.append((ex.id, judge.score(item, ex.reasoning, img)))
    metrics = ("Image Quality", "Image Alignment", "Image Consistency", "Output Alignment")
    means = {}
    for m in metrics:
        vals = [s["scores"][m] for _, s in scores if s["scores"].get(m) is not None]
        means[m] = float(np.mean(vals)) if vals else None
    worst = sorted(scores, key=lambda t: min(v for k, v in t[1]["scores"].items() if k in metrics and v is not None))[:5]
    return {"items": num, "seed": seed, "means": means,
            "worst": [{"id": i, "scores": s["scores"], "reasons": s.get("reasons")} for i, s in worst]}


# ---------------------------------------------------------------------------- the run

def _export(model, config: VQTrainConfig, out_dir: Path, log) -> Path:
    """Write ``out_dir/vq`` (staged: a complete folder or none) with its reconstruction scores."""
    from ..checkpoints import save_vq
    from .base import MagvitV2Tokenizer
    final = out_dir / FINAL_DIR
    stage = out_dir / (FINAL_DIR + ".partial")
    if stage.exists():
        shutil.rmtree(stage)   # our own leftover of an interrupted export
    tokenizer = MagvitV2Tokenizer(model)
    save_vq(tokenizer, stage)
    if config.eval_items:
        t = time.perf_counter()
        rec = reconstruction_scores(tokenizer, config.eval_items, config.eval_seed, config.image_size)
        (stage / RECONSTRUCTION_FILE).write_text(json.dumps(rec, indent=1) + "\n")
        log(f"reconstruction of {config.eval_items} held-out images (judge image metrics): "
            + ", ".join(f"{k} {v:.1f}" for k, v in rec["means"].items() if v is not None)
            + f"  [{time.perf_counter() - t:.0f}s]")
    if final.exists():
        shutil.rmtree(final)   # the export of an earlier completion of this same run
    stage.rename(final)
    return final


def run_vq_training(config: VQTrainConfig, *, log: Callable[[str], None] = print) -> list[dict]:
    """Train (resuming from ``out_dir/checkpoints``), export ``out_dir/vq``; returns the logged rows."""
    from ..plots import plot_metrics_file
    from ..training.checkpoint import RunCheckpoints, abstract_like
    from .checkpoint import build_model, num_params

    out_dir = Path(config.out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    run_config = out_dir / "config.yaml"
    if run_config.exists():
        old = yaml.safe_load(run_config.read_text())
        if old.get("vq") != config.to_dict()["vq"]:
            raise ConfigError(f"{out_dir} holds a run of another model ({run_config}); use another out_dir")
    run_config.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    model = build_model(config.model, seed=config.seed)
    graphdef, params = nnx.split(model)
    log(f"MAGVIT-v2: {num_params(config.model) / 1e6:.2f}M parameters, {config.image_size}px images -> "
        f"{(config.image_size // config.model.downsample) ** 2} codes of {config.model.z_channels} bits")
    optimizer = make_optimizer(config)
    state = {"params": params, "opt": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
    checkpoints = RunCheckpoints(out_dir / "checkpoints", keep=config.keep, save_every=config.save_every)
    start = checkpoints.latest_step()
    if start is not None:
        shardings = jax.tree.map(lambda x: x.sharding, state)
        state = checkpoints.restore(start, abstract_like(state, shardings))
        log(f"resumed from step {start} ({out_dir / 'checkpoints'})")
    start = int(state["step"])
    step_fn = make_step(graphdef, config, optimizer)
    rows, t0, window, skipped = [], time.perf_counter(), time.perf_counter(), 0
    metrics_path = out_dir / "metrics.jsonl"
    try:
        with open(metrics_path, "a") as metrics_file:
            for step in range(start + 1, config.steps + 1):
                pixels = jnp.asarray(to_pixels(world_images(config.seed, step, config.batch_size, config.image_size)))
                state, metrics = step_fn(state, pixels)
                if step % config.log_every == 0 or step == config.steps:
                    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    now = time.perf_counter()
                    rate = config.log_every / (now - window)
                    window = now
                    eta = (now - t0) / (step - start) * (config.steps - step)
                    row = {"step": step, **m, "steps_per_s": rate}
                    rows.append(row)
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    log(f"step {step}/{config.steps}  loss {m['loss']:.4f} (recon {m['recon']:.4f}, commit "
                        f"{m['commit']:.4f}, entropy {m['entropy']:.3f})  codebook {m['codebook_bits']:.2f} bits  "
                        f"|g| {m['grad_norm']:.3f}  {rate:.2f} steps/s  ETA {eta:.0f}s")
                    skipped = skipped + 1 if m["skipped"] else 0
                    if skipped >= 3:
                        raise FloatingPointError(f"step {step}: three logged updates in a row had a non-finite loss "
                                                 f"or gradient; lower lr (now {config.lr})")
                if step % config.save_every == 0 or step == config.steps:
                    checkpoints.save(step, state, config=config.to_dict(), force=step == config.steps)
    finally:
        checkpoints.close()
    if metrics_path.exists() and metrics_path.stat().st_size:
        plot_metrics_file(metrics_path, out_dir / "loss.png",
                          {"MAGVIT-v2 training: loss": ["loss", "recon"], "LFQ terms": ["commit", "entropy"]})
    model = nnx.merge(graphdef, state["params"])
    final = _export(model, config, out_dir, log)
    log(f"done: {config.steps} steps; tokenizer in {final} (load_vq / --vq), curves in {out_dir / 'loss.png'}")
    return rows

"""The PyTorch reference's MMaDA-Parallel-M joint sampler against ours, side by side: seconds per
trajectory of each on the SAME random weights and settings, in one run, and their ratio.

    python bench/reference.py --reference-dir ~/src/MMaDA-Parallel            # the yardstick (real vocabulary)
    python bench/reference.py --reference-dir ~/src/MMaDA-Parallel --vocab 576 --repeats 2
    python bench/reference.py --reference-dir ~/src/MMaDA-Parallel --quick    # smoke run, well under a minute

``--reference-dir`` is a checkout of https://github.com/tyfeld/MMaDA-Parallel (nothing of it is
copied into this project): the script puts ``DIR/MMaDA-Parallel-M`` on ``sys.path`` and imports
``models.modeling_mmada.MMadaModelLM`` from it; the reference sampler timed is its
``interleave_generate``. Ours is :mod:`mmada_jax.parallel_m.sampler` (``prepare`` + one jitted
``run_scan``, as ``bench/sampler.py`` times it) with ``exact=True`` (float64 sampling arithmetic
where the reference uses float64).

Model and inputs. One random fp32 model, ``init_model(config, seed=0)``, whose parameters are
written into the reference ``MMadaModelLM`` through the project's weight mapping
(:func:`mmada_jax.convert.llada_param_maps`, the one ``convert_torch_weights.py`` uses), loaded
with ``strict=True``. Shape as ``bench/sampler.py``: d_model 256, 4 layers, 4 heads, MLP 3*d;
``--vocab 134656``: the real vocabulary and token ids (configs/mmada_parallel_m.yaml), ``--vocab 576``:
the small id layout of configs/mmada_tiny.yaml (64 image codes). Input: ``inference_prompt`` of
``--input-tokens`` random image codes and 8 random instruction ids (the rows ``bench/sampler.py``
builds), i.e. the reference ``inference.py`` layout; output: ``--image-tokens`` image tokens and
``--text-tokens`` text slots. Settings on both sides (the reference ``inference.py``): text_cfg 2.5,
image_cfg 4.0, cosine schedule, ``--steps`` text steps of which ``--image-steps`` (capped at
steps - steps//4, as bench/sampler.py) also update the image, greedy text (temperature 0), image
temperature 1, low-confidence remasking; batch 1.

Same model, proven: before timing, one forward of both models on the first step's (cond, uncond)
rows; the max |logit difference| is printed and must stay below ``--logits-tol`` (1e-4), else the
script exits 1. The sampled ids themselves differ (torch's RNG against ours).

Timing: a warm-up trajectory on each side first (ours is compiled before it, ``compile_scan``; the
compile time is printed apart and not in any timed run), then ``--repeats`` trajectories per side,
alternating reference / ours so that a change in the machine's load hits both. Prints best and
median seconds per trajectory and the ratios reference / ours; with ``--cache-interval k`` (default
4; 0: not) ours with the step cache (``--cache-fraction``, default 0.25) is timed in the same
alternation (an approximation of the exact sampler: its quality is measured on the demo world, see
README "Step cache"); the last line is
``reference X.XX s/traj, ours Y.YY s/traj: Z.ZZx`` (best of the repeats). ``--threads`` sets
torch's intra-op threads (default: every core this process may use); XLA's CPU pool always takes
every schedulable core, so to give both sides N cores run under ``taskset -c 0-(N-1)``.

Shims (done here at run time; the checkout is never modified):

* ``models/__init__.py`` of the checkout imports ``.modeling_showo`` (not in the repository, only a
  stale ``.pyc`` under ``__pycache__``) and the CLIP tower; importing the package fails. The script
  registers a bare ``models`` package (``__path__`` = the checkout's ``models/``) in ``sys.modules``,
  so ``models.modeling_mmada`` and its relative imports (``configuration_llada``,
  ``modeling_llada``, ``sampling``) load without running ``__init__.py``.
* transformers >= 5: ``PretrainedConfig`` no longer gives every config ``eos_token_id`` /
  ``pad_token_id`` and does not keep ``use_cache`` as an attribute, but the reference's
  ``create_model_config_from_pretrained_config`` reads every field of its LLaDA ``ModelConfig``
  from the config object and ``LLaDAModelLM.forward`` reads ``config.use_cache``. The config dict
  gets the eos/pad ids (as the published config.json has them) and any key or ``ModelConfig``
  field still missing after construction is set on the object (from the dict, else the reference
  dataclass's default).
* ``MMadaModelLM.__init__`` prints its whole config: its stdout is swallowed; transformers'
  deprecation warnings (``use_return_dict``) are silenced (log level error).
* ``interleave_generate`` reads only ``uni_prompting.text_tokenizer.bos_token_id`` and
  ``len(uni_prompting.text_tokenizer)`` (the image-token offset) and, from its ``config``,
  ``model.mmada.num_vq_tokens``, ``model.mmada.codebook_size`` and
  ``dataset.preprocessing.max_seq_length``: a small stand-in tokenizer and a ``SimpleNamespace``
  give those (no tokenizer download, no OmegaConf file). ``reserved_token_mapping`` holds the
  ``<|soi|>`` / ``<|eoi|>`` ids of the chosen layout (the small ids for ``--vocab 576``, as the
  golden runs did).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import statistics
import sys
import time
import types
from pathlib import Path

REFERENCE_FILE = Path("MMaDA-Parallel-M") / "models" / "modeling_mmada.py"
VOCABS = {134656: "configs/mmada_parallel_m.yaml (real ids)", 576: "configs/mmada_tiny.yaml (small ids)"}
QUICK = dict(d_model=64, layers=2, vocab=576, image_tokens=32, input_tokens=32, text_tokens=16, steps=8,
             image_steps=4, repeats=1)
ROOT = Path(__file__).resolve().parent.parent


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-dir", required=True, type=Path,
                        help=f"checkout of github.com/tyfeld/MMaDA-Parallel (must hold {REFERENCE_FILE})")
    parser.add_argument("--vocab", type=int, choices=sorted(VOCABS), default=None,
                        help="134656: real vocabulary and ids (default); 576: the small id layout of mmada_tiny")
    parser.add_argument("--d-model", type=int, default=None, help="default 256")
    parser.add_argument("--layers", type=int, default=None, help="default 4")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--image-tokens", type=int, default=None, help="output image tokens (default 256)")
    parser.add_argument("--input-tokens", type=int, default=None, help="input image tokens (default 256)")
    parser.add_argument("--text-tokens", type=int, default=None, help="output text slots, BOS included (default 64)")
    parser.add_argument("--steps", type=int, default=None, help="text steps (default 64)")
    parser.add_argument("--image-steps", type=int, default=None, help="image updates (default 16)")
    parser.add_argument("--repeats", type=int, default=None, help="timed trajectories per side (default 3)")
    parser.add_argument("--cache-interval", type=int, default=4,
                        help="also time ours with the step cache (a full forward every k steps; 0: not)")
    parser.add_argument("--cache-fraction", type=float, default=0.25, help="the step cache's recomputed share")
    parser.add_argument("--threads", type=int, default=None, help=f"torch threads (default: all {cores()} cores)")
    parser.add_argument("--logits-tol", type=float, default=1e-4,
                        help="largest |logit difference| accepted in the same-model check")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: d_model 64, 2 layers, vocab 576, 32+32 image tokens, 16 text tokens, "
                             "8 steps (4 image steps), 1 repeat; explicit options still win")
    args = parser.parse_args(argv)
    defaults = dict(d_model=256, layers=4, vocab=134656, image_tokens=256, input_tokens=256, text_tokens=64,
                    steps=64, image_steps=16, repeats=3)
    for name, value in (QUICK if args.quick else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("d_model", "layers", "heads", "image_tokens", "input_tokens", "steps", "image_steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.text_tokens < 2:
        parser.error("--text-tokens must be at least 2 (BOS and one generated slot)")
    if args.d_model % args.heads:
        parser.error(f"--d-model {args.d_model} is not a multiple of --heads {args.heads}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    args.image_steps = min(args.image_steps, args.steps - args.steps // 4)
    reference = args.reference_dir.expanduser()
    wanted = f"a checkout of https://github.com/tyfeld/MMaDA-Parallel, holding {REFERENCE_FILE}"
    if not reference.is_dir():
        parser.error(f"--reference-dir {reference}: no such directory (expected {wanted})")
    if not (reference / REFERENCE_FILE).is_file():
        parser.error(f"--reference-dir {reference}: {reference / REFERENCE_FILE} not found (expected {wanted})")
    args.reference_dir = reference.resolve()
    return args


# --------------------------------------------------------------------------- the reference

def import_reference(reference_dir: Path):
    """(models.modeling_mmada, models.sampling, models.configuration_llada) of the checkout,
    imported without the package ``__init__`` (see the module docstring)."""
    root = reference_dir / "MMaDA-Parallel-M"
    models_dir = root / "models"
    loaded = sys.modules.get("models")
    if loaded is not None and list(getattr(loaded, "__path__", [])) != [str(models_dir)]:
        raise SystemExit(f"error: a different 'models' module is already imported ({loaded!r})")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if loaded is None:
        package = types.ModuleType("models")
        package.__path__ = [str(models_dir)]
        package.__file__ = None
        sys.modules["models"] = package
    import importlib
    try:
        mmada = importlib.import_module("models.modeling_mmada")
    except ImportError as e:
        raise SystemExit(f"error: cannot import {models_dir / 'modeling_mmada.py'}: {e}") from None
    return mmada, importlib.import_module("models.sampling"), importlib.import_module("models.configuration_llada")


class StandInTokenizer:
    """What ``interleave_generate`` reads of the text tokenizer: BOS and its length (the image offset)."""

    def __init__(self, bos_token_id: int, length: int):
        self.bos_token_id = bos_token_id
        self._length = length

    def __len__(self) -> int:
        return self._length


def reference_model(mmada, llada_config, ours):
    """The reference ``MMadaModelLM`` holding our model's parameters (fp32, eval mode)."""
    import numpy as np
    import torch
    from flax import nnx
    from mmada_jax.convert import llada_param_maps

    config = ours.config
    t = config.tokens
    hf = config.to_hf_config()
    hf.update(eos_token_id=t.eos_id, pad_token_id=t.pad_id)
    cfg = mmada.MMadaConfig(**hf)
    for key, value in hf.items():                                  # transformers >= 5 (see docstring)
        if not hasattr(cfg, key):
            setattr(cfg, key, value)
    for field in dataclasses.fields(llada_config.ModelConfig):
        if not hasattr(cfg, field.name):
            default = field.default if field.default is not dataclasses.MISSING else (
                field.default_factory() if field.default_factory is not dataclasses.MISSING else None)
            setattr(cfg, field.name, hf.get(field.name, default))
    with contextlib.redirect_stdout(io.StringIO()):
        model = mmada.MMadaModelLM(cfg)
    params = nnx.to_pure_dict(nnx.state(ours, nnx.Param))
    state = {}
    for m in llada_param_maps(config):
        value = np.array(params[m.path[0]], np.float32)           # a writable copy
        if m.stacked:
            state.update({key: torch.from_numpy(np.array(m.to_hf(value[i]))) for i, key in enumerate(m.sources)})
        else:
            state[m.sources[0]] = torch.from_numpy(np.array(m.to_hf(value)))
    model.load_state_dict(state, strict=True)
    return model.float().eval()


# --------------------------------------------------------------------------- ours

def our_model(args):
    import numpy as np
    from mmada_jax import ModelConfig, init_model
    from mmada_jax.parallel_m import inference_prompt

    base = ModelConfig.from_yaml(ROOT / "configs" / "mmada_parallel_m.yaml")
    tokens = base.tokens if args.vocab == 134656 else ModelConfig.from_yaml(ROOT / "configs" / "mmada_tiny.yaml").tokens
    config = dataclasses.replace(base, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                                 n_kv_heads=args.heads, mlp_hidden_size=3 * args.d_model, vocab_size=args.vocab,
                                 tokens=tokens, dtype="float32", param_dtype="float32", remat_policy="none")
    model = init_model(config, seed=0)
    rng = np.random.default_rng(0)
    cond, uncond = inference_prompt(tokens, rng.integers(0, tokens.codebook_size, args.input_tokens),
                                    rng.integers(0, 100, 8).tolist())
    return model, np.asarray(cond, np.int64), np.asarray(uncond, np.int64)


def first_step_rows(tokens, cond, uncond, args):
    """The (cond, uncond) rows of the first forward, built as ``interleave_generate`` builds them."""
    import numpy as np
    output = np.concatenate([[tokens["soi"]], np.full(args.image_tokens, tokens.mask_id), [tokens["eoi"]],
                             [tokens.bos_id], np.full(args.text_tokens - 1, tokens.mask_id)]).astype(np.int64)
    x = np.concatenate([cond, output])
    return np.stack([x, np.concatenate([uncond, output])])


def logits_difference(ref, ours, rows) -> tuple[float, float]:
    """(max |reference - ours|, max |logit|) of one forward of both models on ``rows``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    with torch.no_grad():
        theirs = ref(torch.from_numpy(rows)).logits.numpy()
    mine = np.asarray(jax.block_until_ready(nnx.jit(lambda m, ids: m(ids))(ours, jnp.asarray(rows, jnp.int32))))
    if theirs.shape != mine.shape:
        raise SystemExit(f"error: logits of shape {theirs.shape} (reference) vs {mine.shape} (ours)")
    diff = max(float(np.abs(theirs[r] - mine[r]).max()) for r in range(len(rows)))
    return diff, float(np.abs(theirs).max())


# --------------------------------------------------------------------------- timing

def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("error: bench/reference.py needs torch (pip install -e '.[torch]')") from None
    threads = args.threads or cores()
    torch.set_num_threads(threads)
    import jax
    import numpy as np
    import transformers
    from mmada_jax.parallel_m import sampler as par
    from mmada_jax.sampling.runner import compile_scan, run_scan

    transformers.logging.set_verbosity_error()
    mmada, sampling, llada_config = import_reference(args.reference_dir)

    print(f"torch {torch.__version__} (transformers {transformers.__version__}): {torch.get_num_threads()} intra-op, "
          f"{torch.get_num_interop_threads()} inter-op threads")
    print(f"jax {jax.__version__} ({jax.default_backend()}): XLA's CPU pool uses the {cores()} schedulable cores "
          f"(of {os.cpu_count()}); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"reference: {args.reference_dir / REFERENCE_FILE}")
    model, cond, uncond = our_model(args)
    t = model.config.tokens
    print(f"model: d={args.d_model} L={args.layers} heads={args.heads} mlp={3 * args.d_model} V={args.vocab} "
          f"({VOCABS[args.vocab]}), {model.config.num_params() / 1e6:.1f}M params, fp32; {args.image_tokens} output + "
          f"{args.input_tokens} input image tokens, {args.text_tokens} text tokens, {args.steps} steps, "
          f"{args.image_steps} image updates, text_cfg 2.5, image_cfg 4.0, cosine, greedy text, image temperature 1, "
          f"low-confidence remasking, batch 1", flush=True)

    ref = reference_model(mmada, llada_config, model)
    rows = first_step_rows(t, cond, uncond, args)
    diff, scale = logits_difference(ref, model, rows)
    ok = diff < args.logits_tol
    print(f"same model: first step's logits (cond + uncond rows, {rows.shape[1]} positions x {args.vocab}) "
          f"max |reference - ours| = {diff:.3g} (logits up to {scale:.3g}; tolerance {args.logits_tol:g}): "
          f"{'ok' if ok else 'FAILED'}", flush=True)
    if not ok:
        return 1

    config = types.SimpleNamespace(
        model=types.SimpleNamespace(mmada=types.SimpleNamespace(num_vq_tokens=args.image_tokens,
                                                                codebook_size=t.codebook_size)),
        dataset=types.SimpleNamespace(preprocessing=types.SimpleNamespace(max_seq_length=args.text_tokens)))
    uni_prompting = types.SimpleNamespace(text_tokenizer=StandInTokenizer(t.bos_id, t.image_offset))
    reserved = {"<|soi|>": t["soi"], "<|eoi|>": t["eoi"], "<|interleave|>": t["interleave"]}
    cond_t, uncond_t = torch.from_numpy(cond), torch.from_numpy(uncond)

    def reference_run():
        generator = torch.Generator().manual_seed(0)
        return ref.interleave_generate(cond_t, uncond_t, text_cfg=2.5, image_cfg=4.0,
                                       noise_schedule=sampling.cosine_schedule, text_steps=args.steps,
                                       image_steps=args.image_steps, reserved_token_mapping=reserved,
                                       generator=generator, config=config, remasking="low_confidence",
                                       text_temperature=0.0, image_temperature=1.0, uni_prompting=uni_prompting)

    prepared = par.prepare(model, cond.astype(np.int32), uncond.astype(np.int32), num_image_tokens=args.image_tokens,
                           text_len=args.text_tokens, text_steps=args.steps, image_steps=args.image_steps,
                           text_cfg=2.5, image_cfg=4.0, text_temperature=0.0, image_temperature=1.0,
                           remasking="low_confidence", schedule="cosine", seed=0, exact=True)[:-1]
    if not np.array_equal(prepared[1][0][0], rows[0]):     # our first step sees the reference's rows
        raise SystemExit("error: our sampler's initial sequence differs from the one interleave_generate builds")

    def our_run():
        return run_scan(model, par._step, *prepared)

    runs = {"reference": reference_run, "ours": our_run}
    if args.cache_interval:
        cached = par.prepare(model, cond.astype(np.int32), uncond.astype(np.int32), num_image_tokens=args.image_tokens,
                             text_len=args.text_tokens, text_steps=args.steps, image_steps=args.image_steps,
                             text_cfg=2.5, image_cfg=4.0, seed=0, exact=True, cache_interval=args.cache_interval,
                             cache_fraction=args.cache_fraction)[:-1]
        compile_scan(model, par._step, *cached)
        run_scan(model, par._step, *cached)                     # warm-up
        runs[f"ours+cache k={args.cache_interval} f={args.cache_fraction:g}"] = \
            lambda: run_scan(model, par._step, *cached)

    def clock(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    seconds, (ref_image, ref_text) = clock(reference_run)
    print(f"reference warm-up: {seconds:.2f} s", flush=True)
    start = time.perf_counter()
    compile_scan(model, par._step, *prepared)
    print(f"ours: compile {time.perf_counter() - start:.2f} s (not timed below)", flush=True)
    seconds, (carry, _) = clock(our_run)
    print(f"ours warm-up: {seconds:.2f} s", flush=True)
    check_outputs(t, args, ref_image.numpy(), ref_text.numpy(), np.asarray(carry[1]),
                  np.asarray(carry[0])[:, -args.text_tokens:])

    times = {name: [] for name in runs}
    for r in range(args.repeats):
        for name, fn in runs.items():
            seconds, _ = clock(fn)
            times[name].append(seconds)
            print(f"  repeat {r + 1}/{args.repeats}: {name} {seconds:.2f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    width = max(map(len, times)) + 1
    print(f"{'':{width}} {'best s/traj':>12} {'median s/traj':>14} {'reference / it (best, median)':>30}")
    for name in times:
        print(f"{name:{width}} {best[name]:12.2f} {median[name]:14.2f} {best['reference'] / best[name]:14.2f}x"
              f" {median['reference'] / median[name]:14.2f}x")
    print(f"reference {best['reference']:.2f} s/traj, ours {best['ours']:.2f} s/traj: "
          f"{best['reference'] / best['ours']:.2f}x")
    return 0


def check_outputs(t, args, ref_image, ref_text, our_image, our_text) -> None:
    """Both trajectories ran to the end: every image code in the codebook, no text slot left masked."""
    for name, image, text in (("reference", ref_image, ref_text), ("ours", our_image, our_text)):
        if image.shape != (1, args.image_tokens) or text.shape != (1, args.text_tokens):
            raise SystemExit(f"error: {name} returned image {image.shape}, text {text.shape}")
        if not ((image >= 0) & (image < t.codebook_size)).all() or (text == t.mask_id).any():
            raise SystemExit(f"error: {name}'s trajectory did not finish (codes outside the codebook or masked text)")
    same = float((ref_text == our_text).mean())
    print(f"outputs: both finished; text slots equal in {same:.0%} (the random streams differ, so the ids may)")


if __name__ == "__main__":
    sys.exit(main())

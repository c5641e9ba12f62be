"""python -m sample SUBCOMMAND [options]

  parallel  thinking-aware editing: input image + instruction -> reasoning text and output image,
            denoised together. MMaDA-Parallel-M, or MMaDA-Parallel-A (--model a, or a checkpoint
            of kind dimoo) with the flag names of its inference.py (--height --width --timesteps
            --text_steps --text_gen_length --cfg_scale --cfg_img --temperature --text_temperature)
  t2i       text -> image (MaskGIT)
  mmu       image + question -> answer (LLaDA text decoding after the image tokens)
  text      prompt -> text (LLaDA)
  logits    what the model predicts at the masked positions of a sequence

Without --checkpoint every subcommand runs the tiny test checkpoint (tests/golden/mmada_tiny),
its MAGVIT-v2 (tests/golden/magvitv2_tiny) and a character-level test tokenizer; `parallel
--model a` runs tests/golden/dimoo_tiny with tests/golden/amused_vq_tiny. Their weights are
RANDOM, so the pictures and texts show the pipeline, not a trained model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = {"checkpoint": ROOT / "tests/golden/mmada_tiny", "vq": ROOT / "tests/golden/magvitv2_tiny",
        "tokenizer": ROOT / "tests/fixtures/tiny_tokenizer", "image": ROOT / "tests/fixtures/demo_input.png",
        "prompt": "Make the sky at sunset orange."}
TINY_A = dict(TINY, checkpoint=ROOT / "tests/golden/dimoo_tiny", vq=ROOT / "tests/golden/amused_vq_tiny",
              tokenizer=ROOT / "tests/fixtures/tiny_tokenizer_a")
# per subcommand: flags that only one model has (default None = not given) with the defaults they
# then get, and flags both have whose defaults differ ((-M, -A))
MODEL_FLAGS = {
    "parallel": {"m": {"resolution": None, "text_cfg": 0.0, "text_guidance": "reference", "max_prompt_tokens": 256},
                 "a": {"height": 512, "width": 512, "cfg_scale": 0.0, "text_block_length": 32, "system_prompt": None,
                       "input_size": 512, "random_crop": False, "restrict_text": False, "final_fill": "random"},
                 "both": {"image_steps": (30, 64)}},
    "t2i": {"m": {"resolution": None, "max_text_len": 128, "temperature_mode": "compound"},
            "a": {"height": 1024, "width": 1024, "image": None, "cfg_img": 4.0, "system_prompt": None,
                  "input_size": 512, "random_crop": False},
            "both": {"steps": (15, 64), "guidance": (3.5, None)}},
}


def _common(p: argparse.ArgumentParser, needs_vq: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", type=Path, help="converted or HF checkpoint (default: the tiny test one)")
    if needs_vq:
        g.add_argument("--vq", "--vae_ckpt", type=Path, help="image tokenizer checkpoint (default: with --checkpoint, none)")
    g.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the checkpoint's)")
    g.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored)")
    g.add_argument("--mesh", default=None, help="e.g. data=2,fsdp=4 (default: one device)")
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--prompt", help="the prompt / instruction / question")
    g.add_argument("--prompts", help="a JSONL file of requests: {\"prompt\": ..., \"image\": ..., \"id\": ...}")
    g.add_argument("--out", "--output_dir", type=Path, default=Path("out"), help="output directory (default: out/)")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--trajectory", action="store_true", help="also write the denoising as an animated GIF")
    g.add_argument("--truncate", action="store_true", help="truncate over-long prompts (with a warning) "
                   "instead of stopping")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sample", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("parallel", help="image + instruction -> reasoning + edited image")
    _common(p)
    p.add_argument("--model", choices=["m", "a"], default=None,
                   help="MMaDA-Parallel-M or -A (default: the checkpoint's kind; without --checkpoint, m)")
    p.add_argument("--image", "--image_path", nargs="+", help="input image(s); one request each")
    p.add_argument("--text-len", "--text_gen_length", dest="text_len", type=int, default=256,
                   help="reasoning-text budget in tokens")
    p.add_argument("--text-steps", "--text_steps", dest="text_steps", type=int, default=128)
    p.add_argument("--image-steps", "--timesteps", dest="image_steps", type=int, default=None,
                   help="steps that also update the image (default: 30 for -M, 64 for -A)")
    p.add_argument("--image-cfg", "--cfg_img", dest="image_cfg", type=float, default=4.0)
    p.add_argument("--text-temperature", "--text_temperature", dest="text_temperature", type=float, default=0.0)
    p.add_argument("--image-temperature", "--temperature", dest="image_temperature", type=float, default=1.0)
    p.add_argument("--remasking", choices=["low_confidence", "random"], default="low_confidence")
    g = p.add_argument_group("MMaDA-Parallel-M only")
    g.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: the VQ's, 512)")
    g.add_argument("--text-cfg", type=float, default=None,
                   help="text guidance (reference formula cond + s*(uncond - cond); inference.py used 2.5)")
    g.add_argument("--text-guidance", choices=["reference", "conventional"], default=None)
    g.add_argument("--max-prompt-tokens", type=int, default=None)
    g = p.add_argument_group("MMaDA-Parallel-A only (reference defaults: its README command)")
    g.add_argument("--height", type=int, default=None, help="output height in pixels (default 512)")
    g.add_argument("--width", type=int, default=None, help="output width in pixels (default 512)")
    g.add_argument("--cfg_scale", "--cfg-scale", dest="cfg_scale", type=float, default=None,
                   help="text-condition guidance of the image (default 0; inference.py's argparse has 2.5)")
    g.add_argument("--text_block_length", type=int, default=None, help="accepted and ignored, as the reference")
    g.add_argument("--system-prompt", default=None, help="system turn (default: the reference's editing prompt)")
    g.add_argument("--input-size", type=int, default=None, help="the input image is cropped to about this "
                   "size squared, keeping its aspect ratio bucket (default 512)")
    g.add_argument("--random-crop", action="store_const", const=True, default=None,
                   help="draw the crop offset from Python's random seeded with --seed, as the reference "
                        "(default: centred)")
    g.add_argument("--restrict-text", action="store_const", const=True, default=None,
                   help="decode text over text ids only (the reference argmaxes the whole vocabulary)")
    g.add_argument("--final-fill", choices=["random", "sampled"], default=None,
                   help="the image token still masked at the end: a uniform random code (reference) or "
                        "the last step's draw")

    p = sub.add_parser("t2i", help="text -> image (with --model a and --image: image -> image)")
    _common(p)
    p.add_argument("--model", choices=["m", "a"], default=None,
                   help="MMaDA (MaskGIT t2i) or Lumina-DiMOO / MMaDA-Parallel-A (default: the checkpoint's kind)")
    p.add_argument("--steps", type=int, default=None, help="default: 15 for -M, 64 for -A")
    p.add_argument("--guidance", type=float, default=None,
                   help="default: 3.5 for -M; -A: 4.0 (text-to-image), 2.5 (image-to-image, the text guidance)")
    p.add_argument("--temperature", type=float, default=1.0)
    g = p.add_argument_group("MMaDA only")
    g.add_argument("--resolution", type=int, default=None)
    g.add_argument("--max-text-len", type=int, default=None, help="text prefix length (the reference's M; 128)")
    g.add_argument("--temperature-mode", choices=["compound", "anneal"], default=None)
    g = p.add_argument_group("Lumina-DiMOO / MMaDA-Parallel-A only")
    g.add_argument("--height", type=int, default=None, help="default 1024")
    g.add_argument("--width", type=int, default=None, help="default 1024")
    g.add_argument("--image", nargs="+", default=None, help="input image(s): image-to-image, one request each")
    g.add_argument("--cfg-img", type=float, default=None, help="image-to-image: guidance against the image-free "
                   "input (default 4.0)")
    g.add_argument("--system-prompt", default=None)
    g.add_argument("--input-size", type=int, default=None)
    g.add_argument("--random-crop", action="store_const", const=True, default=None)

    for name, needs_vq in (("mmu", True), ("text", False)):
        p = sub.add_parser(name, help="image + question -> answer" if needs_vq else "prompt -> text")
        _common(p, needs_vq)
        if needs_vq:
            p.add_argument("--image", nargs="+")
            p.add_argument("--resolution", type=int, default=None)
        p.add_argument("--gen-length", type=int, default=128)
        p.add_argument("--block-length", type=int, default=None, help="default: --gen-length (one block)")
        p.add_argument("--steps", type=int, default=None, help="default: --gen-length")
        p.add_argument("--temperature", type=float, default=0.0)
        p.add_argument("--cfg", type=float, default=0.0)
        p.add_argument("--remasking", choices=["low_confidence", "random"], default="low_confidence")
        p.add_argument("--thinking", action="store_true", help="prepend the <think> instruction")
        p.add_argument("--max-prompt-tokens", type=int, default=512)

    p = sub.add_parser("logits", help="predictions at the masked positions of a sequence")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--ids", default=None, help="token ids, comma or space separated")
    p.add_argument("--dtype", default=None)
    p.add_argument("--mesh", default=None)
    p.add_argument("--top-k", type=int, default=5)
    return parser.parse_args(argv)


def _defaults(args) -> None:
    """Fill the tiny demo's paths when no checkpoint is given."""
    if args.checkpoint is None:
        tiny = TINY_A if getattr(args, "model", None) == "a" else TINY
        print(f"no --checkpoint: using the tiny test checkpoint {tiny['checkpoint'].relative_to(ROOT)} "
              f"(RANDOM weights: the outputs show the pipeline, not a trained model)")
        args.checkpoint = tiny["checkpoint"]
        if hasattr(args, "vq") and args.vq is None:
            args.vq = tiny["vq"]
        args.tokenizer = args.tokenizer or tiny["tokenizer"]
        if args.prompt is None and args.prompts is None:
            args.prompt = tiny["prompt"]
        if args.command in ("parallel", "mmu") and args.image is None:
            args.image = [str(tiny["image"])]
    args.tokenizer = args.tokenizer or args.checkpoint
    if args.command in ("parallel", "t2i") and args.vq is None and (args.checkpoint / "vqvae").is_dir():
        args.vq = args.checkpoint     # MMaDA-Parallel-A ships its VQ as the checkpoint's vqvae/ folder


def _resolve_model(args, kind: str) -> str:
    """``m`` or ``a`` from --model and the checkpoint's kind; flags of the other model are errors;
    the model's defaults filled in."""
    model = "a" if kind == "dimoo" else "m"
    if args.model is not None and args.model != model:
        raise ValueError(f"--model {args.model} but {args.checkpoint} is a {kind!r} checkpoint "
                         f"({'MMaDA-Parallel-A / Lumina-DiMOO' if model == 'a' else 'MMaDA'})")
    flags = MODEL_FLAGS[args.command]
    given = [k for k in flags["a" if model == "m" else "m"] if getattr(args, k) is not None]
    if given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{names}: not for {args.checkpoint}, a {kind!r} checkpoint")
    for k, v in flags[model].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    for k, (m, a) in flags["both"].items():
        if getattr(args, k) is None:
            setattr(args, k, m if model == "m" else a)
    return model


def main(argv=None) -> int:
    args = parse(argv)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()
    return run_guarded(lambda: _run(args))


def _run(args) -> int:
    from mmada_jax import make_mesh, pipelines
    from mmada_jax.sharding import parse_mesh

    if args.command == "logits":
        return _logits(args)
    _defaults(args)
    if args.command in MODEL_FLAGS:
        from mmada_jax import load_config
        args.model = _resolve_model(args, load_config(args.checkpoint).kind)
    if args.command in ("parallel", "t2i", "mmu") and args.vq is None:
        raise ValueError(f"{args.command} needs --vq (the image tokenizer checkpoint)")
    mesh = make_mesh(parse_mesh(args.mesh)) if args.mesh else None
    pipe = pipelines.load_pipeline(args.checkpoint, getattr(args, "vq", None), args.tokenizer,
                                   dtype=args.dtype, mesh=mesh)
    requests = pipelines.read_requests(args.prompt, args.prompts, getattr(args, "image", None) or ())
    common = dict(batch_size=args.batch_size, seed=args.seed, trajectory=args.trajectory, truncate=args.truncate)
    if args.command == "parallel" and args.model == "a":
        if args.text_block_length != MODEL_FLAGS["parallel"]["a"]["text_block_length"]:
            print(f"note: --text_block_length {args.text_block_length} is ignored (the reference ignores it too)")
        common.pop("truncate")
        records = pipelines.run_ti2ti(
            pipe, requests, args.out, height=args.height, width=args.width, timesteps=args.image_steps,
            text_steps=args.text_steps, text_gen_length=args.text_len, cfg_scale=args.cfg_scale,
            cfg_img=args.image_cfg, temperature=args.image_temperature, text_temperature=args.text_temperature,
            remasking=args.remasking, system_prompt=args.system_prompt or pipelines.EDIT_SYSTEM_PROMPT,
            input_size=args.input_size, random_crop=args.random_crop, restrict_text_to_text_ids=args.restrict_text,
            final_fill=args.final_fill, **common)
    elif args.command == "parallel":
        records = pipelines.run_parallel(
            pipe, requests, args.out, resolution=args.resolution, text_len=args.text_len,
            text_steps=args.text_steps, image_steps=args.image_steps, text_cfg=args.text_cfg,
            image_cfg=args.image_cfg, text_guidance=args.text_guidance, text_temperature=args.text_temperature,
            image_temperature=args.image_temperature, remasking=args.remasking,
            max_prompt_tokens=args.max_prompt_tokens, **common)
    elif args.command == "t2i" and args.model == "a":
        common.pop("truncate")
        records = pipelines.run_image_a(
            pipe, requests, args.out, height=args.height, width=args.width, timesteps=args.steps,
            cfg_scale=args.guidance, cfg_img=args.cfg_img, temperature=args.temperature,
            system_prompt=args.system_prompt, input_size=args.input_size, random_crop=args.random_crop, **common)
    elif args.command == "t2i":
        records = pipelines.run_t2i(pipe, requests, args.out, resolution=args.resolution,
                                    max_text_len=args.max_text_len, timesteps=args.steps,
                                    guidance_scale=args.guidance, temperature=args.temperature,
                                    temperature_mode=args.temperature_mode, **common)
    else:
        records = pipelines.run_text(
            pipe, requests, args.out, mmu=args.command == "mmu", resolution=getattr(args, "resolution", None),
            gen_length=args.gen_length, block_length=args.block_length or args.gen_length,
            steps=args.steps or args.gen_length, temperature=args.temperature, cfg_scale=args.cfg,
            remasking=args.remasking, thinking=args.thinking, max_prompt_tokens=args.max_prompt_tokens, **common)
    for r in records:
        print(f"wrote {', '.join(r['files'].values())}")
    return 0


def _logits(args) -> int:
    import numpy as np
    from mmada_jax import load_model, make_mesh
    from mmada_jax.predict import default_prompt, masked_predictions
    from mmada_jax.sharding import parse_mesh

    if args.checkpoint is None:
        print(f"no --checkpoint: using the tiny test checkpoint {TINY['checkpoint'].relative_to(ROOT)} (random weights)")
    mesh = make_mesh(parse_mesh(args.mesh)) if args.mesh else None
    model, config = load_model(args.checkpoint or TINY["checkpoint"], dtype=args.dtype, mesh=mesh)
    print(f"model: kind {config.kind}, {config.num_params() / 1e6:.1f}M parameters, {config.n_layers} layers, "
          f"vocab {config.vocab_size}, {config.dtype}")
    ids = (np.asarray([[int(x) for x in args.ids.replace(",", " ").split()]], np.int32) if args.ids
           else default_prompt(model))
    if ids.max() >= config.vocab_size or ids.min() < 0:
        raise ValueError(f"--ids must lie in [0, {config.vocab_size}); got {ids.min()}..{ids.max()}")
    where, top_ids, top_probs, seconds = masked_predictions(model, ids, args.top_k)
    print(f"input ids ({ids.shape[1]}): {' '.join(map(str, ids[0]))}")
    print(f"{len(where)} masked positions, forward in {seconds * 1e3:.1f} ms ({ids.size / seconds:.0f} tokens/s)")
    for (row, pos), cand, prob in zip(where, top_ids, top_probs):
        print(f"  row {row} pos {pos:4d}  top-{args.top_k}: " + "  ".join(f"{c}:{p:.3f}" for c, p in zip(cand, prob)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

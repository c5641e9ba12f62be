"""python -m sample SUBCOMMAND [options]

  parallel  MMaDA-Parallel-M thinking-aware editing: input image + instruction -> reasoning text
            and output image, denoised together
  t2i       text -> image (MaskGIT)
  mmu       image + question -> answer (LLaDA text decoding after the image tokens)
  text      prompt -> text (LLaDA)
  logits    what the model predicts at the masked positions of a sequence

Without --checkpoint every subcommand runs the tiny test checkpoint (tests/golden/mmada_tiny),
its MAGVIT-v2 (tests/golden/magvitv2_tiny) and a character-level test tokenizer: their weights are
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


def _common(p: argparse.ArgumentParser, needs_vq: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", type=Path, help="converted or HF checkpoint (default: the tiny test one)")
    if needs_vq:
        g.add_argument("--vq", type=Path, help="image tokenizer checkpoint (default: with --checkpoint, none)")
    g.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the checkpoint's)")
    g.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored)")
    g.add_argument("--mesh", default=None, help="e.g. data=2,fsdp=4 (default: one device)")
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--prompt", help="the prompt / instruction / question")
    g.add_argument("--prompts", help="a JSONL file of requests: {\"prompt\": ..., \"image\": ..., \"id\": ...}")
    g.add_argument("--out", type=Path, default=Path("out"), help="output directory (default: out/)")
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
    p.add_argument("--image", nargs="+", help="input image(s); one request each")
    p.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: the VQ's, 512)")
    p.add_argument("--text-len", type=int, default=256, help="reasoning-text budget in tokens")
    p.add_argument("--text-steps", type=int, default=128)
    p.add_argument("--image-steps", type=int, default=30)
    p.add_argument("--text-cfg", type=float, default=0.0,
                   help="text guidance (reference formula cond + s*(uncond - cond); inference.py used 2.5)")
    p.add_argument("--image-cfg", type=float, default=4.0)
    p.add_argument("--text-guidance", choices=["reference", "conventional"], default="reference")
    p.add_argument("--text-temperature", type=float, default=0.0)
    p.add_argument("--image-temperature", type=float, default=1.0)
    p.add_argument("--max-prompt-tokens", type=int, default=256)

    p = sub.add_parser("t2i", help="text -> image")
    _common(p)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--max-text-len", type=int, default=128, help="text prefix length (the reference's M)")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--guidance", type=float, default=3.5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--temperature-mode", choices=["compound", "anneal"], default="compound")

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
        print(f"no --checkpoint: using the tiny test checkpoint {TINY['checkpoint'].relative_to(ROOT)} "
              f"(RANDOM weights: the outputs show the pipeline, not a trained model)")
        args.checkpoint = TINY["checkpoint"]
        if hasattr(args, "vq") and args.vq is None:
            args.vq = TINY["vq"]
        args.tokenizer = args.tokenizer or TINY["tokenizer"]
        if args.prompt is None and args.prompts is None:
            args.prompt = TINY["prompt"]
        if getattr(args, "image", "absent") is None:
            args.image = [str(TINY["image"])]
    args.tokenizer = args.tokenizer or args.checkpoint


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
    if args.command in ("parallel", "t2i", "mmu") and args.vq is None:
        raise ValueError(f"{args.command} needs --vq (the image tokenizer checkpoint)")
    mesh = make_mesh(parse_mesh(args.mesh)) if args.mesh else None
    pipe = pipelines.load_pipeline(args.checkpoint, getattr(args, "vq", None), args.tokenizer,
                                   dtype=args.dtype, mesh=mesh)
    requests = pipelines.read_requests(args.prompt, args.prompts, getattr(args, "image", None) or ())
    common = dict(batch_size=args.batch_size, seed=args.seed, trajectory=args.trajectory, truncate=args.truncate)
    if args.command == "parallel":
        records = pipelines.run_parallel(
            pipe, requests, args.out, resolution=args.resolution, text_len=args.text_len,
            text_steps=args.text_steps, image_steps=args.image_steps, text_cfg=args.text_cfg,
            image_cfg=args.image_cfg, text_guidance=args.text_guidance, text_temperature=args.text_temperature,
            image_temperature=args.image_temperature, max_prompt_tokens=args.max_prompt_tokens, **common)
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

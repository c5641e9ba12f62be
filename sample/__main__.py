"""python -m sample SUBCOMMAND [options]

  parallel  thinking-aware editing: input image + instruction -> reasoning text and output image,
            denoised together. MMaDA-Parallel-M, or MMaDA-Parallel-A (--model a, or a checkpoint
            of kind dimoo) with the flag names of its inference.py (--height --width --timesteps
            --text_steps --text_gen_length --cfg_scale --cfg_img --temperature --text_temperature)
  t2i       text -> image (MaskGIT)
  mmu       image + question -> answer (LLaDA text decoding after the image tokens)
  text      prompt -> text (LLaDA)
  logits    what the model predicts at the masked positions of a sequence

Without --checkpoint, `parallel` runs the trained demo MMaDA-Parallel-M of the synthetic shapes
world (demo/parallel_m_shapes_pararl: its tokenizers, sampling defaults, and an input image and
instruction of the world), so it writes a real edit and its reasoning. The other subcommands, and
`parallel --model a`, run the tiny test checkpoints (tests/golden/mmada_tiny with
tests/golden/magvitv2_tiny and a character-level tokenizer; tests/golden/dimoo_tiny with
tests/golden/amused_vq_tiny): their weights are RANDOM, so their outputs show the pipeline only.

Multi-host (a --mesh over several hosts' devices): run the same command on every host (see
mmada_jax/distributed.py for how the processes find each other); every process samples the same
requests, process 0 alone writes --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmada_jax.app.cli import DEMO, ROOT, SUBCOMMANDS, TINY, TINY_A, choose_task, demo_example, subcommand_tasks

NEEDS_VQ = {"parallel", "t2i", "mmu"}


def _common(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", type=Path, help="converted, HF or training checkpoint, or a training run "
                   "(default: the demo model for parallel, else the tiny test one)")
    if command in NEEDS_VQ:
        g.add_argument("--vq", "--vae_ckpt", type=Path, help="image tokenizer checkpoint (default: the checkpoint's)")
    g.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the checkpoint's)")
    g.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored)")
    g.add_argument("--mesh", default=None, help="e.g. data=2,fsdp=4 (default: one device)")
    if len(SUBCOMMANDS[command]) > 1:
        g.add_argument("--model", choices=sorted(SUBCOMMANDS[command]), default=None,
                       help="m: MMaDA / MMaDA-Parallel-M, a: MMaDA-Parallel-A / Lumina-DiMOO (default: the "
                            "checkpoint's kind; without --checkpoint, m)")
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--prompt", help="the prompt / instruction / question")
    g.add_argument("--prompts", help="a JSONL file of requests: {\"prompt\": ..., \"image\": ..., \"id\": ...}")
    if command != "text":
        g.add_argument("--image", "--image_path", nargs="+", help="input image(s); one request each")
    g.add_argument("--out", "--output_dir", type=Path, default=Path("out"), help="output directory (default: out/)")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--trajectory", action="store_true", help="also write the denoising as an animated GIF")
    g.add_argument("--truncate", action="store_true", help="truncate over-long prompts (with a warning) "
                   "instead of stopping")
    g.add_argument("--overwrite", action="store_true", help="write into an --out that holds an earlier run's "
                   "results (same-named samples are replaced once their new files are complete)")
    g.add_argument("--skip-bad", action="store_true", help="run the good requests and list the bad ones in "
                   "OUT/bad_requests.jsonl (default: stop and list them)")


def parse(argv=None) -> argparse.Namespace:
    from mmada_jax.app.cli import add_settings
    parser = argparse.ArgumentParser(prog="python -m sample", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"parallel": "image + instruction -> reasoning + edited image",
             "t2i": "text -> image (with --model a and --image: image -> image)",
             "mmu": "image + question -> answer", "text": "prompt -> text"}
    for command, help_text in helps.items():
        p = sub.add_parser(command, help=help_text)
        _common(p, command)
        add_settings(p, subcommand_tasks(command))

    p = sub.add_parser("logits", help="predictions at the masked positions of a sequence")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--ids", default=None, help="token ids, comma or space separated")
    p.add_argument("--dtype", default=None)
    p.add_argument("--mesh", default=None)
    p.add_argument("--top-k", type=int, default=5)
    return parser.parse_args(argv)


def _defaults(args) -> None:
    """Fill the demo's paths (``parallel``) or the tiny test checkpoint's when no checkpoint is given."""
    if args.checkpoint is None and args.command == "parallel" and getattr(args, "model", None) != "a":
        print(f"no --checkpoint: using the demo model {DEMO['checkpoint'].relative_to(ROOT)} (trained on the "
              f"synthetic shapes world)")
        args.checkpoint = DEMO["checkpoint"]
        if args.prompt is None and args.prompts is None and args.image is None:   # the world's example request
            item, root = demo_example()
            args.prompt = item["instruction"]
            args.image = [str(root / item["input_image"])] if item.get("input_image") else None
            print(f"no --prompt: the demo's example request {args.prompt!r}" +
                  (f" on {Path(args.image[0]).relative_to(ROOT)}" if args.image else ""))
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


def main(argv=None) -> int:
    args = parse(argv)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()
    return run_guarded(lambda: _run(args))


def _run(args) -> int:
    from mmada_jax.distributed import initialize
    initialize()     # multi-host: join the other processes before any device is used
    from mmada_jax import make_mesh, open_checkpoint
    from mmada_jax.app import load_pipeline, read_requests, run_task
    from mmada_jax.sharding import parse_mesh

    if args.command == "logits":
        return _logits(args)
    _defaults(args)
    ckpt = open_checkpoint(args.checkpoint)
    task, settings, options = choose_task(args.command, args, ckpt.kind)
    if getattr(args, "text_block_length", None) is not None:
        print(f"note: --text_block_length {args.text_block_length} is ignored (the reference ignores it too)")
    vq = getattr(args, "vq", None) or ckpt.vq_dir
    if args.command in NEEDS_VQ and vq is None:
        raise ValueError(f"{args.command} needs --vq (the image tokenizer checkpoint)")
    requests, bad = read_requests(args.prompt, args.prompts, getattr(args, "image", None) or ())
    mesh = make_mesh(parse_mesh(args.mesh)) if args.mesh else None
    pipe = load_pipeline(ckpt, vq if args.command in NEEDS_VQ else None, args.tokenizer, dtype=args.dtype, mesh=mesh)
    records = run_task(task, pipe, requests, args.out, settings, options, batch_size=args.batch_size, seed=args.seed,
                       trajectory=args.trajectory, truncate=args.truncate, overwrite=args.overwrite,
                       skip_bad=args.skip_bad, bad=bad)
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

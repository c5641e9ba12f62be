"""python -m evaluate --benchmark B.jsonl --judge synthetic --out OUT [options]

Sample every benchmark item with `sample parallel` (same model and sampler flags), judge each sample
with ParaBench's metrics and write OUT/results.jsonl, OUT/summary.json, OUT/summary.md and
OUT/report.html (see mmada_jax.evaluation.run). A rerun with the same --out samples only the items
not yet in OUT/results.jsonl. Without --checkpoint it runs the demo MMaDA-Parallel-M of the synthetic
world (demo/parallel_m_shapes; with --model a: the tiny random -A test checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse(argv=None) -> argparse.Namespace:
    from mmada_jax.app.cli import add_settings, subcommand_tasks
    p = argparse.ArgumentParser(prog="python -m evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", type=Path, required=True, help="benchmark JSONL (input images relative to it)")
    p.add_argument("--judge", default="synthetic", help="judge name (default: synthetic)")
    p.add_argument("--out", type=Path, required=True, help="output folder (a rerun resumes)")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the demo model)")
    p.add_argument("--vq", "--vae_ckpt", type=Path, help="image tokenizer checkpoint (default: the checkpoint's)")
    p.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the checkpoint's)")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored)")
    p.add_argument("--mesh", default=None, help="e.g. data=2,fsdp=4 (default: one device)")
    p.add_argument("--model", choices=["a", "m"], default=None, help="m: MMaDA-Parallel-M, a: -A (default: the "
                   "checkpoint's kind; without --checkpoint, m)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    add_settings(p, subcommand_tasks("parallel"))
    return p.parse_args(argv)


def _run(args) -> int:
    from mmada_jax import make_mesh, open_checkpoint
    from mmada_jax.app import load_pipeline
    from mmada_jax.evaluation import get_judge
    from mmada_jax.evaluation.run import evaluate
    from mmada_jax.sharding import parse_mesh
    from mmada_jax.app.cli import DEMO, TINY_A, choose_task

    if args.checkpoint is None and args.model == "a":
        print(f"no --checkpoint: using the tiny test checkpoint {TINY_A['checkpoint']} (RANDOM weights)")
        args.checkpoint, args.vq = TINY_A["checkpoint"], args.vq or TINY_A["vq"]
        args.tokenizer = args.tokenizer or TINY_A["tokenizer"]
    elif args.checkpoint is None:
        print(f"no --checkpoint: using the demo model {DEMO['checkpoint']}")
        args.checkpoint = DEMO["checkpoint"]
    ckpt = open_checkpoint(args.checkpoint)
    task, settings, options = choose_task("parallel", args, ckpt.kind)
    vq = args.vq or ckpt.vq_dir
    if vq is None:
        raise ValueError("evaluate needs --vq (the image tokenizer checkpoint)")
    try:
        judge = get_judge(args.judge, root=args.benchmark.parent)
    except KeyError as e:
        raise ValueError(e.args[0]) from None

    def pipeline():
        mesh = make_mesh(parse_mesh(args.mesh)) if args.mesh else None
        return load_pipeline(ckpt, vq, args.tokenizer, dtype=args.dtype, mesh=mesh)

    evaluate(args.benchmark, args.out, judge, task, pipeline, settings, options, batch_size=args.batch_size,
             seed=args.seed, limit=args.limit,
             run_info={k: str(Path(v).resolve()) if v is not None else None
                       for k, v in (("checkpoint", args.checkpoint), ("vq", vq), ("tokenizer", args.tokenizer))})
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()
    return run_guarded(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())

"""python -m train.synthetic OUT_DIR --num N --seed S [--size 64] [--t2i-fraction 0.1] [--base-tasks]
python -m train.synthetic --benchmark DIR --num N --seed S [--generation M] [--size 64] [--t2i-fraction 0.1]
python -m train.synthetic --benchmark DIR --num N --seed S --base-task t2i|mmu

Write a synthetic simple-shapes editing dataset (OUT_DIR/examples.jsonl + OUT_DIR/images/*.png);
see mmada_jax.data.synthetic (--base-tasks: each line also carries base MMaDA's t2i / mmu fields
about its output image, for `python -m train.pretokenize --base-tasks`). With --benchmark: an evaluation benchmark instead
(DIR/benchmark.jsonl, one item with its ground-truth scenes per line, see
mmada_jax.evaluation.synthetic_judge, and the input images DIR/images/*_in.png) for
`python -m evaluate --benchmark DIR/benchmark.jsonl --judge synthetic`; with --generation M, N
editing items and M generation items. --base-task: items of base MMaDA's text-to-image or
understanding task of the world instead, for `python -m evaluate --task t2i|mmu --judge synthetic_base`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, nargs="?", help="output folder (the training dataset)")
    p.add_argument("--benchmark", type=Path, metavar="DIR", help="write an evaluation benchmark to DIR instead")
    p.add_argument("--num", type=int, required=True, help="number of examples")
    p.add_argument("--generation", type=int, default=None, metavar="M",
                   help="with --benchmark: N editing items plus M generation items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--t2i-fraction", type=float, default=0.1,
                   help="fraction of examples without input image and/or instruction (default 0.1)")
    p.add_argument("--base-task", choices=["t2i", "mmu"], default=None,
                   help="with --benchmark: items of base MMaDA's t2i or mmu task")
    p.add_argument("--base-tasks", action="store_true",
                   help="training dataset: add the t2i_prompt / mmu_question / mmu_answer fields")
    args = p.parse_args(argv)
    if (args.out_dir is None) == (args.benchmark is None):
        p.error("give either OUT_DIR (a training dataset) or --benchmark DIR")
    if (args.generation is not None or args.base_task) and args.benchmark is None:
        p.error("--generation and --base-task are for --benchmark")
    if args.base_tasks and args.benchmark is not None:
        p.error("--base-tasks is for a training dataset (a base-task benchmark: --base-task t2i|mmu)")
    from mmada_jax.data.synthetic import write_dataset
    t0 = time.perf_counter()
    try:
        if args.base_task:
            from mmada_jax.evaluation.synthetic_judge import write_base_benchmark
            path = write_base_benchmark(args.benchmark, args.num, args.base_task, seed=args.seed, size=args.size)
        elif args.benchmark is not None:
            from mmada_jax.evaluation.synthetic_judge import write_benchmark
            path = write_benchmark(args.benchmark, args.num, seed=args.seed, size=args.size,
                                   t2i_fraction=args.t2i_fraction, generation=args.generation)
        else:
            path = write_dataset(args.out_dir, args.num, seed=args.seed, size=args.size,
                                 t2i_fraction=args.t2i_fraction, base_tasks=args.base_tasks)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    count = args.num + (args.generation or 0)
    print(f"wrote {count} {'benchmark items' if args.benchmark else 'examples'} to {path} in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m train.synthetic OUT_DIR --num N --seed S [--size 64] [--t2i-fraction 0.1]

Write a synthetic simple-shapes editing dataset (OUT_DIR/examples.jsonl + OUT_DIR/images/*.png);
see mmada_jax.data.synthetic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, help="output folder")
    p.add_argument("--num", type=int, required=True, help="number of examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--t2i-fraction", type=float, default=0.1,
                   help="fraction of examples without input image and/or instruction (default 0.1)")
    args = p.parse_args(argv)
    from mmada_jax.data.synthetic import write_dataset
    t0 = time.perf_counter()
    try:
        path = write_dataset(args.out_dir, args.num, seed=args.seed, size=args.size,
                             t2i_fraction=args.t2i_fraction)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.num} examples to {path} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

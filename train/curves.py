"""python -m train.curves --run LABEL=RUN [--run ...] --column TITLE=COLUMN [...] --out PNG

Draw one metrics column of several runs in one panel per column (e.g. ParaRL with sampled steps
beside its output-level ablation), each a trailing moving average over --window steps. RUN is a
run folder (its metrics.jsonl) or a metrics.jsonl.
"""

from __future__ import annotations

import argparse
import sys


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected LABEL=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k, v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.curves", description=__doc__.split("\n\n")[1])
    p.add_argument("--run", type=_pair, action="append", required=True, metavar="LABEL=RUN")
    p.add_argument("--column", type=_pair, action="append", required=True, metavar="TITLE=COLUMN")
    p.add_argument("--window", type=int, default=1, help="moving-average window in steps (1: raw)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    from mmada_jax.cli_utils import run_guarded

    def run() -> int:
        import os
        from pathlib import Path
        from mmada_jax.plots import compare_runs
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise ValueError(f"{out} exists: pass --overwrite to replace it")
        partial = out.with_name(f".{out.stem}.partial.png")     # swapped in only once drawn
        compare_runs(dict(args.run), dict(args.column), partial, window=args.window)
        os.replace(partial, out)
        print(out)
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

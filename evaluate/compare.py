"""python -m evaluate compare RUN_A RUN_B [RUN ...] [--labels A,B,...] [--out DIR [--overwrite]]

Compare evaluation runs (folders written by python -m evaluate --out): per category and overall,
each metric per run and its delta against the first run, also over only the items every run judged
when their item sets differ (see mmada_jax.evaluation.compare). Prints the Markdown tables; with
--out also writes DIR/compare.md, compare.json and compare.html (the tables, then every item's
outputs side by side).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluate compare", description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders; the first is the baseline of the deltas")
    p.add_argument("--labels", help="comma-separated labels, one per RUN (default: the folder names)")
    p.add_argument("--out", help="folder to write compare.md, compare.json and compare.html to (default: print only)")
    p.add_argument("--overwrite", action="store_true", help="replace the compare.* files --out already holds")
    args = p.parse_args(argv)
    if args.overwrite and args.out is None:
        p.error("--overwrite needs --out")
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()

    def run() -> int:
        from mmada_jax.evaluation.compare import OUT_FILES, compare, comparison_markdown, load_runs, write_comparison
        labels = None if args.labels is None else args.labels.split(",")
        if args.out is None:
            print(comparison_markdown(compare(load_runs(args.runs, labels))))
            return 0
        comp = write_comparison(args.runs, args.out, labels, overwrite=args.overwrite)
        print(comparison_markdown(comp))
        print("wrote " + ", ".join(os.path.join(args.out, name) for name in OUT_FILES))
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

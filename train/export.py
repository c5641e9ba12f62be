"""python -m train.export RUN DST [--overwrite]

Write a training run (train.sft's out_dir: its latest checkpoint; or RUN/checkpoints/N) as a
converted checkpoint with its tokenizer (DST/hf) and image tokenizer (DST/vqvae), so that
--checkpoint DST alone samples and evaluates it (see mmada_jax.export).
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n\n")[1])
    p.add_argument("run", help="training run folder or one of its checkpoints")
    p.add_argument("dst", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the checkpoint files DST already holds")
    args = p.parse_args(argv)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()

    def run() -> int:
        from mmada_jax.export import export_run
        export_run(args.run, args.dst, overwrite=args.overwrite)
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

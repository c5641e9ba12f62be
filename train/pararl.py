"""python -m train.pararl --config configs/NAME.yaml [key=value ...]

ParaRL (trajectory-level RL with per-step rewards) of a MMaDA-Parallel-M checkpoint: see
configs/demo_pararl.yaml (the synthetic world's demo model) and mmada_jax/rl/loop.py for what a step
does and what it writes. Rerunning the same command resumes from the run's last checkpoint.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.pararl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = parser.parse_args(argv)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()

    def run() -> int:
        from mmada_jax.rl.config import RLConfig
        from mmada_jax.rl.loop import run_pararl
        run_pararl(RLConfig.from_yaml(args.config, args.overrides))
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

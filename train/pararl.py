"""python -m train.pararl --config configs/NAME.yaml [key=value ...] [--compile-only --mesh fsdp=N]

ParaRL (trajectory-level RL with per-step rewards) of a MMaDA-Parallel-M or -A checkpoint (the
config's ``task``): see configs/demo_pararl.yaml (the synthetic world's demo model),
configs/mmada_parallel_m_pararl.yaml and configs/mmada_parallel_a_pararl.yaml (8B), and
mmada_jax/rl/loop.py for what a step does and what it writes. Rerunning the same command resumes
from the run's last checkpoint. ``--compile-only`` compiles the step's programs (rollout sampler,
log-prob forwards, train step) for abstract shapes on N fake CPU devices, no weights, and prints
each device's memory and the estimated peak (mmada_jax/rl/memory_plan.py); ``--search-rollouts GB``
also finds the most rollouts per step (G x prompts_per_step, G fixed) whose peak fits GB.
"""

from __future__ import annotations

import argparse
import sys


def parse(argv=None, prog: str = "python -m train.pararl", doc: str = __doc__):
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    parser.add_argument("--compile-only", action="store_true",
                        help="print the per-device memory plan of a step (fake CPU devices, no weights)")
    parser.add_argument("--mesh", default=None, help="mesh, e.g. fsdp=8 (overrides the config's)")
    parser.add_argument("--search-rollouts", type=float, nargs="*", default=None, metavar="GB",
                        help="with --compile-only: the most rollouts per step whose peak fits each of these GB budgets")
    return parser.parse_args(argv)


def main(argv=None, section: str = "pararl", prog: str = "python -m train.pararl", doc: str = __doc__) -> int:
    args = parse(argv, prog, doc)
    overrides = list(args.overrides) + ([f"mesh={args.mesh}"] if args.mesh else [])
    if args.compile_only:
        from mmada_jax.cli_utils import use_fake_devices
        use_fake_devices(args.mesh)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()

    def run() -> int:
        from mmada_jax.rl.config import RLConfig
        config = RLConfig.from_yaml(args.config, overrides, section=section)
        if args.compile_only:
            from mmada_jax.rl.memory_plan import print_plan
            print_plan(config, args.search_rollouts)
            return 0
        from mmada_jax.rl.loop import run_pararl
        run_pararl(config)
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

"""python -m train.sft --config configs/NAME.yaml [key=value ...] [--compile-only --mesh fsdp=N]

Parallel SFT of MMaDA-Parallel-M or MMaDA-Parallel-A (the config's ``objective``; ``auto`` follows
the checkpoint's kind): see configs/tiny_sft.yaml, configs/mmada_parallel_m_sft.yaml,
configs/tiny_sft_a.yaml and configs/mmada_parallel_a_sft.yaml. ``--compile-only`` compiles the train step for abstract shapes
on N fake CPU devices and prints each device's memory (the AOT memory plan); ``--per-device-batch``
sets the batch for it, ``--search-batch GB`` finds the largest per-device batch that fits GB.

Multi-host: run the same command on every host (see :mod:`mmada_jax.distributed` for how the
processes find each other: a TPU pod slice, SLURM ``srun``, or ``MMADA_COORDINATOR`` /
``MMADA_NUM_PROCESSES`` / ``MMADA_PROCESS_ID``); ``out_dir`` must be on a file system every host
sees.
"""

from __future__ import annotations

import argparse
import sys


def parse(argv=None):
    parser = argparse.ArgumentParser(prog="python -m train.sft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    parser.add_argument("--compile-only", action="store_true")
    parser.add_argument("--mesh", default=None, help="mesh, e.g. fsdp=8 (overrides the config's)")
    parser.add_argument("--per-device-batch", type=int, default=None)
    parser.add_argument("--search-batch", type=float, nargs="*", default=None,
                        help="with --compile-only: largest per-device batch fitting each of these GB budgets")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    overrides = list(args.overrides) + ([f"mesh={args.mesh}"] if args.mesh else [])
    if args.compile_only:
        from mmada_jax.cli_utils import use_fake_devices
        use_fake_devices(args.mesh)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    from mmada_jax.training import TrainConfig
    quiet_logs()

    def run() -> int:
        if not args.compile_only:   # multi-host: join the other processes before any device is used
            from mmada_jax.distributed import initialize
            initialize()
        config = TrainConfig.from_yaml(args.config, overrides)
        if args.compile_only:
            from mmada_jax.training.memory_plan import print_plan
            print_plan(config, args.per_device_batch, args.search_batch)
            return 0
        from mmada_jax.training.loop import run_sft
        run_sft(config)
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

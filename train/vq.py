"""python -m train.vq --config configs/demo_vq.yaml [key=value ...] [vq.key=value ...]

Train a MAGVIT-v2 image tokenizer on images of the synthetic shapes world (see
mmada_jax.vq.train): progress lines, Orbax checkpoints in OUT_DIR/checkpoints (rerun the same
command to resume, bit-exactly), and at the end OUT_DIR/vq, a converted checkpoint for load_vq,
--vq and convert_torch_weights.py --to-hf, with the judge's reconstruction scores.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.vq", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a YAML file with 'vq' and 'train' sections")
    p.add_argument("overrides", nargs="*", help="key=value overrides of 'train', vq.key=value of the model")
    args = p.parse_args(argv)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()

    def run() -> int:
        from mmada_jax.vq.train import VQTrainConfig, run_vq_training
        run_vq_training(VQTrainConfig.from_yaml(args.config, args.overrides))
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

"""python -m train.unigrpo --config configs/NAME.yaml [key=value ...] [--compile-only --mesh fsdp=N]

UniGRPO (MMaDA's RL stage) of a base MMaDA checkpoint on its text, multimodal-understanding or
text-to-image task (the config's ``task``: text, mmu or t2i): G rollouts per prompt, rewards of the
final outputs standardised within each group, and per inner update a scheduled re-masking of each
response scored by the policy, the old policy and the frozen reference (mmada_jax/rl/unigrpo.py).
The config's keys sit under ``unigrpo:``; they are ParaRL's (mmada_jax/rl/config.py) with
UniGRPO's defaults, and the run is ParaRL's loop (mmada_jax/rl/loop.py): the same progress lines,
metrics, curves, sample sheets, checkpoints and resume. See configs/mmada_8b_unigrpo.yaml.
"""

from __future__ import annotations

import sys

from train.pararl import main as _main


def main(argv=None) -> int:
    return _main(argv, section="unigrpo", prog="python -m train.unigrpo", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())

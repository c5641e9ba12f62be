"""python -m sample SUBCOMMAND ...

Subcommands:
  logits   load a checkpoint (ours or a HF directory) and show what it predicts at the masked
           positions of a sequence. Without --checkpoint it uses the tiny test checkpoint
           (tests/golden/mmada_tiny: RANDOM weights, so the predictions are meaningless).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "tests" / "golden" / "mmada_tiny"


def _logits(args) -> int:
    import numpy as np
    from mmada_jax import load_model, make_mesh
    from mmada_jax.predict import default_prompt, masked_predictions
    from mmada_jax.sharding import parse_mesh

    if args.checkpoint is None:
        print(f"no --checkpoint: using the tiny test checkpoint {DEFAULT_CHECKPOINT} (random weights)")
    mesh = make_mesh(parse_mesh(args.mesh)) if args.mesh else None
    model, config = load_model(args.checkpoint or DEFAULT_CHECKPOINT, dtype=args.dtype, mesh=mesh)
    print(f"model: kind {config.kind}, {config.num_params() / 1e6:.1f}M parameters, {config.n_layers} layers, "
          f"vocab {config.vocab_size}, {config.dtype}")
    if args.ids:
        ids = np.asarray([[int(x) for x in args.ids.replace(",", " ").split()]], np.int32)
    else:
        ids = default_prompt(model)
    if ids.max() >= config.vocab_size or ids.min() < 0:
        raise ValueError(f"--ids must lie in [0, {config.vocab_size}); got {ids.min()}..{ids.max()}")
    where, top_ids, top_probs, seconds = masked_predictions(model, ids, args.top_k)
    print(f"input ids ({ids.shape[1]}): {' '.join(map(str, ids[0]))}")
    print(f"{len(where)} masked positions, forward in {seconds * 1e3:.1f} ms "
          f"({ids.size / seconds:.0f} tokens/s)")
    for (row, pos), cand, prob in zip(where, top_ids, top_probs):
        pairs = "  ".join(f"{c}:{p:.3f}" for c, p in zip(cand, prob))
        print(f"  row {row} pos {pos:4d}  top-{args.top_k}: {pairs}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("logits", help="predictions at the masked positions of a sequence")
    p.add_argument("--checkpoint", type=Path, default=None, help="converted or HF checkpoint directory")
    p.add_argument("--ids", default=None, help="token ids, comma or space separated (default: a small "
                   "prompt with masked slots in the model's id layout)")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored)")
    p.add_argument("--mesh", default=None, help="e.g. fsdp=4,tensor=2 (default: one device)")
    p.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    from mmada_jax.cli_utils import quiet_logs, run_guarded
    quiet_logs()
    return run_guarded(lambda: {"logits": _logits}[args.command](args))


if __name__ == "__main__":
    sys.exit(main())

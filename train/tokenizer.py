"""python -m train.tokenizer OUT_DIR --corpus DATA/examples.jsonl --model-config CONFIG [--min-count 1] [--overwrite]

Fit a word-level text tokenizer to a corpus (the ``instruction`` and ``reasoning`` fields of a
JSONL file, e.g. ``python -m train.synthetic``'s examples.jsonl), with the special ids where the
model config's token layout puts them and len(tokenizer) = its image offset (see
mmada_jax.tokenizer.build_word_tokenizer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.tokenizer", description=__doc__.split("\n\n")[1])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--corpus", type=Path, required=True, help="JSONL with 'instruction' / 'reasoning' fields")
    p.add_argument("--model-config", type=Path, required=True, help="YAML model config or checkpoint (token layout)")
    p.add_argument("--min-count", type=int, default=1, help="keep pieces seen at least this often (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR (after the new one is complete)")
    args = p.parse_args(argv)
    from mmada_jax.cli_utils import run_guarded
    from mmada_jax.tokenizer import fit_word_tokenizer

    def run() -> int:
        out = fit_word_tokenizer(args.corpus, args.model_config, args.out_dir, min_count=args.min_count,
                                 overwrite=args.overwrite)
        print(f"wrote the tokenizer to {out}")
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())

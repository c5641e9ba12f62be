"""python -m train.pretokenize SRC OUT --checkpoint CKPT --vq VQ --tokenizer TOK [options]

Tokenize instructions/reasoning and VQ-encode images of SFT examples (SRC: a JSONL file or a
folder with examples.jsonl; fields id, input_image, instruction, reasoning, output_image) into
ArrayRecord shards under OUT (a tfds dataset; see mmada_jax.data.records for the record format).
Bad examples are printed and listed in OUT/bad_examples.jsonl; --on-bad stop makes the first one
fatal (exit status 1). Example, with the tiny test models:

  python -m train.synthetic /tmp/syn --num 64 --seed 0
  python -m train.pretokenize /tmp/syn /tmp/syn_tok --checkpoint tests/golden/mmada_tiny \\
      --vq tests/golden/magvitv2_tiny --tokenizer tests/fixtures/tiny_tokenizer --text-len 512

The records are the same for both models; the checkpoint decides the image tokenizer and the
metadata: for MMaDA-Parallel-A (a dimoo checkpoint, aMUSEd VQ) it also stores the tokenized
--system-prompt, e.g.

  python -m train.pretokenize /tmp/syn /tmp/syn_tok_a --checkpoint tests/golden/dimoo_tiny \\
      --vq tests/golden/amused_vq_tiny --tokenizer tests/fixtures/tiny_tokenizer_a --image-size 64 --text-len 512
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.pretokenize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="JSONL file, or a folder holding examples.jsonl")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (token ids, tokenizer check)")
    p.add_argument("--vq", type=Path, required=True, help="image tokenizer checkpoint (MAGVIT-v2 for -M, aMUSEd for -A)")
    p.add_argument("--tokenizer", type=Path, required=True, help="text tokenizer directory")
    p.add_argument("--text-len", type=int, default=256,
                   help="L_t: BOS + text + EOS must fit in this many tokens (default 256)")
    p.add_argument("--image-size", type=int, default=None,
                   help="images are resized (-A: cropped) to S x S (default: the VQ config's image_size, else 512)")
    p.add_argument("--system-prompt", default=None,
                   help="MMaDA-Parallel-A only: the system turn of every sequence (default: -A's editing prompt)")
    p.add_argument("--shard-size", type=int, default=1000, help="examples per ArrayRecord shard (default 1000)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per VQ encode call (default 8)")
    p.add_argument("--on-bad", choices=("skip", "stop"), default="skip",
                   help="skip bad examples (default) or stop at the first one with exit status 1")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="fraction of examples for a 'validation' split (default 0: all in 'train')")
    p.add_argument("--split-seed", type=int, default=42, help="seed of the train/validation split (default 42)")
    p.add_argument("--base-tasks", action="store_true",
                   help="also store base MMaDA's t2i / mmu fields (t2i_prompt, mmu_question, mmu_answer; required "
                        "on every line) for SFT with base_text_len > 0")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset in OUT (the new one is swapped in only after success)")
    p.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    args = p.parse_args(argv)

    from mmada_jax.cli_utils import quiet_logs
    from mmada_jax.config import ConfigError
    from mmada_jax.data.pretokenize import BadExampleError, pretokenize
    from mmada_jax.hf_io import CheckpointError
    quiet_logs()
    try:
        s = pretokenize(args.src, args.out, checkpoint=args.checkpoint, vq=args.vq, tokenizer=args.tokenizer,
                        text_len=args.text_len, image_size=args.image_size, system_prompt=args.system_prompt,
                        shard_size=args.shard_size,
                        on_bad=args.on_bad, batch_size=args.batch_size, val_fraction=args.val_fraction,
                        split_seed=args.split_seed, overwrite=args.overwrite, base_tasks=args.base_tasks,
                        progress_every=args.progress_every)
    except BadExampleError as e:
        print(f"error: stopped at {e} (--on-bad stop); see {e.report_path or args.out / 'bad_examples.jsonl'}",
              file=sys.stderr)
        return 1
    except (CheckpointError, ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = ", ".join(f"{k} {v}" for k, v in s.written.items())
    print(f"wrote {sum(s.written.values())} examples ({written}) to {args.out}; skipped {s.skipped} bad "
          f"example(s){' (see ' + str(args.out / 'bad_examples.jsonl') + ')' if s.skipped else ''}; "
          f"{s.seconds:.1f} s, {s.encoded_per_second:.1f} examples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

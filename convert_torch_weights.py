"""Convert a PyTorch / Hugging Face checkpoint to mmada-jax (Orbax), or back with --to-hf.

    python convert_torch_weights.py SRC_DIR DST_DIR [--dtype float32|bfloat16] [--kind KIND]
    python convert_torch_weights.py OUR_CKPT HF_DIR --to-hf [--dtype ...]

OUR_CKPT: a converted checkpoint, a training run folder (train.sft's out_dir: its latest step) or
one training checkpoint (out_dir/checkpoints/N); read through mmada_jax.checkpoints.

Kinds: mmada (MMaDA-8B, MMaDA-Parallel-M), llada (LLaDA-8B), dimoo (the MMaDA-Parallel-A
transformer), magvitv2 (MAGVIT-v2 image tokenizer), amused (the aMUSEd VQ of -A, in a vqvae/
subfolder), clip (a Hugging Face CLIPModel, both towers, e.g. openai/clip-vit-large-patch14 for the
clip reward; its tokenizer files are kept in DST/hf/, its position_ids buffers checked, not stored);
detected from the source config.json unless --kind is given.

DST is written beside itself (.DST.tmp-...) and swapped in only when complete: a failed run leaves DST
as it was, and --overwrite replaces it only after success. Every tensor is checked for NaN/Inf (the
conversion fails listing them unless --allow-nonfinite) and the checkpoint written carries a checksum per
parameter, checked when it is read. Bad input exits 2 with a message naming the file, key or path
(missing shard, unexpected or missing keys, wrong shapes, truncated or corrupt files, DST inside SRC,
full disk); an internal error exits 1.
"""

import argparse
import sys

from mmada_jax.cli_utils import quiet_logs, run_guarded


def main(argv=None) -> int:
    from mmada_jax.convert import KINDS, convert_to_orbax, export_to_hf

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="HF checkpoint directory (or, with --to-hf, our checkpoint, a training run "
                                     "or one of its checkpoints)")
    parser.add_argument("dst", help="output directory")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="parameter dtype to write (default: the source's)")
    parser.add_argument("--kind", choices=sorted(KINDS), default=None,
                        help="checkpoint family (default: detected from config.json)")
    parser.add_argument("--to-hf", action="store_true",
                        help="export our checkpoint SRC as HF safetensors + config.json")
    parser.add_argument("--max-shard-size-gb", type=float, default=5.0,
                        help="with --to-hf: size of each safetensors shard")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty DST (only after the new checkpoint is complete)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="convert tensors holding NaN/Inf (with a warning) instead of failing")
    args = parser.parse_args(argv)
    quiet_logs()
    if args.to_hf:
        export_to_hf(args.src, args.dst, dtype=args.dtype, overwrite=args.overwrite,
                     allow_nonfinite=args.allow_nonfinite, max_shard_bytes=int(args.max_shard_size_gb * 1024**3))
    else:
        convert_to_orbax(args.src, args.dst, kind=args.kind, dtype=args.dtype, overwrite=args.overwrite,
                         allow_nonfinite=args.allow_nonfinite)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))

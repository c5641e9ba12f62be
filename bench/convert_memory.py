"""Peak memory of convert_torch_weights.py on an 8B-shaped random checkpoint.

    python bench/convert_memory.py --config configs/mmada_parallel_m.yaml --workdir /tmp/conv8b
    python bench/convert_memory.py --n-layers 4 ...      # full width, fewer layers (scaled)

Writes a random HF checkpoint with the reference key names (bf16 safetensors shards of ~5 GB and
an index, as ``save_pretrained`` writes them), converts it in a child process, and prints the
child's peak RSS next to the model size and the largest stacked parameter (the streaming
converter's memory is ~2x the largest parameter in the target dtype, independent of depth only
through that parameter). Needs about 2x the model size of free disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmada_jax import ModelConfig  # noqa: E402
from mmada_jax.convert import llada_param_maps  # noqa: E402
from mmada_jax.hf_io import write_safetensors_shards  # noqa: E402
from mmada_jax.model import BLOCK_PARAMS  # noqa: E402


def write_random_checkpoint(config: ModelConfig, directory: Path, dtype) -> int:
    rng = np.random.default_rng(0)
    shapes = {"wte": (config.vocab_size, config.d_model), "ln_f": (config.d_model,),
              "lm_head": (config.vocab_size, config.d_model)}
    for name, (_, shape) in BLOCK_PARAMS.items():
        s = shape(config)
        shapes[name] = s[::-1] if len(s) == 2 else s   # torch Linear is [out, in]

    def tensors():
        for m in llada_param_maps(config):
            for key in m.sources:
                shape = shapes[m.path[0]]
                block = rng.standard_normal(min(int(np.prod(shape)), 1 << 20), dtype=np.float32)
                data = np.resize(block, int(np.prod(shape))).reshape(shape) * 0.02
                yield key, data.astype(dtype)
    names = write_safetensors_shards(directory, tensors())
    (directory / "config.json").write_text(json.dumps(config.to_hf_config(), indent=2))
    return len(names)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mmada_parallel_m.yaml")
    parser.add_argument("--n-layers", type=int, default=None, help="scale depth down (full width)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/convert_memory"))
    parser.add_argument("--dtype", default="bfloat16", help="target dtype of the conversion")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    config = ModelConfig.from_yaml(ROOT / args.config)
    if args.n_layers:
        config = dataclasses.replace(config, n_layers=args.n_layers)
    src, dst = args.workdir / "hf", args.workdir / "ours"
    shutil.rmtree(args.workdir, ignore_errors=True)
    t = time.time()
    shards = write_random_checkpoint(config, src, ml_dtypes.bfloat16)
    print(f"wrote {config.num_params() / 1e9:.2f}B-parameter bf16 checkpoint ({shards} shards) in "
          f"{time.time() - t:.0f}s")
    t = time.time()
    # the child reports its own VmHWM (getrusage of children would include this process's peak)
    out = subprocess.run([sys.executable, str(ROOT / "convert_torch_weights.py"), str(src), str(dst),
                          "--dtype", args.dtype], check=True, capture_output=True, text=True).stdout
    print(out, end="")
    peak = float(re.findall(r"peak RSS ([0-9.]+) GB", out)[-1]) * 1e9
    width = 4 if args.dtype == "float32" else 2
    model_bytes = config.num_params() * width
    largest = config.n_layers * config.d_model * config.mlp_hidden_size * width
    print(f"converted in {time.time() - t:.0f}s to {args.dtype}: peak RSS {peak / 1e9:.2f} GB; model "
          f"{model_bytes / 1e9:.2f} GB (peak/model {peak / model_bytes:.2f}); largest stacked parameter "
          f"{largest / 1e9:.2f} GB (peak/largest {peak / largest:.2f})")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

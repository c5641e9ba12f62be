"""How long loading the demo takes: the pieces the sample CLI loads, each timed in fresh processes.

    python bench/load.py                          # this tree, median of 5 fresh processes
    python bench/load.py --runs 7 --before /tmp/before   # + the same pieces with another checkout's
                                                          # code (e.g. `git worktree add /tmp/before HEAD`)

Each run is a new Python process (JAX caches compiled programs and Orbax/absl state per process),
which loads, in the order the sample CLI does: the transformer (``tests/golden/mmada_tiny``, a HF
directory converted in memory), the image tokenizer (``tests/golden/magvitv2_tiny``) and the text
tokenizer (``tests/fixtures/tiny_tokenizer`` via ``mmada_jax.tokenizer.load_tokenizer``); then the
same transformer from a converted checkpoint (written once by this tree's converter into a
temporary directory; its layout is the same for both trees). Parameters are blocked on
(``jax.block_until_ready``) before a clock is read. Printed: the median seconds of each piece,
``import`` (``import mmada_jax`` and the JAX backend start), and ``total``. With ``--before DIR``
the two code trees run alternately (the same data, from this tree) and a ratio column gives
before / after (above 1: this tree is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIECES = ("import", "model_hf", "vq", "tokenizer", "model_converted", "total")

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import jax
from flax import nnx
import mmada_jax
from mmada_jax.tokenizer import load_tokenizer
jax.devices()
out = {"import": time.perf_counter() - t0}
ckpt, vq_path, tok_path, converted = sys.argv[1:5]

def timed(name, fn, arrays=lambda value: value):
    t = time.perf_counter()
    value = fn()
    jax.block_until_ready(jax.tree.leaves(arrays(value)))
    out[name] = time.perf_counter() - t
    return value

model, config = timed("model_hf", lambda: mmada_jax.load_model(ckpt), lambda mc: nnx.state(mc[0]))
timed("vq", lambda: mmada_jax.load_vq(vq_path), lambda tok: nnx.state(tok.model))
timed("tokenizer", lambda: load_tokenizer(tok_path, config), lambda tok: [])
out["total"] = time.perf_counter() - t0
timed("model_converted", lambda: mmada_jax.load_model(converted), lambda mc: nnx.state(mc[0]))
print("BENCH " + json.dumps(out))
"""


def run_once(code_root: Path, paths: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(code_root))
    proc = subprocess.run([sys.executable, "-c", CHILD, *paths], cwd=code_root, env=env,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH "):])
    raise SystemExit(f"benchmark process failed in {code_root}:\n{proc.stderr[-3000:]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per code tree (median)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout (e.g. a git worktree of the previous commit) to time as the baseline")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from mmada_jax.cli_utils import quiet_logs
    from mmada_jax.convert import convert_to_orbax
    quiet_logs()
    with tempfile.TemporaryDirectory() as tmp:
        converted = Path(tmp) / "mmada_tiny"
        convert_to_orbax(ROOT / "tests/golden/mmada_tiny", converted, log=lambda *_: None)
        paths = [str(ROOT / "tests/golden/mmada_tiny"), str(ROOT / "tests/golden/magvitv2_tiny"),
                 str(ROOT / "tests/fixtures/tiny_tokenizer"), str(converted)]
        trees = {"after": ROOT} | ({"before": args.before.resolve()} if args.before else {})
        results: dict[str, list[dict]] = {name: [] for name in trees}
        for i in range(args.runs):
            for name, root in trees.items():   # alternate, so drift hits both alike
                results[name].append(run_once(root, paths))
            print(f"run {i + 1}/{args.runs} done", file=sys.stderr)

    med = {name: {p: statistics.median(r[p] for r in rows) for p in PIECES} for name, rows in results.items()}
    print(f"median of {args.runs} fresh processes, seconds ({sys.platform}, python {sys.version.split()[0]})")
    header = f"{'piece':<16}" + "".join(f"{name:>10}" for name in trees) + ("   before/after" if args.before else "")
    print(header)
    for p in PIECES:
        row = f"{p:<16}" + "".join(f"{med[name][p]:>10.3f}" for name in trees)
        if args.before:
            row += f"   {med['before'][p] / med['after'][p]:>12.2f}x"
        print(row)
    print("total = import + model_hf + vq + tokenizer (what the sample CLI's demo loads); "
          "model_converted is timed after it, in the same process")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One process of the multi-host test (tests/test_multihost.py): SFT (train, save, resume) and a
batched MMaDA-Parallel-M sampling run on a mesh over every process's devices, by the library
and by the ``python -m sample parallel`` command line.

    python tests/multihost_worker.py OUT_DIR DATA_DIR --checkpoint CKPT --vq VQ [--train-mesh M] [--sample-mesh M]

Launched as N processes with ``MMADA_COORDINATOR`` / ``MMADA_NUM_PROCESSES`` /
``MMADA_PROCESS_ID`` (joined by :func:`mmada_jax.distributed.initialize`, called first, as the
entry points do), or as one process without them; the device count per process comes from
``XLA_FLAGS=--xla_force_host_platform_device_count=K``. Every process writes
``OUT_DIR/p{i}.json`` (what it saw) and ``OUT_DIR/sample_p{i}.npz`` (the sampled ids, gathered to
every process); the training run is ``OUT_DIR/run`` (process 0's metrics rows in
``OUT_DIR/rows.json``), the command line's samples ``OUT_DIR/cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# SFT: a run of STEPS steps, checkpoints every SAVE_AT, stopped after step SAVE_AT and resumed
SAVE_AT, STEPS = 2, 4
TEXT_LEN = 64         # texts cut to this budget (the test data was pretokenized with 512): short sequences
BATCH = 8             # training and sampling batch (global)


class Preempted(Exception):
    """Raised in every process when the data for step SAVE_AT + 1 is requested: the run stops as a
    preempted job would, after its checkpoint of step SAVE_AT (the same config then resumes: same
    compiled step, so the persistent compilation cache serves the second compile)."""


class _StopAfter:
    """A grain iterator that raises :class:`Preempted` instead of yielding batch ``n + 1``; its
    state (saved in the checkpoints) is the wrapped iterator's."""

    def __init__(self, iterator, n: int):
        self.iterator, self.left = iterator, n

    def __iter__(self):
        return self

    def __next__(self):
        if self.left == 0:
            raise Preempted()
        self.left -= 1
        return next(self.iterator)

    def get_state(self) -> bytes:       # a non-grain iterator's state is bytes for grain's handler
        return json.dumps(self.iterator.get_state()).encode()

    def set_state(self, state: bytes) -> None:
        self.iterator.set_state(json.loads(state))


def _preempted_after(n: int):
    def open_data(config, tokens, out_dir, log):
        from mmada_jax.training.data import open_data as real
        iterator, meta = real(config, tokens, out_dir, log)
        return _StopAfter(iterator, n), meta
    return open_data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--vq", type=Path, required=True)
    parser.add_argument("--train-mesh", default="fsdp=4,tensor=2")
    parser.add_argument("--sample-mesh", default="data=2,fsdp=2,tensor=2")
    args = parser.parse_args(argv)

    from mmada_jax import distributed
    distributed.initialize()              # before anything touches a device, as the entry points do

    import jax
    import numpy as np

    pid = jax.process_index()
    info = {"process_index": pid, "process_count": jax.process_count(), "device_count": jax.device_count(),
            "local_device_count": jax.local_device_count(), "distributed": distributed.is_initialized()}

    # --- (a) SFT to STEPS, stopped ("preempted") after the checkpoint of step SAVE_AT, then resumed
    from mmada_jax.training import TrainConfig
    from mmada_jax.training.loop import run_sft
    run = args.out / "run"
    config = TrainConfig(checkpoint=str(args.checkpoint), data_dir=str(args.data), text_len=TEXT_LEN,
                         batch_size=BATCH, grad_accum=2, steps=STEPS, lr=3e-3, warmup_steps=1, out_dir=str(run),
                         save_every=SAVE_AT, log_every=1, mesh=args.train_mesh)
    logs: list[str] = []
    try:
        run_sft(config, log=logs.append, open_data=_preempted_after(SAVE_AT))
        raise AssertionError("the run was not stopped")
    except Preempted:
        pass
    rows = run_sft(config, log=logs.append)          # resumes from the checkpoint of step SAVE_AT
    info["train_log"] = logs
    if pid == 0:
        (args.out / "rows.json").write_text(json.dumps(rows))

    # --- (b) a batch of 8 prompts through the joint sampler, the model sharded by the rules
    from mmada_jax import load_model, make_mesh
    from mmada_jax.parallel_m import generate, inference_prompt
    from mmada_jax.sharding import parse_mesh
    mesh = make_mesh(parse_mesh(args.sample_mesh))
    model, _ = load_model(args.checkpoint, mesh=mesh)
    info["wte_spec"] = str(model.wte[...].sharding.spec)
    t = model.config.tokens
    rng = np.random.default_rng(0)               # the same prompts in every process
    pairs = [inference_prompt(t, rng.integers(0, t.codebook_size, 16), rng.integers(0, 120, n).tolist())
             for n in (3, 7, 5, 6, 2, 8, 4, 7)]
    assert len(pairs) == BATCH
    out = generate(model, [p[0] for p in pairs], [p[1] for p in pairs], seed=jax.random.split(jax.random.key(5), BATCH),
                   num_image_tokens=16, text_len=8, text_steps=8, image_steps=4, text_cfg=0.5, image_cfg=2.0,
                   text_temperature=0.7, image_temperature=1.0)
    np.savez(args.out / f"sample_p{pid}.npz", ids=out.ids, image_codes=out.image_codes, text_ids=out.text_ids)
    info["sample_types"] = [type(a).__name__ for a in (out.ids, out.image_codes, out.text_ids)]

    # --- (c) the sampling command line on the same mesh: 8 requests in one batch, process 0 writes
    from sample.__main__ import main as sample_main
    image = str(ROOT / "tests/fixtures/demo_input.png")
    info["cli_rc"] = sample_main(["parallel", "--checkpoint", str(args.checkpoint), "--vq", str(args.vq),
                                  "--tokenizer", str(ROOT / "tests/fixtures/tiny_tokenizer"),
                                  "--prompt", "Make it night.",
                                  "--image", *[image] * BATCH, "--batch-size", str(BATCH), "--mesh", args.sample_mesh,
                                  "--text-steps", "4", "--image-steps", "1", "--text-len", "16",
                                  "--out", str(args.out / "cli")])
    (args.out / f"p{pid}.json").write_text(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

"""Multi-host, proven on one machine: 2 processes x 4 CPU devices (``jax.distributed`` over
127.0.0.1, gloo collectives) give the results of 1 process x 8 devices on the same mesh shapes.

Both launches run tests/multihost_worker.py (at the same time, to save wall time): an SFT run of
the tiny MMaDA (``fsdp=4,tensor=2``: the FSDP axis spans both processes; 2 micro-batches per step)
stopped after its checkpoint of step 2 and resumed to step 4, then a batch of 8 prompts through
the MMaDA-Parallel-M joint sampler (``data=2,fsdp=2,tensor=2``: the model sharded by the rules,
the batch split over both processes), then the same kind of batch through the command line
``python -m sample parallel --mesh ...`` (process 0 alone writes its files). The processes of the
multi-host launch find each other through ``MMADA_COORDINATOR`` / ``MMADA_NUM_PROCESSES`` /
``MMADA_PROCESS_ID``, read by :func:`mmada_jax.distributed.initialize` as the entry points do.
The test skips only when two processes cannot start ``jax.distributed`` on this platform.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, golden_path

WORKER = Path(__file__).resolve().parent / "multihost_worker.py"
TIMEOUT_S = 420          # for both launches together
N_EXAMPLES = 16          # training examples (two epochs of batches of 8 in 4 steps)
# Floating-point tolerance of the SFT comparison, relative to each array's scale (max |x|); NOT
# bit-exact, and why: the reductions over the batch (loss and gradient sums over the fsdp axis,
# which spans both processes here) cross the process boundary in the 2 x 4 run, where gloo adds
# the 8 devices' partial sums in another association order than XLA's in-process CPU collectives
# (which add them one after the other in device order). Measured: a psum of random float32 over
# 8 devices differs in about half of its elements, mostly by 1-2 ulp; after 4 steps the
# parameters differ by <= 1.2e-7 absolute (<= 1e-7 of their scale), the Adam moments by
# ~1e-7 of theirs, the losses by 1 ulp from step 2 on. Everything without a cross-process float
# sum is exact, and asserted so: the sampled ids (each batch row is computed whole; the model's
# weight-split sums stay inside a process), step counters, PRNG keys, the data order.
RTOL = 1e-6


def _free_port() -> int:
    try:
        import portpicker
        return portpicker.pick_unused_port()
    except ImportError:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def _env(devices: int, extra: dict, cache: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMADA_", "SLURM_", "OMPI_"))
           and k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
    flags = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f)
    env.update(XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
               JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               **extra)
    if cache is not None:   # the resumed run compiles the same train step again: served from this cache
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def _start(out: Path, data: Path, processes: int, devices: int) -> list[tuple[subprocess.Popen, Path]]:
    out.mkdir(parents=True)
    port = _free_port()
    procs = []
    for pid in range(processes):
        extra = ({"MMADA_COORDINATOR": f"127.0.0.1:{port}", "MMADA_NUM_PROCESSES": str(processes),
                  "MMADA_PROCESS_ID": str(pid)} if processes > 1 else {"MMADA_DISTRIBUTED": "0"})
        log = out / f"log{pid}.txt"
        with open(log, "w") as f:
            procs.append((subprocess.Popen(
                [sys.executable, str(WORKER), str(out), str(data), "--checkpoint", str(golden_path("mmada_tiny")),
                 "--vq", str(golden_path("magvitv2_tiny"))],
                cwd=ROOT, env=_env(devices, extra, out / "jax_cache"), stdout=f, stderr=subprocess.STDOUT,
                start_new_session=True), log))
    return procs


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # its own session: the worker and anything it started
        except ProcessLookupError:
            pass
        proc.wait()


def _wait(procs: list, deadline: float) -> None:
    """Every process exits 0 before the deadline; otherwise all are killed and the failure names
    the first bad one with the end of its log."""
    try:
        while any(p.poll() is None for p, _ in procs):
            failed = [(p, log) for p, log in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        bad = [(p, log) for p, log in procs if p.poll() != 0]
        if bad:
            p, log = bad[0]
            why = "timed out" if p.poll() is None else f"exit code {p.returncode}"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            pytest.fail(f"{log.parent.name} process {procs.index((p, log))}: {why}\n{tail}")
    finally:
        for p, _ in procs:
            _kill(p)


def _can_start_distributed() -> str | None:
    """Why jax.distributed cannot start on this platform (None: it can): two processes of one CPU
    device each try to connect and run one cross-process sum."""
    code = ("import os, sys; from mmada_jax import distributed; distributed.initialize(); import jax, numpy as np;"
            "from jax.experimental import multihost_utils as m;"
            "assert m.process_allgather(np.int32(jax.process_index())).tolist() == [0, 1]")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=_env(1, {"MMADA_COORDINATOR": f"127.0.0.1:{port}", "MMADA_NUM_PROCESSES": "2",
                                           "MMADA_PROCESS_ID": str(i)}), start_new_session=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    except subprocess.TimeoutExpired:
        return "two processes did not connect within 120 s"
    finally:
        for p in procs:
            _kill(p)
    if any(p.returncode for p in procs):
        last = (outs[0] or b"").decode(errors="replace").strip().splitlines()
        return "jax.distributed did not start on this platform: " + (last[-1] if last else "no output")
    return None


def _data(root: Path) -> Path:
    from mmada_jax import load_vq
    from mmada_jax.data.pretokenize import pretokenize
    from mmada_jax.data.synthetic import write_dataset
    vq = load_vq(golden_path("magvitv2_tiny"))
    size = int(getattr(vq.config, "image_size", None) or 4 * vq.downsample)   # as tests/test_train_loop.py
    write_dataset(root / "raw", N_EXAMPLES, seed=1, size=size)
    pretokenize(root / "raw", root / "data", checkpoint=golden_path("mmada_tiny"), vq=golden_path("magvitv2_tiny"),
                tokenizer=ROOT / "tests/fixtures/tiny_tokenizer", text_len=512, log=lambda *_: None)
    return root / "data"


def _state(step_dir: Path) -> dict:
    """A training checkpoint's state as numpy, whatever mesh and processes wrote it."""
    import jax
    import orbax.checkpoint as ocp
    handler = ocp.PyTreeCheckpointHandler()
    try:
        meta = handler.metadata(step_dir / "state").tree
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        state = handler.restore(step_dir / "state", args=ocp.args.PyTreeRestore(restore_args=args))
    finally:
        handler.close()
    return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def _assert_close(name: str, want: np.ndarray, got: np.ndarray) -> None:
    assert want.shape == got.shape and want.dtype == got.dtype, name
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    scale = float(np.max(np.abs(want))) or 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert err <= RTOL * scale, f"{name}: max |difference| {err:.3g} > {RTOL} x scale {scale:.3g}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _data(tmp_path_factory.mktemp("multihost_data"))


@pytest.mark.golden
def test_global_batches_do_not_depend_on_the_process_count(data):
    """make_dataset(shard="batch") (the SFT loop's): the local batches of processes 0 and 1 of 2,
    block by block in each of 2 micro-batches, are the batches of one process."""
    from mmada_jax.data.pipeline import make_dataset
    kw = dict(text_len=512, seed=3, with_ids=True, shard="batch", micro_batches=2)
    one = iter(make_dataset(data, batch_size=8, process_index=0, process_count=1, **kw))
    two = [iter(make_dataset(data, batch_size=4, process_index=i, process_count=2, **kw)) for i in range(2)]
    for _ in range(5):                        # 40 rows of a 16-example split: into the third epoch
        want = next(one)["id"].tolist()
        local = [next(it)["id"].tolist() for it in two]
        got = [x for micro in range(2) for part in local for x in part[2 * micro:2 * micro + 2]]
        assert got == want
    assert len(set(want)) == 8


def test_launch_arguments_from_the_environment():
    from mmada_jax.distributed import launch_arguments
    assert launch_arguments({}) is None
    explicit = {"MMADA_COORDINATOR": "10.0.0.1:1234", "MMADA_NUM_PROCESSES": "4", "MMADA_PROCESS_ID": "2"}
    assert launch_arguments(explicit) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}
    with pytest.raises(ValueError, match="MMADA_PROCESS_ID"):
        launch_arguments({"MMADA_COORDINATOR": "h:1", "MMADA_NUM_PROCESSES": "2"})
    assert launch_arguments(dict(explicit, MMADA_DISTRIBUTED="0")) is None
    assert launch_arguments({"MMADA_DISTRIBUTED": "1"}) == {}                 # JAX detects the rest
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2"}
    assert launch_arguments(slurm) == {}
    assert launch_arguments(dict(slurm, SLURM_NTASKS="1")) is None           # one task: a single process
    assert launch_arguments({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}) == {
        "num_processes": 2, "process_id": 1}
    with pytest.raises(ValueError, match="MMADA_DISTRIBUTED"):
        launch_arguments({"MMADA_DISTRIBUTED": "maybe"})


@pytest.mark.golden
@pytest.mark.slow      # ~70-90 s: four launches of two processes (pytest -m slow)
def test_two_processes_match_one(tmp_path, data):
    why = _can_start_distributed()
    if why:
        pytest.skip(why)
    deadline = time.monotonic() + TIMEOUT_S
    single, multi = tmp_path / "1x8", tmp_path / "2x4"
    procs = _start(single, data, 1, 8) + _start(multi, data, 2, 4)
    _wait(procs, deadline)

    # who ran: one process of 8 devices; two connected processes of 4, one mesh of 8
    infos = {d: [json.loads((d / f"p{i}.json").read_text()) for i in range(n)] for d, n in ((single, 1), (multi, 2))}
    assert [(i["process_count"], i["device_count"], i["local_device_count"], i["distributed"])
            for i in infos[single]] == [(1, 8, 8, False)]
    assert [(i["process_index"], i["process_count"], i["device_count"], i["local_device_count"], i["distributed"])
            for i in infos[multi]] == [(0, 2, 8, 4, True), (1, 2, 8, 4, True)]
    log0, log1 = infos[multi][0]["train_log"], infos[multi][1]["train_log"]
    assert log1 == [] and any("processes 2" in line for line in log0)   # process 0 logs, alone
    assert any("resumed from step 2" in line for line in log0)

    # (a) SFT: the same losses and metrics, step by step, and the same checkpoints
    rows = {d: json.loads((d / "rows.json").read_text()) for d in (single, multi)}
    assert [r["step"] for r in rows[multi]] == [r["step"] for r in rows[single]] == [3, 4]
    for key in ("loss", "text_loss", "image_loss", "grad_norm", "lr", "skipped"):
        np.testing.assert_allclose([r[key] for r in rows[multi]], [r[key] for r in rows[single]], rtol=RTOL,
                                   atol=0, err_msg=key)
    metrics = {d: [json.loads(x) for x in (d / "run/metrics.jsonl").read_text().splitlines()] for d in (single, multi)}
    assert [m["step"] for m in metrics[multi]] == [m["step"] for m in metrics[single]] == [1, 2, 3, 4]
    np.testing.assert_allclose([m["loss"] for m in metrics[multi]], [m["loss"] for m in metrics[single]], rtol=RTOL)
    for d in (single, multi):
        assert sorted(p.name for p in (d / "run/checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    # the data iterator's position: one state file per process
    assert sorted(p.name for p in (multi / "run/checkpoints/4/data").glob("process_*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    for step in ("2", "4"):
        want, got = _state(single / "run/checkpoints" / step), _state(multi / "run/checkpoints" / step)
        assert want.keys() == got.keys()
        for name in want:
            _assert_close(f"step {step} {name}", want[name], got[name])
    # the 2-process checkpoint has a CRC of every parameter (gathered from both processes), the
    # CRC of the values it holds; loading it in one process checks them all again
    from mmada_jax import load_model
    from mmada_jax.checkpoints import open_checkpoint, stored_checksums
    from mmada_jax.hf_io import checksum_record
    sums = stored_checksums(open_checkpoint(multi / "run/checkpoints/4"))
    params = {k[len("['params']['"):-len("']")]: v for k, v in got.items() if k.startswith("['params']")}
    assert sums == {name: checksum_record(value) for name, value in params.items()}
    assert sums.keys() == stored_checksums(open_checkpoint(single / "run/checkpoints/4")).keys()
    load_model(multi / "run")

    # (b) sampling: exactly the same ids, gathered whole to every process
    want = dict(np.load(single / "sample_p0.npz"))
    assert want["ids"].shape[0] == want["image_codes"].shape[0] == 8
    for pid in range(2):
        got = dict(np.load(multi / f"sample_p{pid}.npz"))
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"process {pid}: {key}")
    assert infos[multi][0]["wte_spec"] == infos[single][0]["wte_spec"] == "P('tensor', 'fsdp')"

    # (c) `python -m sample parallel`, 8 requests in one batch on the same mesh: the same files,
    # written once (by process 0; no temporary leftovers of a second writer)
    assert [i["cli_rc"] for i in infos[single] + infos[multi]] == [0, 0, 0]
    names = [f"{i:04d}" for i in range(8)]
    for d in (single, multi):
        assert sorted(p.name for p in (d / "cli").iterdir()) == names
    for name in names:
        a, b = single / "cli" / name, multi / "cli" / name
        assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
        for file in ("text.txt", "image.png"):
            assert (b / file).read_bytes() == (a / file).read_bytes(), f"{name}/{file}"
        ra, rb = (json.loads((x / "record.json").read_text()) for x in (a, b))
        ra.pop("files"), rb.pop("files")
        assert ra == rb, name

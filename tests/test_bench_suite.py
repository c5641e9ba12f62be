"""bench/suite.py (the GPU benchmark suite) in its CPU smoke mode: one subprocess run at tiny shapes
writes suite.json / suite.md with every row kind, and a second run refuses to overwrite them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"forward", "sampler_m", "sampler_a", "train"}
NUMBERS = ("compile_s", "s_per_step", "s_per_traj", "samples_per_s", "tokens_per_s", "mfu", "plan_bytes")


def _suite(*args, timeout=600):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)             # conftest's 8 fake CPU devices: the suite runs on one device
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run([sys.executable, str(ROOT / "bench" / "suite.py"), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    run = _suite("--smoke", "--out", out, "--compile-workers", "2")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return out, run


def test_smoke_run_writes_every_row_kind(smoke):
    out, run = smoke
    result = json.loads((out / "suite.json").read_text())
    rows = result["rows"]
    assert {r["row"] for r in rows} == KINDS
    assert result["meta"]["complete"] and result["meta"]["shapes"] == "smoke"
    assert {(r["batch"], r["cache"]) for r in rows if r["row"] == "sampler_m"} == {
        (b, c) for b in (1, 2) for c in (False, True)}
    assert {(r["batch"], r["cache"]) for r in rows if r["row"] == "sampler_a"} == {
        (b, c) for b in (1, 2) for c in (False, True)}
    for r in rows:
        if r["error"] is not None:        # a measurement may fail (it says why) but never silently
            assert isinstance(r["error"], str) and r["error"]
            continue
        for key in NUMBERS:
            assert r[key] is None or (isinstance(r[key], (int, float)) and math.isfinite(r[key])), (r["name"], key)
        assert r["s_per_step"] > 0 and r["plan_bytes"] > 0 and r["compile_s"] > 0, r
        if r["row"] in ("forward", "train"):
            assert r["tokens_per_s"] > 0 and r["mfu"] > 0, r
        else:
            assert r["extrapolated"] and r["s_per_traj"] > r["s_per_step"] and r["samples_per_s"] > 0, r
            assert (r["mfu"] is None) == r["cache"], r       # MFU of the uncached sampler rows only
            assert "compiled again" not in r["note"], r      # the timed program is the one compiled ahead
    # the smoke run itself must not fail anywhere
    assert not [r for r in rows if r["error"]], [(r["name"], r["error"]) for r in rows if r["error"]]
    md = (out / "suite.md").read_text()
    assert "| row | name |" in md and md.count("| sampler_a |") == 4
    assert "s/traj*" in run.stdout and "total" in run.stdout.splitlines()[-2]


def test_second_run_refuses_to_overwrite(smoke):
    out, _ = smoke
    before = (out / "suite.json").read_text()
    run = _suite("--smoke", "--out", out, "--only", "forward", timeout=120)
    assert run.returncode == 2 and "refusing to overwrite" in run.stderr and "--overwrite" in run.stderr
    assert (out / "suite.json").read_text() == before

"""bench/reference.py: the side-by-side timing of the PyTorch reference sampler and ours.

The reference checkout is the user's (github.com/tyfeld/MMaDA-Parallel, never copied into the
project): the smoke run needs ``MMADA_REFERENCE_DIR`` pointing at one and is skipped otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "reference.py"


def _env() -> dict[str, str]:
    """This environment without the 8 fake CPU devices conftest asks XLA for (the bench runs on one)."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def _run(*args, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=timeout)


@pytest.mark.parametrize("make", [lambda tmp: tmp / "no-such-checkout", lambda tmp: tmp])
def test_missing_reference_checkout_is_named(tmp_path, make):
    """A path that does not exist, or a folder without MMaDA-Parallel-M/models/modeling_mmada.py."""
    path = make(tmp_path)
    proc = _run("--reference-dir", path, "--quick", timeout=120)
    assert proc.returncode != 0
    assert str(path) in proc.stderr and "modeling_mmada.py" in proc.stderr, proc.stderr


@pytest.mark.torch
def test_quick_run_against_the_reference():
    reference = os.environ.get("MMADA_REFERENCE_DIR")
    if not reference:
        pytest.skip("MMADA_REFERENCE_DIR is not set: no checkout of github.com/tyfeld/MMaDA-Parallel to run the "
                    "reference sampler from (user-provided, none in CI)")
    pytest.importorskip("torch")
    proc = _run("--reference-dir", reference, "--quick", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"max \|reference - ours\| = \S+ .*: ok", out), out
    assert "outputs: both finished" in out, out
    assert re.search(r"^reference \d+\.\d\d s/traj, ours \d+\.\d\d s/traj: \d+\.\d\dx$", out.strip().splitlines()[-1]), out

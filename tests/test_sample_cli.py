"""python -m sample logits: the README's main command, end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, golden_path


def _run(*args):
    return subprocess.run([sys.executable, "-m", "sample", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.golden
def test_logits_on_the_default_checkpoint():
    golden_path("mmada_tiny")
    out = _run("logits")
    assert out.returncode == 0, out.stderr
    assert "random weights" in out.stdout and "masked positions" in out.stdout
    assert out.stdout.count("top-5:") == 8


@pytest.mark.golden
def test_logits_bad_input():
    out = _run("logits", "--checkpoint", str(golden_path("mmada_tiny")), "--ids", "1 2 3")
    assert out.returncode == 2 and "no mask token" in out.stderr
    out = _run("logits", "--ids", "1 99999 384")
    assert out.returncode == 2 and "--ids must lie in" in out.stderr
    out = _run("logits", "--checkpoint", "/nonexistent/ckpt")
    assert out.returncode == 2 and "/nonexistent/ckpt" in out.stderr

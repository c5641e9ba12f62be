"""python -m evaluate end to end on the tiny random checkpoint, resume, bad lines, and the judging path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, golden_path, tiny_m_args

pytestmark = pytest.mark.golden

TINY_SETTINGS = ("--text-steps", 4, "--image-steps", 1, "--text-len", 16)


def _evaluate(*args):
    """``python -m evaluate`` on the tiny random MMaDA."""
    return subprocess.run([sys.executable, "-m", "evaluate", *map(str, tiny_m_args()), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_benchmark_end_to_end_and_resume(tmp_path):
    from mmada_jax.evaluation import METRICS
    from mmada_jax.evaluation.synthetic_judge import write_benchmark
    golden_path("mmada_tiny")
    bench = write_benchmark(tmp_path / "bench", 3, seed=0, t2i_fraction=0.0)   # edit items only
    items = [json.loads(line) for line in bench.read_text().splitlines()]
    assert len(items) == 3 and all(it["input_image"] for it in items)
    assert all((tmp_path / "bench" / it["input_image"]).exists() for it in items)
    out = tmp_path / "out"
    # --out relative to the working directory (the judge reads other relative paths from the benchmark's folder)
    r = _evaluate("--benchmark", bench, "--judge", "synthetic", "--out", os.path.relpath(out, ROOT), *TINY_SETTINGS)
    assert r.returncode == 0, r.stderr
    assert "3 to sample" in r.stdout and "items/s" in r.stdout and "ETA" in r.stdout
    for name in ("run.json", "results.jsonl", "summary.json", "summary.md", "report.html"):
        assert (out / name).is_file(), name
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r_["id"] for r_ in results] == [it["id"] for it in items]
    for res in results:
        assert set(res["scores"]) == set(METRICS)       # edit items: every metric applies
        assert all(0.0 <= v <= 100.0 for v in res["scores"].values())
        assert set(res["reasons"]) == set(res["scores"])
        assert (out / res["files"]["image"]).is_file() and (out / res["files"]["text"]).is_file()
    md = (out / "summary.md").read_text()
    assert all(m in md.splitlines()[0] for m in METRICS) and "Mean" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["Mean"]["n"] == 3
    report = (out / "report.html").read_text()
    assert report.index("<table>") < report.index(items[0]["id"])
    assert "../bench/images/" in report and "samples/" in report

    mtimes = {p: p.stat().st_mtime_ns for p in (out / "samples").rglob("*")}
    again = _evaluate("--benchmark", bench, "--out", out, *TINY_SETTINGS)
    assert again.returncode == 0, again.stderr
    assert "3 already in" in again.stdout and "0 to sample" in again.stdout
    assert "compiled the sampler" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "samples").rglob("*")} == mtimes
    assert len((out / "results.jsonl").read_text().splitlines()) == 3

    other = _evaluate("--benchmark", bench, "--out", out, "--text-steps", 8, "--image-steps", 1, "--text-len", 16)
    assert other.returncode == 2 and "settings" in other.stderr and "run.json" in other.stderr


def test_bad_benchmark_line(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"id": "a", "category": "move"}\n{"id": "b"\n')
    r = _evaluate("--benchmark", bench, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert f"{bench}:2:" in r.stderr


def test_judge_scores_ground_truth_100(tmp_path):
    from mmada_jax.data.synthetic import make_example
    from mmada_jax.evaluation import get_judge
    from mmada_jax.evaluation.benchmarks import read_benchmark
    from mmada_jax.evaluation.run import judge_sample
    from mmada_jax.evaluation.synthetic_judge import write_benchmark
    bench = write_benchmark(tmp_path, 6, seed=2, t2i_fraction=0.5)
    judge = get_judge("synthetic", root=tmp_path)
    for i, item in enumerate(read_benchmark(bench)):
        ex = make_example(2, i, 64, 0.5)
        assert ex.id == item["id"]
        result = judge_sample(judge, item, ex.reasoning, ex.output_image)
        assert result["scores"] and all(v == 100.0 for v in result["scores"].values()), (item, result)


@pytest.mark.parametrize("task, flags", [("t2i", ("--steps", 2, "--resolution", 64)),
                                         ("mmu", ("--gen-length", 8, "--steps", 4, "--resolution", 64))])
def test_base_task_benchmark_evaluates_with_scene_accuracy(tmp_path, task, flags):
    """``--task t2i|mmu`` samples base MMaDA's task on the world's base-task benchmark and the
    synthetic_base judge scores Scene Accuracy (the tiny random model scores low, not NaN)."""
    from mmada_jax.evaluation.synthetic_judge import write_base_benchmark
    bench = write_base_benchmark(tmp_path / "bench", 2, task, seed=1)
    out = tmp_path / "out"
    r = _evaluate("--benchmark", bench, "--task", task, "--judge", "synthetic_base", "--out", out, *flags)
    assert r.returncode == 0, r.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [x["category"] for x in results] == [task, task]
    for res in results:
        assert set(res["scores"]) == {"Scene Accuracy", "Overall"} and 0 <= res["scores"]["Scene Accuracy"] <= 100
        # an mmu sample's image.png is its input: no edit statistics (t2i images have no input to compare)
        assert res["image_stats"] is None if task == "mmu" else "mean_abs_diff" not in res["image_stats"]
    assert "edit outputs" not in (out / "summary.md").read_text()
    assert (out / "summary.md").read_text().splitlines()[0].startswith("| Category | N | Scene Accuracy | Overall")

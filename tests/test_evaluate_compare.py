"""python -m evaluate compare: table values and deltas against hand-computed numbers, the common-items
view, warnings, the side-by-side HTML and the rules for output files (mmada_jax.evaluation.compare).

The run folders are written by hand (no model): a benchmark of two edit items with PNG inputs and
one generation item, and per run its results.jsonl, summary.json (run.summarize), run.json and
sample PNGs. Three metrics keep the hand computations short; Image Consistency does not apply to the
generation item, so means over "metrics present" are exercised.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from evaluate.compare import main
from mmada_jax.evaluation.compare import compare, default_labels, load_runs
from mmada_jax.evaluation.run import summarize

METRICS = ("Text Quality", "Image Consistency", "Overall")
ITEMS = [
    {"id": "e1", "category": "Spatial", "instruction": "Move the <b>red</b> square & the circle",
     "input_image": "images/e1.png"},
    {"id": "e2", "category": "Causal", "instruction": "Melt the ice", "input_image": "images/e2.png"},
    {"id": "g1", "category": "generation", "instruction": "A blue circle", "input_image": None},
]
# (Text Quality, Image Consistency, Overall) per item; Overall = the mean of the others present
SCORES_A = {"e1": (60, 80, 70), "e2": (40, 50, 45), "g1": (90, None, 90)}
SCORES_B = {"e1": (70, 90, 80), "e2": (55, 45, 50), "g1": (80, None, 80)}
SCORES_C = {"e1": (50, 70, 60), "g1": (100, None, 100)}          # e2 not judged


def make_bench(folder: Path) -> Path:
    """A benchmark JSONL with two PNG input images; returns its path."""
    (folder / "images").mkdir(parents=True)
    for n, it in enumerate(ITEMS):
        if it["input_image"]:
            Image.new("RGB", (8, 8), (100 + 50 * n, 0, 0)).save(folder / it["input_image"])
    path = folder / "benchmark.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    return path


def make_run(folder: Path, bench: Path, scores: dict, judge: str = "SyntheticJudge", skipped=()) -> Path:
    """A run folder as python -m evaluate writes it, with ``scores`` per judged id and a skipped line
    for each id in ``skipped``."""
    results = []
    for n, it in enumerate(ITEMS):
        if it["id"] in skipped:
            results.append({"id": it["id"], "category": it["category"], "skipped": "needs an input image"})
        if it["id"] not in scores:
            continue
        tq, ic, ov = scores[it["id"]]
        s = {"Text Quality": float(tq), **({"Image Consistency": float(ic)} if ic is not None else {}),
             "Overall": float(ov)}
        sample = folder / "samples" / it["id"]
        sample.mkdir(parents=True)
        Image.new("RGB", (8, 8), (0, 30 * n, 200)).save(sample / "image.png")
        text = f"<i>{folder.name} says {it['id']}</i>"
        (sample / "text.txt").write_text(text)
        results.append({"id": it["id"], "category": it["category"], "scores": s,
                        "reasons": {m: f"why {m}" for m in s}, "text": text, "seconds": 1.5,
                        "files": {"image": f"samples/{it['id']}/image.png", "text": f"samples/{it['id']}/text.txt"}})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (folder / "summary.json").write_text(json.dumps(summarize(results, METRICS), indent=2))
    (folder / "run.json").write_text(json.dumps({"benchmark": str(bench.resolve()), "task": "parallel_m",
                                                 "settings": {}, "options": {}, "seed": 0, "judge": judge,
                                                 "checkpoint": "/ckpt"}))
    (folder / "report.html").write_text("<p>report</p>")
    return folder


@pytest.fixture
def runs(tmp_path):
    """Runs A and B (the same 3 items), C (e2 skipped) and the benchmark, in tmp_path."""
    bench = make_bench(tmp_path / "bench")
    return {"bench": bench, "A": make_run(tmp_path / "runA", bench, SCORES_A),
            "B": make_run(tmp_path / "runB", bench, SCORES_B),
            "C": make_run(tmp_path / "runC", bench, SCORES_C, skipped=("e2",))}


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def table(md: str, heading: str) -> dict[tuple[str, str], list[str]]:
    """The table under the ``## heading...`` section: {(category, run): [n, metric cells...]}, in order."""
    section = md.split("\n## " + heading, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Category", "Run", "n", *METRICS]
    rows, category = {}, None
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        category = cells[0].strip("*") or category
        rows[(category, cells[1])] = cells[2:]
    return rows


def test_two_runs_values_and_deltas(runs, capsys):
    rc, out, err = cli(capsys, runs["A"], runs["B"])
    assert rc == 0, err
    rows = table(out, "All items")
    # category rows sorted (union), then Mean; per category a line per run then the Δ line
    assert list(rows) == [(c, r) for c in ("Causal", "Spatial", "generation", "Mean")
                          for r in ("runA", "runB", "Δ runB")]
    assert rows[("Mean", "runA")] == ["3", "63.3", "65.0", "68.3"]     # (60+40+90)/3, (80+50)/2, (70+45+90)/3
    assert rows[("Mean", "runB")] == ["3", "68.3", "67.5", "70.0"]     # (70+55+80)/3, (90+45)/2, (80+50+80)/3
    assert rows[("Mean", "Δ runB")] == ["", "+5.0", "+2.5", "+1.7"]
    assert rows[("Causal", "Δ runB")] == ["", "+15.0", "-5.0", "+5.0"]
    assert rows[("generation", "runA")] == ["1", "90.0", "-", "90.0"]  # no Image Consistency for generation
    assert rows[("generation", "Δ runB")] == ["", "-10.0", "-", "-10.0"]
    assert "Every run judged the same 3 item(s)." in out
    assert "## Common items" not in out and "Warning" not in out
    comp = compare(load_runs([runs["A"], runs["B"]]))
    mean = comp["views"]["all"]["rows"][-1]
    assert mean["mean"] and mean["n"] == [3, 3]
    assert mean["values"]["Overall"] == pytest.approx([205 / 3, 70.0])
    assert mean["deltas"]["Overall"][0] is None                               # the baseline has none
    assert mean["deltas"]["Overall"][1] == pytest.approx(70.0 - 205 / 3)
    assert comp["same_items"] and comp["common_ids"] == ["e1", "e2", "g1"] and comp["warnings"] == []


def test_common_items_view_when_a_run_lacks_an_item(runs, capsys):
    rc, out, err = cli(capsys, runs["A"], runs["C"])
    assert rc == 0, err
    everything = table(out, "All items")
    assert everything[("Mean", "runA")] == ["3", "63.3", "65.0", "68.3"]
    assert everything[("Mean", "runC")] == ["2", "75.0", "70.0", "80.0"]     # over e1 and g1 only
    assert everything[("Mean", "Δ runC")] == ["", "+11.7", "+5.0", "+11.7"]  # misleading: other items
    assert everything[("Causal", "runC")] == ["0", "-", "-", "-"]
    assert "## Common items (2 judged by every run)" in out
    common = table(out, "Common items")
    assert list(common) == [(c, r) for c in ("Spatial", "generation", "Mean") for r in ("runA", "runC", "Δ runC")]
    assert common[("Mean", "runA")] == ["2", "75.0", "80.0", "80.0"]       # A over e1, g1: (60+90)/2, 80, (70+90)/2
    assert common[("Mean", "runC")] == ["2", "75.0", "70.0", "80.0"]
    assert common[("Mean", "Δ runC")] == ["", "+0.0", "-10.0", "+0.0"]
    assert "judged: runA: 3, runC: 2" in out
    run_rows = [ln for ln in out.splitlines() if ln.startswith("| runC")]
    assert [c.strip() for c in run_rows[0].strip("|").split("|")][-2:] == ["2", "1"]   # judged, skipped
    comp = compare(load_runs([runs["A"], runs["C"]]))
    assert not comp["same_items"] and comp["common_ids"] == ["e1", "g1"]
    assert comp["views"]["common"]["rows"][-1]["values"]["Text Quality"] == pytest.approx([75.0, 75.0])


def test_three_runs_deltas_against_the_first(runs, capsys):
    rc, out, err = cli(capsys, runs["A"], runs["B"], runs["C"])
    assert rc == 0, err
    rows = table(out, "All items")
    assert [r for c, r in rows if c == "Mean"] == ["runA", "runB", "runC", "Δ runB", "Δ runC"]
    assert rows[("Mean", "Δ runB")] == ["", "+5.0", "+2.5", "+1.7"]
    assert rows[("Mean", "Δ runC")] == ["", "+11.7", "+5.0", "+11.7"]
    common = table(out, "Common items")
    assert common[("Mean", "runB")] == ["2", "75.0", "90.0", "80.0"]
    assert common[("Mean", "Δ runB")] == ["", "+0.0", "+10.0", "+0.0"]
    assert common[("Spatial", "Δ runC")] == ["", "-10.0", "-10.0", "-10.0"]


def test_warns_when_benchmarks_or_judges_differ(runs, tmp_path, capsys):
    other = make_bench(tmp_path / "bench2")
    d = make_run(tmp_path / "runD", other, SCORES_B, judge="OtherJudge")
    rc, out, err = cli(capsys, runs["A"], d)
    assert rc == 0, err
    warnings = [ln for ln in out.splitlines() if "Warning" in ln]
    assert len(warnings) == 2
    assert "different benchmarks" in warnings[0] and str(runs["bench"]) in warnings[0] and str(other) in warnings[0]
    assert "different judges" in warnings[1] and "OtherJudge" in warnings[1] and "SyntheticJudge" in warnings[1]
    comp = compare(load_runs([runs["A"], d]))
    assert len(comp["warnings"]) == 2
    rc, out, err = cli(capsys, runs["A"], runs["B"])          # same benchmark and judge: no warning
    assert rc == 0 and "Warning" not in out


def item_block(page: str, item_id: str) -> str:
    return page.split(f"<div class='item' id='item-{item_id}'>", 1)[1].split("<div class='item'", 1)[0]


def test_html_shows_the_runs_side_by_side(runs, tmp_path, capsys):
    out_dir = tmp_path / "reports" / "cmp"
    rc, out, err = cli(capsys, runs["A"], runs["C"], "--out", out_dir)
    assert rc == 0, err
    assert sorted(os.listdir(out_dir)) == ["compare.html", "compare.json", "compare.md"]
    assert (out_dir / "compare.md").read_text() in out                  # the printed Markdown is the file's
    assert json.loads((out_dir / "compare.json").read_text())["common_ids"] == ["e1", "g1"]
    page = (out_dir / "compare.html").read_text()
    assert page.index("<table>") < page.index("id='item-e1'") < page.index("id='item-e2'") < page.index("id='item-g1'")
    e1 = item_block(page, "e1")
    srcs = re.findall(r"src='([^']+)'", e1)
    assert srcs == ["../../bench/images/e1.png", "../../runA/samples/e1/image.png", "../../runC/samples/e1/image.png"]
    for src, target in zip(srcs, [runs["bench"].parent / "images/e1.png", runs["A"] / "samples/e1/image.png",
                                  runs["C"] / "samples/e1/image.png"]):
        assert (out_dir / src).resolve() == target.resolve() and target.is_file()
    assert "runA (baseline)" in e1 and e1.index("runA (baseline)") < e1.index("<h4>runC")
    assert "<b>Δ Overall:</b> -10.0" in e1                                 # C 60 vs A 70
    assert "Move the &lt;b&gt;red&lt;/b&gt; square &amp; the circle" in e1 and "<b>red</b>" not in page
    assert "&lt;i&gt;runA says e1&lt;/i&gt;" in e1 and "&lt;i&gt;runC says e1&lt;/i&gt;" in e1
    e2 = item_block(page, "e2")                                           # judged by A only
    assert "not judged by every run" in e2 and "<b>Skipped:</b> needs an input image" in e2
    assert re.findall(r"src='([^']+)'", e2) == ["../../bench/images/e2.png", "../../runA/samples/e2/image.png"]
    g1 = item_block(page, "g1")                                           # no input image: "-"
    assert re.findall(r"src='([^']+)'", g1) == ["../../runA/samples/g1/image.png", "../../runC/samples/g1/image.png"]
    assert "<h4>input</h4><p>-</p>" in g1


def test_report_without_the_benchmark(runs, tmp_path, capsys):
    runs["bench"].unlink()
    rc, out, err = cli(capsys, runs["A"], runs["B"], "--out", tmp_path / "cmp")
    assert rc == 0, err
    assert f"benchmark {runs['bench'].resolve()}" in out and "no longer exists" in out
    page = (tmp_path / "cmp" / "compare.html").read_text()
    srcs = re.findall(r"src='([^']+)'", page)
    assert srcs and all("samples/" in s for s in srcs)                   # output images only, no input image
    assert "id='item-e1'" in page and "id='item-g1'" in page


def test_refuses_to_overwrite_and_overwrite_swaps_in(runs, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    rc, out, err = cli(capsys, runs["A"], runs["B"], "--out", out_dir, "--labels", "old,new")
    assert rc == 0, err
    (out_dir / "keep.txt").write_text("mine")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out_dir.iterdir()}
    rc, out, err = cli(capsys, runs["A"], runs["B"], "--out", out_dir, "--labels", "x,y")
    assert rc == 2 and f"{out_dir / 'compare.md'} exists" in err and "--overwrite" in err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out_dir.iterdir()} == before

    lone = tmp_path / "lone"                                # one existing output is enough to refuse
    lone.mkdir()
    (lone / "compare.html").write_text("old")
    rc, out, err = cli(capsys, runs["A"], runs["B"], "--out", lone)
    assert rc == 2 and str(lone / "compare.html") in err and sorted(os.listdir(lone)) == ["compare.html"]

    rc, out, err = cli(capsys, runs["A"], runs["B"], "--out", out_dir, "--labels", "x,y", "--overwrite")
    assert rc == 0, err
    assert sorted(os.listdir(out_dir)) == ["compare.html", "compare.json", "compare.md", "keep.txt"]  # no temporaries
    assert (out_dir / "keep.txt").read_text() == "mine"
    md = (out_dir / "compare.md").read_text()
    assert "x (baseline)" in md and "old (baseline)" not in md and md != before["compare.md"][0].decode()
    assert [r["label"] for r in json.loads((out_dir / "compare.json").read_text())["runs"]] == ["x", "y"]


def test_bad_input_exits_2_naming_the_path(runs, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc, out, err = cli(capsys, runs["A"], missing)
    assert rc == 2 and err.startswith("error:") and str(missing) in err and "does not exist" in err

    no_summary = make_run(tmp_path / "unfinished", runs["bench"], SCORES_B)
    (no_summary / "summary.json").unlink()
    rc, out, err = cli(capsys, runs["A"], no_summary)
    assert rc == 2 and str(no_summary) in err and "summary.json" in err and "Traceback" not in err

    rc, out, err = cli(capsys, runs["A"])
    assert rc == 2 and "at least 2" in err and str(runs["A"]) in err

    rc, out, err = cli(capsys, runs["A"], runs["B"], "--labels", "one")
    assert rc == 2 and "1 label(s)" in err

    (runs["B"] / "results.jsonl").write_text('{"id": "e1", "category": "Spatial"}\nnot json\n')
    rc, out, err = cli(capsys, runs["A"], runs["B"])
    assert rc == 2 and f"{runs['B'] / 'results.jsonl'}:2" in err

    with pytest.raises(SystemExit) as e:                    # argparse: no run at all
        main([])
    assert e.value.code == 2


def test_labels_tell_same_named_folders_apart(tmp_path, capsys):
    assert default_labels(["x/a/eval", "x/b/eval", "x/other"]) == ["a/eval", "b/eval", "other"]
    assert default_labels(["p/q/eval", "r/q/eval"]) == ["p/q/eval", "r/q/eval"]
    assert default_labels(["x/eval", "x/eval/"]) == ["eval", "eval#2"]
    bench = make_bench(tmp_path / "bench")
    a = make_run(tmp_path / "a" / "eval", bench, SCORES_A)
    b = make_run(tmp_path / "b" / "eval", bench, SCORES_B)
    rc, out, err = cli(capsys, a, b)
    assert rc == 0, err
    assert table(out, "All items")[("Mean", "Δ b/eval")] == ["", "+5.0", "+2.5", "+1.7"]
    assert "| a/eval (baseline)" in out


def test_a_failed_write_leaves_the_old_files(runs, tmp_path, monkeypatch):
    import mmada_jax.evaluation.compare as compare_module
    out_dir = tmp_path / "cmp"
    compare_module.write_comparison([runs["A"], runs["B"]], out_dir)
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    # the HTML is the last file written: compare.md and compare.json are already in their temporaries then
    monkeypatch.setattr(compare_module, "comparison_html", lambda comp, out: 0)
    with pytest.raises(TypeError):
        compare_module.write_comparison([runs["A"], runs["C"]], out_dir, overwrite=True)
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before       # nothing swapped in, no temporaries


def test_python_m_evaluate_compare_dispatches(runs, capsys):
    from evaluate.__main__ import main as evaluate_main
    assert evaluate_main(["compare", str(runs["A"]), str(runs["B"])]) == 0
    assert "Δ runB" in capsys.readouterr().out

"""Compare evaluation runs: the same benchmark scored for several models or settings, side by side.

``python -m evaluate`` writes one folder per run (``run.json``, ``results.jsonl``, ``summary.json``,
``report.html``; see :mod:`mmada_jax.evaluation.run`). Reading two summaries by eye hides what
matters: how far each metric moved, and whether the two means are over the same items at all.
:func:`compare` puts N >= 2 runs in one table: for every category (the union over the runs, sorted)
and the ``Mean`` row, each metric's value per run and its delta against the FIRST run (the
baseline), with each run's item count.

Two views, because a mean over other items is no comparison:

* ``all`` - each run's own ``summary.json``, as the run reported itself;
* ``common`` - recomputed from ``results.jsonl`` over the ids that EVERY run judged (each metric's
  mean over the items it applies to, as :func:`~mmada_jax.evaluation.run.summarize` does). When the
  runs judged different items (an unfinished run, items skipped by one task, ``--limit``, another
  benchmark) only this view compares like with like; the Markdown and the HTML show it then
  (the JSON always holds both).

Warnings are added when the runs' benchmarks (``run.json``'s path) or judges differ: their scores
may not be comparable. Outputs: the JSON-able dict :func:`compare` returns,
:func:`comparison_markdown` (what ``python -m evaluate compare`` prints) and :func:`comparison_html`
(the tables, then per item its input image, instruction and each run's output image, text and
scores side by side). :func:`write_comparison` writes the three as ``compare.md``, ``compare.json``
and ``compare.html`` into a folder, swapping each in only once all are written.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Sequence

from mmada_jax import jsonl
from mmada_jax.evaluation.run import summarize

RUN_FILES = ("run.json", "results.jsonl", "summary.json")
OUT_FILES = ("compare.md", "compare.json", "compare.html")


@dataclasses.dataclass
class Run:
    """One evaluation run folder, read (see :func:`read_run`)."""
    folder: Path                # absolute
    label: str
    info: dict                  # run.json
    summary: dict               # summary.json
    results: list[dict]         # results.jsonl, in file order

    @property
    def judged(self) -> dict[str, dict]:
        """The results that carry scores (skipped items left out), by id."""
        return {r["id"]: r for r in self.results if "scores" in r}


# ----------------------------------------------------------------------------------------- reading

def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_results(path: Path) -> list[dict]:
    """The lines of a ``results.jsonl``, checked for what the comparison relies on (errors name
    ``file:line``): a string id (once) and category, and scores mapping names to numbers."""
    results, seen = [], {}
    for n, rec in jsonl.objects(path):
        if not isinstance(rec.get("id"), str) or not isinstance(rec.get("category"), str):
            raise ValueError(f"{path}:{n}: a result needs the string fields id and category")
        if rec["id"] in seen:
            raise ValueError(f"{path}:{n}: id {rec['id']!r} again (first on line {seen[rec['id']]})")
        scores = rec.get("scores")
        if "scores" in rec and not (isinstance(scores, dict) and all(map(_is_number, scores.values()))):
            raise ValueError(f"{path}:{n}: scores must map metric names to numbers")
        seen[rec["id"]] = n
        results.append(rec)
    return results


def _check_summary(path: Path, summary: dict) -> dict:
    """``summary`` if it has the keys the comparison reads, else a ValueError naming ``path``."""
    if not (isinstance(summary.get("metrics"), list) and isinstance(summary.get("categories"), dict)
            and isinstance(summary.get("Mean"), dict)):
        raise ValueError(f"{path}: expected the keys metrics (a list), categories and Mean (objects) "
                         f"of a summary written by python -m evaluate")
    return summary


def read_run(folder: str | Path, label: str | None = None) -> Run:
    """Read the run folder ``folder`` (its run.json, results.jsonl and summary.json). A missing
    folder or file is a FileNotFoundError naming the folder (and the file); ``label`` defaults to
    the folder's name."""
    folder = Path(os.path.abspath(folder))
    if not folder.exists():
        raise FileNotFoundError(f"run folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (expected a run folder written by python -m evaluate --out)")
    for name in RUN_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"run folder {folder} has no {name} (not a folder written by a finished "
                                    f"python -m evaluate --out run?)")
    return Run(folder=folder, label=folder.name if label is None else label,
               info=jsonl.read_json(folder / "run.json"),
               summary=_check_summary(folder / "summary.json", jsonl.read_json(folder / "summary.json")),
               results=_read_results(folder / "results.jsonl"))


def default_labels(folders: Sequence[str | Path]) -> list[str]:
    """A label per folder: its name, or as many trailing path parts as it takes to tell different
    folders of the same name apart (``a/eval`` and ``b/eval``); a folder given again gets ``#2``,
    ``#3`` ..."""
    paths = [Path(os.path.abspath(f)) for f in folders]
    parts = [p.parts[1:] or (str(p),) for p in paths]
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        folders_of: dict[str, set] = {}
        for lab, path in zip(labels, paths):
            folders_of.setdefault(lab, set()).add(path)
        grow = [i for i, lab in enumerate(labels) if len(folders_of[lab]) > 1 and depth[i] < len(parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: Counter = Counter()
    out = []
    for lab in labels:
        seen[lab] += 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return out


def _check_labels(labels: list[str], n: int) -> list[str]:
    """``labels`` stripped, if there is one per run and they are non-empty and distinct."""
    labels = [str(lab).strip() for lab in labels]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} label(s) ({', '.join(labels)}) for {n} runs: give one label per run")
    if not all(labels):
        raise ValueError(f"empty label in {', '.join(labels)}")
    twice = sorted(lab for lab, k in Counter(labels).items() if k > 1)
    if twice:
        raise ValueError(f"label(s) {', '.join(twice)} given more than once: labels must be distinct")
    return labels


def load_runs(folders: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[Run]:
    """Read N >= 2 run folders (the first is the baseline), labelled ``labels`` or
    :func:`default_labels`."""
    folders = list(folders)
    if len(folders) < 2:
        given = f": {', '.join(map(str, folders))}" if folders else ""
        raise ValueError(f"a comparison needs at least 2 run folders, got {len(folders)}{given}")
    labels = default_labels(folders) if labels is None else _check_labels(list(labels), len(folders))
    return [read_run(f, lab) for f, lab in zip(folders, labels)]


# ----------------------------------------------------------------------------------------- comparing

def _union(lists: Sequence[Sequence[str]]) -> list[str]:
    """The names of all lists, each once, in first-seen order."""
    out: list[str] = []
    for names in lists:
        out += [m for m in names if m not in out]
    return out


def _delta(base, value) -> float | None:
    return value - base if _is_number(base) and _is_number(value) else None


def _row(name: str, per_run: list[dict], metrics: list[str], mean: bool) -> dict:
    """One table row: each metric's value per run (None where absent) and each run minus the
    baseline (None for the baseline itself and where either value is missing)."""
    values = {m: [r.get(m) if _is_number(r.get(m)) else None for r in per_run] for m in metrics}
    return {"category": name, "mean": mean, "n": [int(r.get("n", 0) or 0) for r in per_run], "values": values,
            "deltas": {m: [None] + [_delta(v[0], x) for x in v[1:]] for m, v in values.items()}}


def _view(summaries: list[dict], metrics: list[str]) -> list[dict]:
    """Rows of one view: every category of any summary (sorted), then the Mean row."""
    cats = sorted(set().union(*(s["categories"] for s in summaries)))
    rows = [_row(c, [s["categories"].get(c) or {} for s in summaries], metrics, False) for c in cats]
    return rows + [_row("Mean", [s["Mean"] for s in summaries], metrics, True)]


def _differences(runs: list[Run]) -> list[str]:
    """Warnings for run.json fields that should match for the scores to be comparable."""
    out = []
    for key, what in (("benchmark", "benchmarks"), ("judge", "judges")):
        values = [r.info.get(key) for r in runs]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            listed = "; ".join(f"{r.label}: {v}" for r, v in zip(runs, values))
            out.append(f"the runs used different {what} ({listed}): their scores may not be comparable")
    return out


def _open_benchmark(runs: list[Run], notes: list[str]):
    """The first of the runs' benchmarks that can still be read (None if none can); a note for
    each that cannot. Only the report's input images, instructions and item order need it."""
    from mmada_jax.evaluation.benchmarks import load_benchmark

    tried = set()
    for r in runs:
        path = r.info.get("benchmark")
        if not isinstance(path, str) or path in tried:
            continue
        tried.add(path)
        try:
            return load_benchmark(path)
        except FileNotFoundError:
            notes.append(f"benchmark {path} (run.json of {r.label}) no longer exists: "
                         f"the report shows no input images or instructions from it")
        except (OSError, ValueError) as e:
            notes.append(f"benchmark {path} (run.json of {r.label}) cannot be read ({e}): "
                         f"the report shows no input images or instructions from it")
    if not tried:
        notes.append("no run.json names a benchmark: the report shows no input images or instructions")
    return None


def _item_cell(run: Run, result: dict | None, base: dict | None, headline: str) -> dict | None:
    """What the report shows of one run for one item: None if the run has no line for it."""
    if result is None:
        return None
    if "scores" not in result:
        return {"skipped": str(result.get("skipped", "no scores"))}
    image = (result.get("files") or {}).get("image")
    base_scores = base.get("scores") if base and "scores" in base else {}
    return {"scores": result["scores"], "reasons": result.get("reasons") or {}, "text": str(result.get("text", "")),
            "image": str(run.folder / image) if isinstance(image, str) else None,
            "deltas": {m: _delta(base_scores.get(m), v) for m, v in result["scores"].items()} if base_scores else {},
            "headline_delta": _delta(base_scores.get(headline), result["scores"].get(headline))}


def _items(runs: list[Run], bench, common: set[str], headline: str) -> list[dict]:
    """Every id that any run has a line for: benchmark order first, then the others as first met."""
    lines = [{r["id"]: r for r in run.results} for run in runs]
    seen = _union([list(x) for x in lines])
    bench_items = {it["id"]: it for it in bench.items} if bench is not None else {}
    order = [i for i in bench_items if any(i in x for x in lines)] + [i for i in seen if i not in bench_items]
    out = []
    for i in order:
        item = bench_items.get(i, {})
        first = next(x[i] for x in lines if i in x)
        image = item.get("input_image")
        cells = [_item_cell(run, x.get(i), lines[0].get(i) if k else None, headline)
                 for k, (run, x) in enumerate(zip(runs, lines))]
        out.append({"id": i, "category": item.get("category", first["category"]),
                    "instruction": item.get("instruction"),
                    "input_image": str(bench.root / image) if isinstance(image, str) and image else None,
                    "common": i in common, "runs": cells})
    return out


def compare(runs: Sequence[Run]) -> dict:
    """The comparison of ``runs`` (the first is the baseline) as a JSON-able dict:

    * ``runs``: per run its ``label``, ``folder``, ``benchmark``, ``judge``, ``task``, ``checkpoint``,
      ``judged`` and ``skipped`` (counts from results.jsonl);
    * ``metrics``: the union of the runs' metrics, first seen first; ``headline``: the metric of the
      per-item delta (``Overall``, else the last metric);
    * ``views``: ``all`` (each run's summary.json) and ``common`` (recomputed over ``common_ids``,
      the ids every run judged), each ``{"rows": [...]}``, a row being ``category``, ``mean`` (the
      Mean row), ``n`` (per run), ``values`` ({metric: value per run}) and ``deltas`` ({metric:
      run minus baseline per run, None for the baseline});
    * ``same_items``: whether every run judged the same ids and its summary counts them all (then
      the ``all`` view compares like with like);
    * ``warnings`` (benchmarks or judges differ), ``notes`` (e.g. the benchmark is gone);
    * ``items``: per id (benchmark order) ``category``, ``instruction``, ``input_image``, ``common``
      and ``runs``: per run None (no line), ``{"skipped"}`` or its scores, reasons, text, output
      image (absolute), per-metric ``deltas`` and the ``headline_delta``.
    """
    runs = list(runs)
    if len(runs) < 2:
        raise ValueError(f"a comparison needs at least 2 runs, got {len(runs)}")
    metrics = _union([r.summary["metrics"] for r in runs])
    headline = "Overall" if "Overall" in metrics else (metrics[-1] if metrics else "Overall")
    judged = [r.judged for r in runs]
    common_ids = [i for i in judged[0] if all(i in j for j in judged[1:])]
    same = (all(set(j) == set(judged[0]) for j in judged)
            and all(r.summary["Mean"].get("n") == len(j) for r, j in zip(runs, judged)))
    notes = [f"{r.label}: summary.json counts {r.summary['Mean'].get('n')} judged item(s), results.jsonl holds "
             f"{len(j)}; the all-items rows are summary.json's" for r, j in zip(runs, judged)
             if r.summary["Mean"].get("n") != len(j)]
    common_summaries = [summarize([j[i] for i in common_ids], metrics) for j in judged]
    bench = _open_benchmark(runs, notes)
    return {
        "runs": [{"label": r.label, "folder": str(r.folder), "benchmark": r.info.get("benchmark"),
                  "judge": r.info.get("judge"), "task": r.info.get("task"), "checkpoint": r.info.get("checkpoint"),
                  "judged": len(j), "skipped": sum("skipped" in x for x in r.results)} for r, j in zip(runs, judged)],
        "baseline": runs[0].label,
        "metrics": metrics,
        "headline": headline,
        "same_items": same,
        "common_ids": common_ids,
        "views": {"all": {"rows": _view([r.summary for r in runs], metrics)},
                  "common": {"rows": _view(common_summaries, metrics)}},
        "warnings": _differences(runs),
        "notes": notes,
        "items": _items(runs, bench, set(common_ids), headline),
    }


# ----------------------------------------------------------------------------------------- rendering

def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _fmt_delta(d) -> str:
    """A signed delta to one decimal; a delta that rounds to zero is ``+0.0``, never ``-0.0``."""
    return "-" if d is None else f"{(round(d, 1) or 0.0):+.1f}"


def _view_lines(comp: dict, view: str) -> list[dict]:
    """The lines of a view's table: per row a line per run (``values``), then a Δ line per run after
    the baseline (``deltas``); ``category`` is named on a row's first line only, ``mean`` marks the
    Mean row's lines."""
    labels, metrics = [r["label"] for r in comp["runs"]], comp["metrics"]
    out = []
    for row in comp["views"][view]["rows"]:
        for i, lab in enumerate(labels):
            out.append({"category": row["category"] if i == 0 else "", "mean": row["mean"], "run": lab,
                        "n": str(row["n"][i]), "delta": False, "cells": [row["values"][m][i] for m in metrics]})
        for i, lab in enumerate(labels[1:], 1):
            out.append({"category": "", "mean": row["mean"], "run": f"Δ {lab}", "n": "", "delta": True,
                        "cells": [row["deltas"][m][i] for m in metrics]})
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """A Markdown table padded to column widths, so that it also reads in a terminal."""
    cells = [[_md_cell(c) for c in r] for r in [header] + rows]
    widths = [max(3, *(len(r[k]) for r in cells)) for k in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w) if k in right else c.ljust(w)       # noqa: E731
                                       for k, (c, w) in enumerate(zip(r, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" if k in right else "-" * (w + 2) for k, w in enumerate(widths)) + "|"
    return [line(cells[0]), rule] + [line(r) for r in cells[1:]]


def _view_markdown(comp: dict, view: str) -> list[str]:
    rows = [[f"**{ln['category']}**" if ln["mean"] and ln["category"] else ln["category"], ln["run"], ln["n"],
             *map(_fmt_delta if ln["delta"] else _fmt, ln["cells"])] for ln in _view_lines(comp, view)]
    return _md_table(["Category", "Run", "n", *comp["metrics"]], rows, set(range(2, 3 + len(comp["metrics"]))))


def _view_titles(comp: dict) -> list[tuple[str, str, str]]:
    """(view, title, sentence under it) of the views to show: ``common`` only when the item sets differ."""
    runs, n_common = comp["runs"], len(comp["common_ids"])
    if comp["same_items"]:
        return [("all", "All items", f"Every run judged the same {n_common} item(s).")]
    counts = ", ".join(f"{r['label']}: {r['judged']}" for r in runs)
    return [("all", "All items (each run's summary.json)",
             f"The runs judged different items (judged: {counts}), so these means are over different items; "
             f"compare the common items below."),
            ("common", f"Common items ({n_common} judged by every run)",
             "Recomputed from results.jsonl over the ids that every run judged." if n_common
             else "No item was judged by every run.")]


def comparison_markdown(comp: dict) -> str:
    """The comparison as Markdown: the runs, warnings and notes, then a table per view (a line per
    run and category, then a Δ line per run against the baseline)."""
    runs = comp["runs"]
    lines = [f"# Comparison of {len(runs)} evaluation runs", ""]
    lines += _md_table(["Run", "Folder", "Task", "Judge", "Judged", "Skipped"],
                       [[r["label"] + (" (baseline)" if k == 0 else ""), r["folder"], str(r["task"]), str(r["judge"]),
                         str(r["judged"]), str(r["skipped"])] for k, r in enumerate(runs)], {4, 5})
    lines += ["", f"Δ X = run X minus the baseline {comp['baseline']} (scores 0..100).", ""]
    lines += [f"> **Warning:** {w}\n" for w in comp["warnings"]]
    lines += [f"> Note: {n}\n" for n in comp["notes"]]
    for view, title, sentence in _view_titles(comp):
        lines += [f"## {title}", "", sentence, ""] + _view_markdown(comp, view) + [""]
    return "\n".join(lines)


_CSS = ("body{font-family:sans-serif}table{border-collapse:collapse;margin:4px 0}"
        "td,th{border:1px solid #999;padding:2px 6px}td.num{text-align:right}"
        ".up{color:#070}.down{color:#b00}.warn{color:#b00}img{width:192px;image-rendering:pixelated}"
        ".item{border-top:1px solid #ccc;margin:8px 0}.row{display:flex;gap:12px;align-items:flex-start}"
        ".cell{flex:0 0 auto;max-width:320px}.cell pre{white-space:pre-wrap}tr.delta td{background:#f4f4f4}")


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _delta_html(d) -> str:
    cls = "" if d is None or round(d, 1) == 0 else (" up" if d > 0 else " down")
    return f"<td class='num{cls}'>{_esc(_fmt_delta(d))}</td>"


def _view_html(comp: dict, view: str) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in ["Category", "Run", "n", *comp["metrics"]])
    body = []
    for ln in _view_lines(comp, view):
        name = f"<b>{_esc(ln['category'])}</b>" if ln["mean"] else _esc(ln["category"])
        cells = "".join(_delta_html(v) if ln["delta"] else f"<td class='num'>{_esc(_fmt(v))}</td>" for v in ln["cells"])
        cls = " class='delta'" if ln["delta"] else ""
        body.append(f"<tr{cls}><td>{name}</td><td>{_esc(ln['run'])}</td>"
                    f"<td class='num'>{_esc(ln['n'])}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _src(path: str, out_dir: Path) -> str:
    """``path`` relative to the HTML's folder, as the escaped value of a ``src`` attribute."""
    return _esc(Path(os.path.relpath(path, out_dir)).as_posix())


def _cell_html(comp: dict, k: int, cell: dict | None, out_dir: Path) -> str:
    """One run's column of an item: its output image, text and scores (with Δ against the baseline)."""
    label = comp["runs"][k]["label"] + (" (baseline)" if k == 0 else "")
    parts = [f"<div class='cell'><h4>{_esc(label)}</h4>"]
    if cell is None:
        parts.append("<p>-</p><p><i>no result in this run</i></p>")
    elif "skipped" in cell:
        parts.append(f"<p>-</p><p><b>Skipped:</b> {_esc(cell['skipped'])}</p>")
    else:
        parts.append(f"<img src='{_src(cell['image'], out_dir)}' alt='{_esc(comp['runs'][k]['label'])} output'>"
                     if cell["image"] else "<p>(no output image)</p>")
        if k > 0:
            parts.append(f"<p><b>Δ {_esc(comp['headline'])}:</b> {_esc(_fmt_delta(cell['headline_delta']))} "
                         f"(vs {_esc(comp['baseline'])})</p>")
        rows = "".join(f"<tr><td>{_esc(m)}</td><td class='num'>{_esc(_fmt(v))}</td>"
                       + (_delta_html(cell["deltas"].get(m)) if k > 0 else "")
                       + f"<td>{_esc(cell['reasons'].get(m, ''))}</td></tr>" for m, v in cell["scores"].items())
        head = "<tr><th>metric</th><th>score</th>" + ("<th>Δ</th>" if k > 0 else "") + "<th>reason</th></tr>"
        parts.append(f"<pre>{_esc(cell['text'])}</pre><table>{head}{rows}</table>")
    return "".join(parts) + "</div>"


def _item_html(comp: dict, item: dict, out_dir: Path) -> str:
    tag = "" if item["common"] else " <span class='warn'>(not judged by every run)</span>"
    block = [f"<div class='item' id='item-{_esc(item['id'])}'>"
             f"<h3>{_esc(item['id'])} ({_esc(item['category'])}){tag}</h3>",
             f"<p><b>Instruction:</b> {_esc('-' if item['instruction'] is None else item['instruction'])}</p>",
             "<div class='row'><div class='cell'><h4>input</h4>"
             + (f"<img src='{_src(item['input_image'], out_dir)}' alt='input'>" if item["input_image"] else "<p>-</p>")
             + "</div>"]
    block += [_cell_html(comp, k, cell, out_dir) for k, cell in enumerate(item["runs"])]
    return "".join(block) + "</div></div>"


def comparison_html(comp: dict, out_dir: str | Path) -> str:
    """The comparison as an HTML page to be saved in ``out_dir`` (image paths are relative to it):
    the runs, warnings and tables, then per item the input image and instruction and, side by side,
    each run's output image, text and scores (a run without the item shows ``-``)."""
    out_dir = Path(os.path.abspath(out_dir))
    runs = comp["runs"]
    parts = [f"<!doctype html><meta charset='utf-8'><title>evaluation comparison</title><style>{_CSS}</style>",
             f"<h1>Comparison of {len(runs)} evaluation runs</h1><table><tr><th>Run</th><th>Folder</th><th>Task</th>"
             "<th>Judge</th><th>Judged</th><th>Skipped</th></tr>"
             + "".join(f"<tr><td>{_esc(r['label'])}{' (baseline)' if k == 0 else ''}</td><td>{_esc(r['folder'])}</td>"
                       f"<td>{_esc(r['task'])}</td><td>{_esc(r['judge'])}</td><td class='num'>{r['judged']}</td>"
                       f"<td class='num'>{r['skipped']}</td></tr>" for k, r in enumerate(runs)) + "</table>",
             f"<p>Δ X = run X minus the baseline {_esc(comp['baseline'])} (scores 0..100).</p>"]
    parts += [f"<p class='warn'><b>Warning:</b> {_esc(w)}</p>" for w in comp["warnings"]]
    parts += [f"<p><i>Note: {_esc(n)}</i></p>" for n in comp["notes"]]
    for view, title, sentence in _view_titles(comp):
        parts.append(f"<h2>{_esc(title)}</h2><p>{_esc(sentence)}</p>{_view_html(comp, view)}")
    parts.append("<h2>Items</h2>")
    parts += [_item_html(comp, item, out_dir) for item in comp["items"]]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------- writing

def _swap_in(out_dir: Path, texts: dict[str, str]) -> None:
    """Write each text to a new temporary file in ``out_dir``, then ``os.replace`` each onto its
    name: a failure while writing (full disk) leaves the files already there as they were."""
    partial: dict[str, Path] = {}
    try:
        for name, text in texts.items():
            tmp = out_dir / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
            with open(tmp, "x", encoding="utf-8") as f:     # "x": never an existing file; umask permissions
                partial[name] = tmp
                f.write(text)
    except BaseException:
        for tmp in partial.values():        # only the temporaries made here
            tmp.unlink(missing_ok=True)
        raise
    for name, tmp in partial.items():
        os.replace(tmp, out_dir / name)


def write_comparison(runs: Sequence[str | Path | Run], out_dir: str | Path, labels: Sequence[str] | None = None,
                     overwrite: bool = False) -> dict:
    """Compare ``runs`` (run folders, or :class:`Run` objects) and write ``out_dir/compare.md``,
    ``compare.json`` and ``compare.html``; returns the comparison. An existing output file is a
    ValueError unless ``overwrite``; nothing else in ``out_dir`` is touched."""
    out_dir = Path(os.path.abspath(out_dir))
    if not overwrite:
        for name in OUT_FILES:
            if os.path.lexists(out_dir / name):
                raise ValueError(f"{out_dir / name} exists: pass --overwrite to replace it")
    if all(isinstance(r, Run) for r in runs):
        if labels is not None:
            raise ValueError("labels are for run folders; Run objects carry their own")
        loaded = list(runs)
    else:
        loaded = load_runs(runs, labels)
    comp = compare(loaded)
    texts = {"compare.md": comparison_markdown(comp), "compare.json": json.dumps(comp, indent=2) + "\n",
             "compare.html": comparison_html(comp, out_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    _swap_in(out_dir, texts)
    return comp

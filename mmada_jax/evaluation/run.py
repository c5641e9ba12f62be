"""Evaluate a model on a benchmark: sample every item, judge each sample, summarise.

:func:`evaluate` reads a benchmark JSONL (one item per line, e.g. written by ``python -m
train.synthetic --benchmark DIR``), samples the items through :func:`mmada_jax.app.run_task` into
``OUT/samples/<id>/``, judges each sample (:func:`judge_sample`) and writes

* ``OUT/results.jsonl`` - one line per item: ``id``, ``category``, ``scores``, ``reasons`` and the
  sample's files (relative to ``OUT``); an item the task cannot run (``parallel_m`` and
  ``parallel_a`` need an input image, so generation items without one) is a line with
  ``skipped`` (the reason) and no scores;
* ``OUT/summary.json`` and ``OUT/summary.md`` - the mean of each metric by category and over all
  judged items (the ``Mean`` row), in ParaBench's columns;
* ``OUT/report.html`` - the table, then per item its input image, instruction, output image,
  text and scores (images referenced by paths relative to ``OUT``).

Resume: items already in ``results.jsonl`` are kept and not sampled again; only the missing
items are sampled (their sample folders are replaced, the others left alone), judged and
appended, one line each as soon as it is judged. ``OUT/run.json`` records the benchmark, task, sampler
settings, seed, judge and model paths of the first run; a rerun with other ones is refused (its
samples would not be comparable).
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import time
from pathlib import Path
from typing import Callable

from mmada_jax import jsonl
from mmada_jax.app.requests import SAFE_ID
from mmada_jax.evaluation.judges import METRICS

REQUIRED = ("id", "category")


def read_benchmark(path: str | Path) -> list[dict]:
    """The items of a benchmark JSONL; a bad line is a ValueError naming ``file:line``."""
    path = Path(path)
    items, seen = [], {}
    for n, item in jsonl.objects(path):
        missing = [k for k in REQUIRED if not isinstance(item.get(k), str) or not item.get(k)]
        if missing:
            raise ValueError(f"{path}:{n}: missing or non-string field(s) {', '.join(missing)}")
        for key in ("instruction", "input_image"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ValueError(f"{path}:{n}: {key} must be a string or null")
        if item["id"] in seen:
            raise ValueError(f"{path}:{n}: duplicate id {item['id']!r} (first on line {seen[item['id']]})")
        if not SAFE_ID.fullmatch(item["id"]):
            raise ValueError(f"{path}:{n}: id {item['id']!r} cannot name a sample folder (use letters, digits, "
                             f"'.', '_' and '-', not starting with '.')")
        seen[item["id"]] = n
        items.append(item)
    return items


def judge_sample(judge, item: dict, text: str, image) -> dict:
    """``judge.score`` checked: every score a number in [0, 100] (a ValueError otherwise)."""
    result = judge.score(item, text, image)
    scores = {k: float(v) for k, v in result["scores"].items()}
    for k, v in scores.items():
        if not 0.0 <= v <= 100.0:
            raise ValueError(f"judge returned {k} = {v} for {item['id']!r}, outside [0, 100]")
    return {"scores": scores, "reasons": dict(result.get("reasons", {}))}


def _mean_row(rows: list[dict], metrics) -> dict:
    out = {"n": len(rows)}
    for m in metrics:
        vals = [r["scores"][m] for r in rows if m in r["scores"]]
        out[m] = sum(vals) / len(vals) if vals else None
    return out


def summarize(results: list[dict], metrics=METRICS) -> dict:
    """Mean of each metric by category (sorted) and over all judged items (``Mean``); a metric
    that applies to none of a row's items is None. Skipped items are counted, not averaged."""
    judged = [r for r in results if "scores" in r]
    cats = sorted({r["category"] for r in judged})
    return {"metrics": list(metrics),
            "categories": {c: _mean_row([r for r in judged if r["category"] == c], metrics) for c in cats},
            "Mean": _mean_row(judged, metrics),
            "skipped": sum("skipped" in r for r in results)}


def summary_markdown(summary: dict) -> str:
    metrics = summary["metrics"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    lines = ["| Category | N | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    rows = list(summary["categories"].items()) + [("**Mean**", summary["Mean"])]
    for name, row in rows:
        lines.append(f"| {name} | {row['n']} | " + " | ".join(fmt(row[m]) for m in metrics) + " |")
    if summary["skipped"]:
        lines.append(f"\n{summary['skipped']} item(s) skipped (see results.jsonl)")
    return "\n".join(lines) + "\n"


def _table_html(summary: dict) -> str:
    metrics = summary["metrics"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    head = "<tr><th>Category</th><th>N</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in metrics) + "</tr>"
    rows = list(summary["categories"].items()) + [("Mean", summary["Mean"])]
    body = "".join(f"<tr><td>{html.escape(n)}</td><td>{r['n']}</td>"
                   + "".join(f"<td>{fmt(r[m])}</td>" for m in metrics) + "</tr>" for n, r in rows)
    return f"<table>{head}{body}</table>"


def report_html(out: Path, results: list[dict], items: dict[str, dict], bench_dir: Path, summary: dict) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>evaluation</title><style>"
             "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
             "img{width:192px;image-rendering:pixelated}.item{border-top:1px solid #ccc;margin:8px 0}</style>",
             "<h1>Evaluation</h1>", _table_html(summary)]
    for r in results:
        item = items.get(r["id"], {})
        esc = lambda s: html.escape(str(s))
        block = [f"<div class='item'><h3>{esc(r['id'])} ({esc(r['category'])})</h3>",
                 f"<p><b>Instruction:</b> {esc(item.get('instruction'))}</p>"]
        if item.get("input_image"):
            rel = os.path.relpath(bench_dir / item["input_image"], out)
            block.append(f"<img src='{esc(Path(rel).as_posix())}' alt='input'>")
        if "skipped" in r:
            block.append(f"<p><b>Skipped:</b> {esc(r['skipped'])}</p></div>")
            parts.append("".join(block))
            continue
        if r["files"].get("image"):
            block.append(f"<img src='{esc(r['files']['image'])}' alt='output'>")
        block.append(f"<pre>{esc(r.get('text', ''))}</pre><table>"
                     + "".join(f"<tr><td>{esc(m)}</td><td>{v:.1f}</td><td>{esc(r['reasons'].get(m, ''))}</td></tr>"
                               for m, v in r["scores"].items()) + "</table></div>")
        parts.append("".join(block))
    return "\n".join(parts) + "\n"


def read_results(path: Path) -> list[dict]:
    results = []
    if path.exists():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                if not isinstance(r, dict) or "id" not in r:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{path}:{n}: not a result line (delete it or choose another --out)") from None
            results.append(r)
    return results


def evaluate(benchmark: str | Path, out: str | Path, judge, task, load_pipeline: Callable[[], object],
             settings=None, options=None, *, batch_size: int = 1, seed: int = 0, limit: int | None = None,
             run_info: dict | None = None, log=print) -> dict:
    """Run the benchmark (see the module docstring); returns the summary. ``load_pipeline`` is
    called only when there is something to sample. ``run_info``: more to record in ``run.json``
    (e.g. the model paths)."""
    from mmada_jax.app import Request, run_task

    benchmark, out = Path(benchmark), Path(out)
    bench_dir = benchmark.parent
    items = read_benchmark(benchmark)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"--limit must be >= 0, got {limit}")
        items = items[:limit]
    settings = task.settings() if settings is None else settings
    options = task.options() if options is None else options
    info = json.loads(json.dumps({"benchmark": str(benchmark.resolve()), "task": task.name, "settings": dataclasses.asdict(settings),
                                  "options": dataclasses.asdict(options), "seed": seed,
                                  "judge": type(judge).__name__, **(run_info or {})}, default=str))
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "run.json"
    if info_path.exists():
        earlier = json.loads(info_path.read_text())
        if earlier != info:
            diff = sorted(k for k in set(earlier) | set(info) if earlier.get(k) != info.get(k))
            raise ValueError(f"--out {out} holds results of a run with other {', '.join(diff)} (see {info_path}); "
                             f"choose another --out or run with the same settings to resume")
    else:
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    results_path = out / "results.jsonl"
    results = read_results(results_path)
    done = {r["id"] for r in results}
    todo = [it for it in items if it["id"] not in done]
    skipped = [it for it in todo if task.needs_image and not it.get("input_image")]
    to_sample = [it for it in todo if it not in skipped]
    log(f"{len(items)} item(s): {len(items) - len(todo)} already in {results_path}, {len(to_sample)} to sample, "
        f"{len(skipped)} to skip ({task.name} needs an input image)")

    def append(rec: dict) -> None:
        with open(results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        results.append(rec)

    for it in skipped:
        append({"id": it["id"], "category": it["category"],
                "skipped": f"{task.name} needs an input image and the item has none"})
    if to_sample:
        pipe = load_pipeline()
        position = {it["id"]: n for n, it in enumerate(items)}      # PRNG key = the item's benchmark position
        requests = [Request(prompt=it.get("instruction") or "", image=str(bench_dir / it["input_image"])
                            if it.get("input_image") else None, id=it["id"], key=position[it["id"]])
                    for it in to_sample]
        t0 = time.perf_counter()
        # overwrite: replaces only the folders of these (unfinished) items; finished ones are not named
        records = run_task(task, pipe, requests, out / "samples", settings, options, batch_size=batch_size,
                           seed=seed, overwrite=True, log=log)
        log(f"sampled {len(records)} item(s) in {time.perf_counter() - t0:.1f}s")
        by_id = {it["id"]: it for it in to_sample}
        t0 = time.perf_counter()
        for i, rec in enumerate(records, 1):
            item = by_id[rec["id"]]
            image = rec["files"].get("image")     # absolute: the judge reads relative paths from the benchmark's folder
            judged = judge_sample(judge, item, rec["text"], None if image is None else Path(image).resolve())
            files = {k: Path(os.path.relpath(v, out)).as_posix() for k, v in rec["files"].items()}
            append({"id": item["id"], "category": item["category"], **judged, "text": rec["text"], "files": files})
            rate = i / max(time.perf_counter() - t0, 1e-9)
            log(f"  judged {i}/{len(records)} items: {rate:.2f} items/s, ETA {(len(records) - i) / rate:.0f}s")
    # report in benchmark order (results of ids no longer in the benchmark, e.g. with --limit, are left out)
    order = {it["id"]: n for n, it in enumerate(items)}
    shown = sorted((r for r in results if r["id"] in order), key=lambda r: order[r["id"]])
    summary = summarize(shown, getattr(judge, "metrics", METRICS))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = summary_markdown(summary)
    (out / "summary.md").write_text(md)
    (out / "report.html").write_text(report_html(out, shown, {it["id"]: it for it in items}, bench_dir, summary),
                                     encoding="utf-8")
    log(md.rstrip())
    log(f"wrote {results_path}, {out / 'summary.json'}, {out / 'summary.md'}, {out / 'report.html'}")
    return summary

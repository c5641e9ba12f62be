"""Evaluate a model on a benchmark: sample every item, judge each sample, summarise.

:func:`evaluate` reads a benchmark (:mod:`mmada_jax.evaluation.benchmarks`: our JSONL, e.g. written by
``python -m train.synthetic --benchmark DIR``, a ParaBench-style folder or RISEBench's JSON),
samples the items through :func:`mmada_jax.app.run_task` into ``OUT/samples/<id>/`` (or takes the
samples of an earlier evaluation, ``samples_from``), judges them (:func:`judge_samples`: a judge
with ``score_batch``, like the VLM judge, gets many items at once) and writes

* ``OUT/results.jsonl`` - one line per item: ``id``, ``category``, ``scores``, ``reasons`` (and a
  judge's ``raw_scores`` on its own scale, ``judge_errors`` for metrics it could not score), the
  text, the sample's files (relative to ``OUT``) and ``image_stats`` (:func:`image_stats`); an
  item the task cannot run (``parallel_a`` needs an input image, so generation items without one)
  is a line with ``skipped`` (the reason) and no scores;
* ``OUT/summary.json`` and ``OUT/summary.md`` - the mean of each metric by category and over all
  judged items (the ``Mean`` row), in ParaBench's columns, plus counts (skipped items, judge
  errors, outputs identical to their input) and what the judge spent (``judge_usage``);
* ``OUT/report.html`` - the table, then per item its input image, instruction, output image,
  text and scores (images referenced by paths relative to ``OUT``).

Resume: items already in ``results.jsonl`` are kept and not sampled again; only the missing
items are sampled (their sample folders are replaced, the others left alone), judged and
appended as they are judged; lines with judge errors are judged again from their stored sample.
``OUT/run.json`` records the benchmark, task, sampler settings, seed, judge and model paths of
the first run; a rerun with other ones is refused (its results would not be comparable).
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import time
from pathlib import Path
from typing import Callable

from mmada_jax.evaluation.benchmarks import Benchmark, load_benchmark
from mmada_jax.evaluation.judges import METRICS

def judge_samples(judge, entries: list[tuple[dict, str, object]]) -> list[dict]:
    """Judge ``entries`` ((item, text, image) each) with ``judge.score_batch`` when it has one
    (e.g. the VLM judge, which sends requests concurrently), else ``judge.score`` per item; every
    score checked to be a number in [0, 100] (a ValueError otherwise). A verdict may carry
    ``judge_errors`` (metrics the judge could not score), ``raw_scores`` (its own scale) and
    ``judge_version`` (e.g. the rubric version that produced it)."""
    batch = getattr(judge, "score_batch", None)
    results = batch(entries) if batch is not None else [judge.score(*e) for e in entries]
    out = []
    for (item, _, _), result in zip(entries, results):
        scores = {k: float(v) for k, v in result["scores"].items()}
        for k, v in scores.items():
            if not 0.0 <= v <= 100.0:
                raise ValueError(f"judge returned {k} = {v} for {item['id']!r}, outside [0, 100]")
        verdict = {"scores": scores, "reasons": dict(result.get("reasons", {}))}
        if result.get("raw_scores"):
            verdict["raw_scores"] = dict(result["raw_scores"])
        if result.get("version"):
            verdict["judge_version"] = result["version"]
        if result.get("errors"):
            verdict["judge_errors"] = dict(result["errors"])
        out.append(verdict)
    return out


def judge_sample(judge, item: dict, text: str, image) -> dict:
    """One item's checked verdict (see :func:`judge_samples`)."""
    return judge_samples(judge, [(item, text, image)])[0]


def image_stats(output, input_image=None) -> dict | None:
    """Cheap facts about an output image: its size and, for an edit, the input's size, the mean
    absolute pixel difference to the input (0-255, the input resized to the output's size) and
    whether the output differs from the input at all (a mean difference above 1/255: an editor
    that returns its input unchanged scores 0 here whatever a judge says)."""
    if output is None:
        return None
    import numpy as np
    from PIL import Image
    with Image.open(output) as im:
        out = np.asarray(im.convert("RGB"), np.float64)
    stats = {"size": [out.shape[1], out.shape[0]]}
    if input_image is not None and Path(input_image).is_file():
        with Image.open(input_image) as im:
            stats["input_size"] = list(im.size)
            inp = np.asarray(im.convert("RGB").resize((out.shape[1], out.shape[0]), Image.BILINEAR), np.float64)
        diff = float(np.abs(out - inp).mean())
        stats.update(mean_abs_diff=round(diff, 3), differs_from_input=diff > 1.0)
    return stats


def _rewrite(path: Path, results: list[dict]) -> None:
    """Replace ``path`` with ``results`` (one line each), swapped in whole."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in results), encoding="utf-8")
    os.replace(tmp, path)


def _mean_row(rows: list[dict], metrics) -> dict:
    out = {"n": len(rows)}
    for m in metrics:
        vals = [r["scores"][m] for r in rows if m in r["scores"]]
        out[m] = sum(vals) / len(vals) if vals else None
    return out


def summarize(results: list[dict], metrics=METRICS) -> dict:
    """Mean of each metric by category (sorted) and over all judged items (``Mean``); a metric
    that applies to none of a row's items is None. Skipped items are counted, not averaged; so
    are items with judge errors (their other metrics are averaged) and the image statistics
    (outputs identical to their input, mean pixel change)."""
    judged = [r for r in results if "scores" in r]
    cats = sorted({r["category"] for r in judged})
    edits = [r["image_stats"] for r in judged if (r.get("image_stats") or {}).get("mean_abs_diff") is not None]
    return {"metrics": list(metrics),
            "categories": {c: _mean_row([r for r in judged if r["category"] == c], metrics) for c in cats},
            "Mean": _mean_row(judged, metrics),
            "skipped": sum("skipped" in r for r in results),
            "judge_errors": sum(bool(r.get("judge_errors")) for r in judged),
            "image_stats": {"edits": len(edits),
                            "unchanged": sum(not e["differs_from_input"] for e in edits),
                            "mean_abs_diff": sum(e["mean_abs_diff"] for e in edits) / len(edits) if edits else None}}


def summary_markdown(summary: dict) -> str:
    metrics = summary["metrics"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    lines = ["| Category | N | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    rows = list(summary["categories"].items()) + [("**Mean**", summary["Mean"])]
    for name, row in rows:
        lines.append(f"| {name} | {row['n']} | " + " | ".join(fmt(row[m]) for m in metrics) + " |")
    notes = []
    if summary.get("skipped"):
        notes.append(f"{summary['skipped']} item(s) skipped (see results.jsonl)")
    if summary.get("judge_errors"):
        notes.append(f"{summary['judge_errors']} item(s) with judge errors (rerun to judge them again)")
    stats = summary.get("image_stats") or {}
    if stats.get("edits"):
        notes.append(f"{stats['unchanged']} of {stats['edits']} edit outputs identical to their input; mean "
                     f"pixel change {stats['mean_abs_diff']:.1f}/255")
    usage = summary.get("judge_usage")
    if usage:
        cost = "unknown cost" if usage.get("cost_usd") is None else f"${usage['cost_usd']:.4f}"
        notes.append(f"judge {usage['model']}: {usage['requests']} requests ({usage['retries']} retries, "
                     f"{usage['reasks']} re-asks), {usage['cached']} cached answers, {usage['prompt_tokens']} + "
                     f"{usage['completion_tokens']} tokens, {cost}")
    if notes:
        lines.append("")
        lines.extend(notes)
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
                               for m, v in r["scores"].items())
                     + "".join(f"<tr><td>{esc(m)}</td><td>error</td><td>{esc(e)}</td></tr>"
                               for m, e in r.get("judge_errors", {}).items()) + "</table></div>")
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


def _run_info(out: Path, info: dict) -> None:
    """Write ``out/run.json``, or check that the one there records the same run."""
    info_path = out / "run.json"
    if info_path.exists():
        earlier = json.loads(info_path.read_text())
        if earlier != info:
            diff = sorted(k for k in set(earlier) | set(info) if earlier.get(k) != info.get(k))
            hint = (" (to judge its samples with another judge: --samples-from it, with another --out)"
                    if diff == ["judge"] else "")
            raise ValueError(f"--out {out} holds results of a run with other {', '.join(diff)} (see {info_path}); "
                             f"choose another --out or run with the same settings to resume{hint}")
    else:
        info_path.write_text(json.dumps(info, indent=2) + "\n")


def _borrowed_samples(src: Path, bench: Benchmark) -> tuple[dict, dict[str, dict]]:
    """(run.json, {id: result line}) of the evaluation ``src`` whose samples are judged again."""
    info_path = src / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"--samples-from {src}: no run.json (not an evaluation output folder)")
    info = json.loads(info_path.read_text())
    if info.get("benchmark") != str(bench.path.resolve()):
        raise ValueError(f"--samples-from {src} sampled the benchmark {info.get('benchmark')}, not {bench.path.resolve()}")
    lines = {}
    for r in read_results(src / "results.jsonl"):
        if "skipped" not in r:
            files = {k: (src / v).resolve() for k, v in r.get("files", {}).items()}
            lines[r["id"]] = {**r, "files": files}
    return info, lines


def evaluate(benchmark: str | Path | Benchmark, out: str | Path, judge, task=None,
             load_pipeline: Callable[[], object] | None = None, settings=None, options=None, *, batch_size: int = 1,
             seed: int = 0, limit: int | None = None, run_info: dict | None = None,
             samples_from: str | Path | None = None, log=print) -> dict:
    """Run the benchmark (see the module docstring); returns the summary. ``load_pipeline`` is
    called only when there is something to sample. ``run_info``: more to record in ``run.json``
    (e.g. the model paths). ``samples_from``: an earlier evaluation folder whose samples are
    judged (no model, no sampling; e.g. sampled on a TPU, judged by another judge elsewhere)."""
    bench, out = benchmark if isinstance(benchmark, Benchmark) else load_benchmark(benchmark), Path(out)
    bench_dir, items = bench.root, bench.items
    if limit is not None:
        if limit < 0:
            raise ValueError(f"--limit must be >= 0, got {limit}")
        items = items[:limit]
    judge_info = judge.describe() if hasattr(judge, "describe") else type(judge).__name__
    if samples_from is not None:
        src = Path(samples_from)
        src_info, borrowed = _borrowed_samples(src, bench)
        info = {**{k: v for k, v in src_info.items() if k != "judge"}, "samples_from": str(src.resolve()),
                "judge": judge_info}
    else:
        settings = task.settings() if settings is None else settings
        options = task.options() if options is None else options
        info = {"benchmark": str(bench.path.resolve()), "task": task.name, "settings": dataclasses.asdict(settings),
                "options": dataclasses.asdict(options), "seed": seed, "judge": judge_info, **(run_info or {})}
    out.mkdir(parents=True, exist_ok=True)
    _run_info(out, json.loads(json.dumps(info, default=str)))
    results_path = out / "results.jsonl"
    results = read_results(results_path)
    done = {r["id"] for r in results}
    todo = [it for it in items if it["id"] not in done]
    if samples_from is not None:
        skipped = {it["id"]: f"not sampled in {src}" for it in todo if it["id"] not in borrowed}
    else:
        skipped = {it["id"]: f"{task.name} needs an input image and the item has none"
                   for it in todo if task.needs_image and not it.get("input_image")}
    to_sample = [it for it in todo if it["id"] not in skipped]
    log(f"{len(items)} item(s): {len(items) - len(todo)} already in {results_path}, {len(to_sample)} to "
        f"{'judge from ' + str(src) if samples_from is not None else 'sample'}, {len(skipped)} to skip")

    def append(rec: dict) -> None:
        with open(results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        results.append(rec)

    by_id = {it["id"]: it for it in items}
    for it in todo:
        if it["id"] in skipped:
            append({"id": it["id"], "category": it["category"], "skipped": skipped[it["id"]]})
    # (item, text, absolute image path, result line): lines whose judging failed, then new samples
    to_judge = [(by_id[r["id"]], r["text"], (out / r["files"]["image"]).resolve() if r["files"].get("image") else None,
                 r) for r in results if r.get("judge_errors") and r["id"] in by_id]
    if to_judge:
        log(f"{len(to_judge)} item(s) in {results_path} have judge errors: judging them again")
    if samples_from is not None:
        samples = [{"id": it["id"], "text": borrowed[it["id"]]["text"], "files": borrowed[it["id"]]["files"]}
                   for it in to_sample]
    elif to_sample:
        from mmada_jax.app import Request, run_task
        pipe = load_pipeline()
        position = {it["id"]: n for n, it in enumerate(items)}      # PRNG key = the item's benchmark position
        requests = [Request(prompt=it.get("instruction") or "", image=str(bench_dir / it["input_image"])
                            if it.get("input_image") else None, id=it["id"], key=position[it["id"]])
                    for it in to_sample]
        t0 = time.perf_counter()
        # overwrite: replaces only the folders of these (unfinished) items; finished ones are not named
        samples = run_task(task, pipe, requests, out / "samples", settings, options, batch_size=batch_size,
                           seed=seed, overwrite=True, log=log)
        log(f"sampled {len(samples)} item(s) in {time.perf_counter() - t0:.1f}s")
    else:
        samples = []
    for rec in samples:
        image = rec["files"].get("image")     # absolute: the judge reads relative paths from the benchmark's folder
        files = {k: Path(os.path.relpath(v, out)).as_posix() for k, v in rec["files"].items()}
        to_judge.append((by_id[rec["id"]], rec["text"], None if image is None else Path(image).resolve(),
                         {"id": rec["id"], "category": by_id[rec["id"]]["category"], "text": rec["text"],
                          "files": files}))
    text_answers = getattr(task, "name", None) in ("text", "mmu")   # their image.png is the input, not an output
    t0, chunk = time.perf_counter(), max(1, int(getattr(judge, "batch_items", 1)))
    for start in range(0, len(to_judge), chunk):
        part = to_judge[start:start + chunk]
        judged = judge_samples(judge, [(item, text, image) for item, text, image, _ in part])
        rewritten = False
        for (item, _, image, line), verdict in zip(part, judged):
            line = {k: v for k, v in line.items() if k not in ("scores", "reasons", "judge_errors", "image_stats")}
            rec = {"id": line["id"], "category": line["category"], **verdict, **line,
                   "image_stats": None if text_answers else
                   image_stats(image, bench_dir / item["input_image"] if item.get("input_image") else None)}
            if line["id"] in {r["id"] for r in results}:
                results[:] = [rec if r["id"] == line["id"] else r for r in results]
                rewritten = True
            else:
                append(rec)
        if rewritten:                  # re-judged lines replaced: the file swapped once per chunk
            _rewrite(results_path, results)
        n = min(start + chunk, len(to_judge))
        rate = n / max(time.perf_counter() - t0, 1e-9)
        log(f"  judged {n}/{len(to_judge)} items: {rate:.2f} items/s, ETA {(len(to_judge) - n) / rate:.0f}s")
    # report in benchmark order (results of ids no longer in the benchmark, e.g. with --limit, are left out)
    order = {it["id"]: n for n, it in enumerate(items)}
    shown = sorted((r for r in results if r["id"] in order), key=lambda r: order[r["id"]])
    summary = summarize(shown, getattr(judge, "metrics", METRICS))
    if hasattr(judge, "describe"):
        summary["judge"] = judge.describe()
    if hasattr(judge, "accounting"):
        summary["judge_usage"] = judge.accounting()          # what this invocation spent
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = summary_markdown(summary)
    (out / "summary.md").write_text(md)
    (out / "report.html").write_text(report_html(out, shown, {it["id"]: it for it in items}, bench_dir, summary),
                                     encoding="utf-8")
    log(md.rstrip())
    log(f"wrote {results_path}, {out / 'summary.json'}, {out / 'summary.md'}, {out / 'report.html'}")
    return summary

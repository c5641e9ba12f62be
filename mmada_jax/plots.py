"""Training curves as PNG plots, drawn with Pillow (no plotting library is a dependency).

:func:`plot_curves` draws one panel per named series (loss against step, say) with axes, tick
labels and a title, :func:`plot_metrics_file` reads a run's ``metrics.jsonl`` and plots the
columns asked for, and :func:`compare_runs` draws one column of several runs in one panel (an RL
run beside its ablation), smoothed by a trailing :func:`moving_average` since per-step rewards of a
few rollouts are noisy. Values that are not finite are left out (and counted in the panel's title),
so a diverged step never hides the rest of the curve.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Collection, Sequence

from PIL import Image, ImageDraw, ImageFont

PANEL = (520, 300)         # width, height of one panel in pixels
MARGIN = (62, 18, 16, 40)  # left, top, right, bottom
COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _label(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def _panel(title: str, series: dict[str, tuple[Sequence[float], Sequence[float]]], log_y: bool) -> Image.Image:
    w, h = PANEL
    left, top, right, bottom = MARGIN
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    clean, dropped = {}, 0
    for name, (xs, ys) in series.items():
        pts = [(float(x), float(y)) for x, y in zip(xs, ys)
               if math.isfinite(float(y)) and (not log_y or float(y) > 0)]
        dropped += len(xs) - len(pts)
        if pts:
            clean[name] = pts
    d.text((left, 2), title + (f"  ({dropped} non-finite point(s) left out)" if dropped else ""), fill="black", font=font)
    x0, y0, x1, y1 = left, top, w - right, h - bottom
    d.rectangle([x0, y0, x1, y1], outline="black")
    if not clean:
        d.text((x0 + 10, y0 + 10), "no data", fill="black", font=font)
        return img
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    xs = [p[0] for pts in clean.values() for p in pts]
    ys = [fy(p[1]) for pts in clean.values() for p in pts]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if xhi == xlo:
        xhi = xlo + 1
    if yhi == ylo:
        yhi, ylo = yhi + 0.5, ylo - 0.5
    pad = 0.05 * (yhi - ylo)
    ylo, yhi = ylo - pad, yhi + pad

    def px(x, y):
        return (x0 + (x - xlo) / (xhi - xlo) * (x1 - x0), y1 - (fy(y) - ylo) / (yhi - ylo) * (y1 - y0))

    for t in _ticks(xlo, xhi):
        x = x0 + (t - xlo) / (xhi - xlo) * (x1 - x0)
        d.line([x, y1, x, y1 + 4], fill="black")
        d.text((x - 12, y1 + 6), _label(t), fill="black", font=font)
    for t in _ticks(ylo, yhi):
        y = y1 - (t - ylo) / (yhi - ylo) * (y1 - y0)
        d.line([x0 - 4, y, x1, y], fill=(225, 225, 225))
        d.line([x0 - 4, y, x0, y], fill="black")
        d.text((2, y - 5), _label(10 ** t if log_y else t), fill="black", font=font)
    d.text(((x0 + x1) // 2 - 10, h - 14), "step", fill="black", font=font)
    for i, (name, pts) in enumerate(clean.items()):
        color = COLORS[i % len(COLORS)]
        line = [px(x, y) for x, y in pts]
        if len(line) > 1:
            d.line(line, fill=color, width=2)
        else:
            d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=color)
        d.text((x1 - 150, y0 + 4 + 12 * i), name, fill=color, font=font)
    return img


def plot_curves(panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]], path: str | Path,
                log_y: bool | Collection[str] = False) -> Path:
    """Write ``panels`` ({title: {series name: (steps, values)}}) stacked vertically to ``path``;
    ``log_y``: every panel on a log scale (True) or the panels with these titles (e.g. a KL whose
    rare spikes would flatten the rest of its curve)."""
    logged = set(panels) if log_y is True else set(log_y or ())
    images = [_panel(title, series, title in logged) for title, series in panels.items()]
    out = Image.new("RGB", (PANEL[0], PANEL[1] * max(1, len(images))), "white")
    for i, im in enumerate(images):
        out.paste(im, (0, PANEL[1] * i))
    path = Path(path)
    out.save(path)
    return path


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (a run resumed after a crash may repeat steps: the last row
    of each step wins)."""
    rows: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[int(row["step"])] = row
    return [rows[s] for s in sorted(rows)]


def plot_metrics_file(metrics: str | Path, path: str | Path, panels: dict[str, Sequence[str]],
                      log_y: bool | Collection[str] = False, smooth: int = 1) -> Path:
    """Plot columns of ``metrics`` (a metrics.jsonl): ``panels`` = {title: [column, ...]}, ``log_y``
    as :func:`plot_curves`.
    ``smooth`` > 1 adds each column's trailing moving average over that many steps (noisy
    per-step values such as RL rewards)."""
    rows = read_metrics(metrics)
    data = {}
    for title, cols in panels.items():
        series = {}
        for c in cols:
            steps, values = [r["step"] for r in rows if c in r], [r[c] for r in rows if c in r]
            series[c] = (steps, values)
            if smooth > 1:
                series[f"{c} (mean of {smooth})"] = (steps, moving_average(values, smooth))
        data[title] = series
    return plot_curves(data, path, log_y=log_y)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean of the last ``window`` finite values at each point (non-finite values are
    skipped; a point with no finite value in its window stays NaN). ``window`` 1 returns the values."""
    if window < 1:
        raise ValueError(f"moving-average window must be >= 1, got {window}")
    out = []
    for i in range(len(values)):
        seen = [float(v) for v in values[max(0, i - window + 1):i + 1] if math.isfinite(float(v))]
        out.append(sum(seen) / len(seen) if seen else math.nan)
    return out


def compare_runs(runs: dict[str, str | Path], columns: dict[str, str], path: str | Path, window: int = 1) -> Path:
    """One panel per ``columns`` ({title: metrics column}) with one series per run ({label:
    metrics.jsonl or a run folder holding one}), each smoothed by ``moving_average(window)``."""
    files = {}
    for label, run in runs.items():
        f = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
        if not f.is_file():
            raise FileNotFoundError(f"run {label!r}: no metrics file at {f}")
        files[label] = read_metrics(f)
    suffix = f" (moving average of {window})" if window > 1 else ""
    panels = {}
    for title, column in columns.items():
        series = {}
        for label, rows in files.items():
            kept = [r for r in rows if column in r]
            if not kept:
                raise ValueError(f"run {label!r}: no column {column!r} in its metrics")
            series[label] = ([r["step"] for r in kept], moving_average([r[column] for r in kept], window))
        panels[title + suffix] = series
    return plot_curves(panels, path)

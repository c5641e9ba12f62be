"""Training-curve PNGs: drawn from metrics.jsonl, non-finite points left out and counted."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mmada_jax.plots import PANEL, plot_metrics_file, read_metrics


def test_plot_metrics_file(tmp_path):
    rows = [{"step": s, "loss": 10.0 / s, "recon": 5.0 / s} for s in range(1, 21)]
    rows[5]["loss"] = float("nan")
    rows.append({"step": 3, "loss": 99.0, "recon": 1.0})   # a resumed run repeats step 3: the last row wins
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_metrics(tmp_path / "metrics.jsonl")[2]["loss"] == 99.0
    path = plot_metrics_file(tmp_path / "metrics.jsonl", tmp_path / "loss.png", {"loss": ["loss", "recon"],
                                                                                "recon only": ["recon"]})
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (2 * PANEL[1], PANEL[0], 3)
    blue = (np.abs(img.astype(int) - (31, 119, 180)).sum(-1) < 30).sum()
    assert blue > 100   # the first series is drawn


def test_plot_with_no_finite_points(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"step": 1, "loss": float("inf")}) + "\n")
    path = plot_metrics_file(tmp_path / "m.jsonl", tmp_path / "x.png", {"loss": ["loss"]})
    assert Image.open(path).size == (PANEL[0], PANEL[1])

"""Training-curve PNGs: drawn from metrics.jsonl, non-finite points left out and counted."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mmada_jax.plots import PANEL, _panel, plot_curves, plot_metrics_file, read_metrics


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


def test_moving_average_skips_non_finite_values():
    from mmada_jax.plots import moving_average
    got = moving_average([1.0, 3.0, float("nan"), 5.0, 7.0], 2)
    assert got == [1.0, 2.0, 3.0, 5.0, 6.0]     # the NaN is skipped, not averaged
    assert moving_average([1.0, 2.0], 1) == [1.0, 2.0]
    assert np.isnan(moving_average([float("nan")], 3)[0])


def test_curves_cli_draws_two_runs_and_names_bad_input(tmp_path, capsys):
    from train.curves import main
    for name, scale in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        rows = [{"step": s, "final_reward_raw": scale * s, "kl": 0.1} for s in range(1, 31)]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "curves.png"
    args = ["--run", f"sampled={tmp_path / 'a'}", "--run", f"final={tmp_path / 'b' / 'metrics.jsonl'}",
            "--column", "reward=final_reward_raw", "--column", "KL=kl", "--window", "5", "--out", str(out)]
    assert main(args) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (2 * PANEL[1], PANEL[0], 3)
    for color in ((31, 119, 180), (214, 39, 40)):       # both runs are drawn
        assert (np.abs(img.astype(int) - color).sum(-1) < 30).sum() > 100
    assert main(args) == 2                               # an existing PNG is kept without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(args[:-2] + ["--column", "x=nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_smoothed_series_is_the_moving_average(tmp_path, monkeypatch):
    import mmada_jax.plots as plots
    rows = [{"step": s, "reward": float(s % 2)} for s in range(1, 9)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = {}
    monkeypatch.setattr(plots, "plot_curves", lambda data, path, log_y=False: seen.update(data) or path)
    plots.plot_metrics_file(tmp_path / "m.jsonl", tmp_path / "r.png", {"reward": ["reward"]}, smooth=4)
    steps, values = seen["reward"]["reward (mean of 4)"]
    assert steps == list(range(1, 9)) and values == [1.0, 0.5, 2 / 3, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert seen["reward"]["reward"][1] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_log_scale_applies_to_the_named_panels_only(tmp_path):
    series = {"kl": ([1, 2, 3, 4], [0.01, 300.0, 0.02, 0.03])}
    panels = {"reward": series, "KL": series}
    linear, log = (np.asarray(_panel("KL", series, flag)) for flag in (False, True))
    assert not np.array_equal(linear, log)
    for log_y, want in (({"KL"}, (False, True)), (True, (True, True)), (False, (False, False))):
        img = np.asarray(Image.open(plot_curves(panels, tmp_path / "c.png", log_y=log_y)).convert("RGB"))
        for i, (title, flag) in enumerate(zip(panels, want)):
            np.testing.assert_array_equal(img[i * PANEL[1]:(i + 1) * PANEL[1]],
                                          np.asarray(_panel(title, series, flag).convert("RGB")))

"""The shipped demo of the synthetic shapes world (demo/parallel_m_shapes_pararl, after ParaRL of
demo/parallel_m_shapes): its files; its image
tokenizer reconstructs the world well enough for the judge (>= 98 on every image metric of
ground-truth images passed through it); the README's main command writes a correct edit with its
reasoning; and (slow) the model scores on held-out benchmark items."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from mmada_jax.app.cli import DEMO as DEMO_FILES, demo_example

DEMO = DEMO_FILES["checkpoint"]
IMAGE_METRICS = ("Image Quality", "Image Alignment", "Image Consistency", "Output Alignment")


def test_shipped_files_and_their_size():
    sft = DEMO_FILES["example"].parent.parent            # the SFT demo (the default is its ParaRL successor)
    for demo, curves in ((DEMO, ("reward_curves.png", "rewards.png")), (sft, ("sft_loss.png", "vq_loss.png"))):
        files = [p for p in demo.rglob("*") if p.is_file()]
        assert sum(p.stat().st_size for p in files) < 50e6
        for sub in ("hf", "vqvae"):
            assert (demo / sub).is_dir(), sub
        for name in ("README.md", "sampling.yaml", *curves):
            assert (demo / name).is_file(), name


def test_shipped_tokenizer_reconstructs_the_world():
    """Ground-truth output images of held-out examples (another seed than the tokenizer's training
    and its own evaluation) through encode/decode score >= 98 on every image metric."""
    from mmada_jax.checkpoints import load_vq
    from mmada_jax.vq.train import reconstruction_scores
    tok = load_vq(DEMO / "vqvae")
    result = reconstruction_scores(tok, 64, seed=2_000_003, size=tok.model.config.resolution)
    for metric in IMAGE_METRICS:
        assert result["means"][metric] >= 98.0, (metric, result["worst"][:2])


def test_shipped_text_tokenizer_fits_the_model_layout():
    """The world tokenizer ends where the demo model config's image codes begin, and writes the
    world's texts without unknown words."""
    from mmada_jax.config import ModelConfig
    from mmada_jax.data.synthetic import make_example
    from mmada_jax.tokenizer import load_tokenizer
    config = ModelConfig.from_yaml(ROOT / "configs" / "demo_parallel_m.yaml")
    tok = load_tokenizer(DEMO / "hf", config)           # checks the id layout
    assert len(tok) == config.tokens.image_offset
    for i in range(20):
        ex = make_example(3_000_017, i, 64)
        for text in filter(None, (ex.instruction, ex.reasoning)):
            assert tok.decode(tok.encode(text)) == text


def test_shipped_tokenizer_loads_from_a_relative_path(monkeypatch):
    """Orbax refuses relative paths; the loaders make them absolute (``--vq demo/...`` works)."""
    from pathlib import Path
    from mmada_jax.checkpoints import load_vq
    monkeypatch.chdir(DEMO.parent)
    tok = load_vq(Path(DEMO.name) / "vqvae")
    assert tok.model.config.resolution > 0


def test_main_command_writes_a_correct_edit(tmp_path):
    """``python -m sample parallel --trajectory`` with no checkpoint runs the demo model on the
    world's example request; the judge finds its reasoning and its image right."""
    from mmada_jax.evaluation import get_judge
    out = subprocess.run([sys.executable, "-m", "sample", "parallel", "--trajectory", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "demo model" in out.stdout
    item, root = demo_example()
    sample = tmp_path / "0000"
    assert json.loads((sample / "record.json").read_text())["prompt"] == item["instruction"]
    assert (sample / "trajectory.gif").is_file()
    text = (sample / "text.txt").read_text().strip()
    image = np.asarray(Image.open(sample / "image.png").convert("RGB"))
    result = get_judge("synthetic", root=root).score(item, text, image)
    for metric in ("Text Alignment", "Image Alignment", "Output Alignment"):
        assert result["scores"][metric] == 100.0, (metric, result["reasons"][metric], text)


@pytest.mark.slow
def test_demo_model_on_held_out_items(tmp_path):
    """``evaluate`` (no checkpoint: the demo model) on 20 held-out benchmark items of a seed that
    neither training nor the README's table used: Output Alignment >= 50."""
    from mmada_jax.evaluation.synthetic_judge import write_benchmark
    bench = write_benchmark(tmp_path / "bench", 16, seed=424_242, t2i_fraction=0.2, generation=4)
    out = subprocess.run([sys.executable, "-m", "evaluate", "--benchmark", str(bench), "--out", str(tmp_path / "eval"),
                          "--batch-size", "10"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["Mean"]["n"] == 20
    assert summary["Mean"]["Output Alignment"] >= 50.0, summary["Mean"]

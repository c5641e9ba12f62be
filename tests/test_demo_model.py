"""The shipped demo of the synthetic shapes world (demo/parallel_m_shapes): its files, and its image
tokenizer reconstructs the world well enough for the judge (issue 12 asks >= 98 on every image
metric of ground-truth images passed through it)."""

from __future__ import annotations

from conftest import ROOT

DEMO = ROOT / "demo" / "parallel_m_shapes"
IMAGE_METRICS = ("Image Quality", "Image Alignment", "Image Consistency", "Output Alignment")


def test_shipped_files_and_their_size():
    files = [p for p in DEMO.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 50e6
    for sub in ("hf", "vqvae"):
        assert (DEMO / sub).is_dir(), sub
    for name in ("README.md", "vq_loss.png"):
        assert (DEMO / name).is_file(), name


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

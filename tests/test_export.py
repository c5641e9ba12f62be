"""python -m train.export: a training run becomes a converted checkpoint with its tokenizers, that
every command opens alone; existing files are replaced only with --overwrite, others never."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, golden_path
from mmada_jax import load_model, load_vq, open_checkpoint
from mmada_jax.data.pretokenize import pretokenize
from mmada_jax.data.synthetic import write_dataset
from mmada_jax.training import TrainConfig
from mmada_jax.training.loop import run_sft

pytestmark = pytest.mark.golden


def _image_size() -> int:
    """The golden VQ's image side (else a 4 x 4 grid of its downsampling): sizes come from the data."""
    vq = load_vq(golden_path("magvitv2_tiny"))
    return int(getattr(vq.config, "image_size", None) or 4 * vq.downsample)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    shutil.copytree(ROOT / "tests/fixtures/tiny_tokenizer", root / "model" / "hf")   # the demo models' layout
    write_dataset(root / "raw", 8, seed=3, size=_image_size())
    pretokenize(root / "raw", root / "data", checkpoint=golden_path("mmada_tiny"), vq=golden_path("magvitv2_tiny"),
                tokenizer=ROOT / "tests/fixtures/tiny_tokenizer", text_len=512, log=lambda *_: None)
    config = TrainConfig(checkpoint=str(golden_path("mmada_tiny")), data_dir=str(root / "data"), text_len=512,
                         batch_size=4, steps=2, warmup_steps=1, lr=1e-3, out_dir=str(root / "run"), save_every=2,
                         vq=str(golden_path("magvitv2_tiny")), tokenizer=str(root / "model" / "hf"))
    run_sft(config, log=lambda *_: None)
    return root / "run"


def _flat(model):
    return {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_export_is_a_self_contained_checkpoint(run_dir, tmp_path):
    from train.export import main
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "README.md").write_text("mine")
    assert main([str(run_dir), str(dst)]) == 0
    ckpt = open_checkpoint(dst)
    assert ckpt.format == "converted" and ckpt.tokenizer_dir == dst / "hf" and ckpt.vq_dir == dst / "vqvae"
    a, b = _flat(load_model(run_dir)[0]), _flat(load_model(dst)[0])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    side = _image_size()
    images = np.zeros((1, side, side, 3), np.uint8)
    np.testing.assert_array_equal(np.asarray(load_vq(dst).encode(images)),
                                  np.asarray(load_vq(golden_path("magvitv2_tiny")).encode(images)))
    assert (dst / "hf" / "tokenizer.json").read_bytes() == (ROOT / "tests/fixtures/tiny_tokenizer/tokenizer.json").read_bytes()

    # a second export needs --overwrite; it never touches files it did not write
    assert main([str(run_dir), str(dst)]) == 2
    before = (dst / "checksums.json").read_bytes()
    assert main([str(run_dir), str(dst), "--overwrite"]) == 0
    assert (dst / "README.md").read_text() == "mine"
    assert (dst / "checksums.json").read_bytes() == before
    assert sorted(p.name for p in dst.iterdir()) == ["README.md", "checksums.json", "config.yaml", "hf", "params",
                                                     "sampling.yaml", "vqvae"]


def test_run_and_export_sample_with_the_budgets_the_run_trained_with(run_dir, tmp_path):
    """A run's text budget and instruction padding are its sampling defaults, without flags, and
    its export carries them in sampling.yaml."""
    from mmada_jax.app.cli import checkpoint_defaults
    from mmada_jax.app.tasks import TASKS
    from mmada_jax.export import export_run
    task = TASKS["parallel_m"]()
    train = open_checkpoint(run_dir).train_config
    expected = {"text_len": train["text_len"], "pad_instruction": train["instruction_len"] or train["text_len"]}
    assert expected["text_len"] != task.settings().text_len       # else the check below proves nothing
    assert checkpoint_defaults(run_dir, task) == expected
    export_run(run_dir, tmp_path / "model", log=lambda *_: None)
    assert checkpoint_defaults(tmp_path / "model", task) == expected
    # a re-export keeps the settings chosen by hand in sampling.yaml and renews the budgets
    (tmp_path / "model" / "sampling.yaml").write_text("parallel_m: {text_len: 7, image_cfg: 0.0}\n")
    export_run(run_dir, tmp_path / "model", overwrite=True, log=lambda *_: None)
    assert checkpoint_defaults(tmp_path / "model", task) == {**expected, "image_cfg": 0.0}
    # a sampling.yaml it cannot merge into stops the export, naming the file, before anything is replaced
    before = (tmp_path / "model" / "checksums.json").read_bytes()
    (tmp_path / "model" / "sampling.yaml").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="sampling.yaml: expected"):
        export_run(run_dir, tmp_path / "model", overwrite=True, log=lambda *_: None)
    assert (tmp_path / "model" / "checksums.json").read_bytes() == before
    assert (tmp_path / "model" / "sampling.yaml").read_text() == "[1, 2]\n"
    assert checkpoint_defaults(golden_path("mmada_tiny"), task) == {}     # a converted checkpoint has none


def test_export_keeps_side_folders_the_run_trained_with(run_dir):
    from mmada_jax.export import export_run
    dst = run_dir.parent / "model"          # the run's tokenizer is dst/hf
    before = {p: p.stat().st_mtime_ns for p in (dst / "hf").iterdir()}
    logs = []
    export_run(run_dir, dst, log=logs.append)
    assert "kept" in logs[-1] and {p: p.stat().st_mtime_ns for p in (dst / "hf").iterdir()} == before
    ckpt = open_checkpoint(dst)
    assert ckpt.tokenizer_dir == dst / "hf" and ckpt.vq_dir == dst / "vqvae"


def test_export_refuses_a_converted_checkpoint(tmp_path):
    from train.export import main
    assert main([str(golden_path("mmada_tiny")), str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()

"""The SFT loop end to end on synthetic data: the loss falls, resume is bit-exact, a run resumes
on another mesh, metrics and checkpoints are written, the CLI and the AOT memory plan work."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, golden_path
from mmada_jax.data.pretokenize import pretokenize
from mmada_jax.data.synthetic import write_dataset
from mmada_jax.training import TrainConfig
from mmada_jax.training.loop import run_sft

pytestmark = pytest.mark.golden
TEXT_LEN = 512


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from mmada_jax import load_vq
    root = tmp_path_factory.mktemp("sft")
    vq = load_vq(golden_path("magvitv2_tiny"))
    write_dataset(root / "raw", 48, seed=1, size=_image_size(vq))   # pretokenize's default: the VQ's size
    pretokenize(root / "raw", root / "data", checkpoint=golden_path("mmada_tiny"), vq=golden_path("magvitv2_tiny"),
                tokenizer=ROOT / "tests/fixtures/tiny_tokenizer", text_len=TEXT_LEN, log=lambda *_: None)
    return root / "data"


def _image_size(vq) -> int:
    """The VQ's configured image side, else 4 x its downsampling factor (a 4 x 4 grid)."""
    return int(getattr(vq.config, "image_size", None) or 4 * vq.downsample)


def _config(data_dir, out_dir, **kw):
    base = dict(checkpoint=str(golden_path("mmada_tiny")), data_dir=data_dir and str(data_dir), text_len=TEXT_LEN, batch_size=8,
                steps=6, lr=3e-3, warmup_steps=2, out_dir=str(out_dir), save_every=3, log_every=1, mesh="fsdp=8")
    base.update(kw)
    return TrainConfig(**base)


def _final_params(out_dir, step):
    import orbax.checkpoint as ocp
    restored = ocp.StandardCheckpointer().restore(out_dir / "checkpoints" / str(step) / "state")
    return jax.tree.map(np.asarray, restored["params"])


def test_loss_falls_and_outputs_are_written(data_dir, tmp_path):
    rows = run_sft(_config(data_dir, tmp_path, steps=24, save_every=12), log=lambda *_: None)
    losses = [r["loss"] for r in rows]
    # single-batch losses are noisy (the text part is weighted by 1/t): compare medians of 6 steps
    assert np.median(losses[-6:]) < 0.6 * np.median(losses[:6]), losses
    assert (tmp_path / "loss.png").stat().st_size > 0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) and {"loss", "text_loss", "image_loss", "lr", "grad_norm", "tokens_per_s"} <= set(
        json.loads(lines[0]))
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [12, 24]


def test_instruction_len_shortens_the_sequence(data_dir, tmp_path):
    """A separate instruction budget (the data's longest instruction + BOS + EOS) trains on
    sequences shorter by text_len - instruction_len; one token less is an error naming an example
    before any step runs."""
    from mmada_jax.config import ConfigError, load_config
    from mmada_jax.data.pipeline import load_split
    from mmada_jax.training.objectives import DataLayout, make_objective
    source, meta = load_split(data_dir, "train")
    longest = max(len(source[i]["instruction_ids"]) for i in range(len(source)))
    config = _config(data_dir, tmp_path / "run", steps=2, instruction_len=longest + 2)
    model_config = load_config(golden_path("mmada_tiny"))
    n = int(meta["num_image_tokens"])
    width = make_objective(config, model_config, DataLayout.from_metadata(meta)).sequence_length
    assert width == 3 + n + (longest + 2) + n + 2 + TEXT_LEN
    rows = run_sft(config, log=lambda *_: None)
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
    with pytest.raises(ConfigError, match=f"instruction_len={longest + 1}: example"):
        run_sft(_config(data_dir, tmp_path / "short", steps=2, instruction_len=longest + 1), log=lambda *_: None)
    assert not (tmp_path / "short" / "checkpoints").exists()


def test_instruction_len_padding_bias_and_changed_weight_are_for_parallel_m_only(tmp_path):
    from mmada_jax.config import ConfigError, load_config
    from mmada_jax.training.objectives import DataLayout, make_objective
    config = _config(tmp_path, tmp_path / "run", checkpoint=str(golden_path("dimoo_tiny")), instruction_len=8)
    with pytest.raises(ConfigError, match="instruction_len=8: only for MMaDA-Parallel-M"):
        make_objective(config, load_config(golden_path("dimoo_tiny")), DataLayout(16, (4, 4), (1, 2)))
    config = _config(tmp_path, tmp_path / "run", checkpoint=str(golden_path("dimoo_tiny")), padding_bias=False)
    with pytest.raises(ConfigError, match="padding_bias=false: only for MMaDA-Parallel-M"):
        make_objective(config, load_config(golden_path("dimoo_tiny")), DataLayout(16, (4, 4), (1, 2)))
    config = _config(tmp_path, tmp_path / "run", checkpoint=str(golden_path("dimoo_tiny")), changed_image_weight=3.0)
    with pytest.raises(ConfigError, match="changed_image_weight=3.0: only for MMaDA-Parallel-M"):
        make_objective(config, load_config(golden_path("dimoo_tiny")), DataLayout(16, (4, 4), (1, 2)))


def test_resume_is_bit_exact(data_dir, tmp_path):
    straight = run_sft(_config(data_dir, tmp_path / "a"), log=lambda *_: None)
    first = run_sft(_config(data_dir, tmp_path / "b", steps=3), log=lambda *_: None)
    second = run_sft(_config(data_dir, tmp_path / "b"), log=lambda *_: None)   # resumes from step 3
    assert [r["step"] for r in first + second] == [r["step"] for r in straight]
    assert [r["loss"] for r in first + second] == [r["loss"] for r in straight]
    a, b = _final_params(tmp_path / "a", 6), _final_params(tmp_path / "b", 6)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_resume_on_another_mesh(data_dir, tmp_path):
    straight = run_sft(_config(data_dir, tmp_path / "a"), log=lambda *_: None)
    run_sft(_config(data_dir, tmp_path / "b", steps=3), log=lambda *_: None)
    second = run_sft(_config(data_dir, tmp_path / "b", mesh="data=2,fsdp=2,tensor=2"), log=lambda *_: None)
    np.testing.assert_allclose([r["loss"] for r in second], [r["loss"] for r in straight[3:]], rtol=1e-5)
    a, b = _final_params(tmp_path / "a", 6), _final_params(tmp_path / "b", 6)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=1e-4, err_msg=key)


def test_cli_and_memory_plan(tmp_path):
    out = subprocess.run([sys.executable, "-m", "train.sft", "--config", "configs/mmada_parallel_m_sft.yaml",
                          "--compile-only", "--mesh", "fsdp=8"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "8.08B parameters on 8 devices" in out.stdout and "arguments 11.29 GiB" in out.stdout
    out = subprocess.run([sys.executable, "-m", "train.sft", "--config", "configs/mmada_parallel_a_sft.yaml",
                          "--compile-only", "--mesh", "fsdp=8"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "parallel_a" in out.stdout and "sequences of 3165" in out.stdout and "arguments 11.29 GiB" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "train.sft", "--config", "configs/tiny_sft.yaml", "stepz=3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "did you mean 'steps'" in bad.stderr


def test_interrupted_save_leaves_the_last_checkpoint_usable(data_dir, tmp_path):
    """A save killed half-way leaves only an uncommitted temporary directory; resuming ignores it
    and continues from the last complete checkpoint."""
    run_sft(_config(data_dir, tmp_path, steps=3), log=lambda *_: None)
    partial = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\0" * 100)
    rows = run_sft(_config(data_dir, tmp_path), log=lambda *_: None)
    assert [r["step"] for r in rows] == [4, 5, 6]
    assert (tmp_path / "checkpoints" / "6" / "state").is_dir()


@pytest.mark.slow      # ~80 s (pytest -m slow); -A's objective alone is in test_losses / test_parallel_a_sft
def test_parallel_a_sft_runs_and_resumes(tmp_path):
    """MMaDA-Parallel-A through the same loop: -A pretokenize metadata, the -A objective, falling
    loss, bit-exact resume."""
    from mmada_jax import load_vq
    from mmada_jax.data.records import describe
    vq = load_vq(golden_path("amused_vq_tiny"))
    size = _image_size(vq)
    write_dataset(tmp_path / "raw", 24, seed=2, size=size)
    pretokenize(tmp_path / "raw", tmp_path / "data", checkpoint=golden_path("dimoo_tiny"),
                vq=golden_path("amused_vq_tiny"), tokenizer=ROOT / "tests/fixtures/tiny_tokenizer_a",
                text_len=TEXT_LEN, image_size=size, log=lambda *_: None)
    meta = describe(tmp_path / "data")
    assert meta["model_kind"] == "dimoo" and meta["grid"] == list(vq.grid(size, size))
    assert meta["num_image_tokens"] == vq.num_tokens(size, size) and len(meta["system_ids"]) == len(
        meta["system_prompt"])   # the character-level tokenizer: one id per character
    kw = dict(checkpoint=str(golden_path("dimoo_tiny")), objective="parallel_a", b2=0.95,
              weight_decay=0.1, max_grad_norm=4.0, min_lr_scale=0.0)
    logs = []
    rows = run_sft(_config(tmp_path / "data", tmp_path / "a", steps=16, **kw), log=logs.append)
    assert any("objective parallel_a" in line for line in logs)
    losses = [r["loss"] for r in rows]
    assert np.median(losses[-4:]) < 0.8 * np.median(losses[:4]), losses
    straight = run_sft(_config(tmp_path / "data", tmp_path / "c", steps=6, **kw), log=lambda *_: None)
    run_sft(_config(tmp_path / "data", tmp_path / "b", steps=3, **kw), log=lambda *_: None)
    second = run_sft(_config(tmp_path / "data", tmp_path / "b", steps=6, **kw), log=lambda *_: None)
    assert [r["loss"] for r in second] == [r["loss"] for r in straight[3:]]


def test_objective_must_fit_the_checkpoint(data_dir, tmp_path):
    from mmada_jax.config import ConfigError
    with pytest.raises(ConfigError, match="parallel_a needs a dimoo"):
        run_sft(_config(data_dir, tmp_path, objective="parallel_a"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="system_ids"):   # -M data under the -A objective
        run_sft(_config(data_dir, tmp_path / "x", checkpoint=str(golden_path("dimoo_tiny"))), log=lambda *_: None)


def test_a_trained_run_samples_and_exports(data_dir, tmp_path):
    """Train -> sample -> export with no extra step: the run folder is accepted as a checkpoint by
    the sample CLI (its VQ and tokenizer found from the run's config) and by the converter."""
    run_sft(_config(data_dir, tmp_path / "run", steps=2, save_every=2), log=lambda *_: None)
    out = subprocess.run([sys.executable, "-m", "sample", "parallel", "--checkpoint", tmp_path / "run",
                          "--image", ROOT / "tests/fixtures/demo_input.png", "--prompt", "Make it night.",
                          "--text-steps", "4", "--image-steps", "1", "--text-len", "16", "--out", tmp_path / "out"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "out/0000/record.json").read_text())
    assert record["checkpoint"] == str(tmp_path / "run/checkpoints/2") and (tmp_path / "out/0000/image.png").exists()
    out = subprocess.run([sys.executable, "convert_torch_weights.py", tmp_path / "run", tmp_path / "hf", "--to-hf"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "hf/config.json").exists() and list((tmp_path / "hf").glob("*.safetensors"))


def test_synthetic_data_of_another_world_version_is_not_reused(tmp_path):
    """A run's generated data is stamped with its recipe, the world's version included: a folder
    made by an older generator (other reasoning texts) is an error naming what differs."""
    from mmada_jax.config import ConfigError
    from mmada_jax.data.synthetic import WORLD_VERSION
    from mmada_jax.training.data import SYNTHETIC_DIR, prepare_data
    config = _config(None, tmp_path / "run", synthetic=8)
    stamp = tmp_path / "run" / SYNTHETIC_DIR / "synthetic.json"
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps({"synthetic": 8, "seed": config.seed, "image_size": config.synthetic_image_size,
                                 "text_len": config.text_len}))
    with pytest.raises(ConfigError, match=f"world=None there, {WORLD_VERSION} now"):
        prepare_data(config, tmp_path / "run", log=lambda *_: None)
    # a stamp without t2i_fraction was made with the default 0.1; another fraction is named
    stamp.write_text(json.dumps({"synthetic": 8, "seed": config.seed, "image_size": config.synthetic_image_size,
                                 "text_len": config.text_len, "world": WORLD_VERSION}))
    with pytest.raises(ConfigError, match="t2i_fraction=None there, 0.4 now"):
        prepare_data(_config(None, tmp_path / "run", synthetic=8, synthetic_t2i_fraction=0.4), tmp_path / "run",
                     log=lambda *_: None)

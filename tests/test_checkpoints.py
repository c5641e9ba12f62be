"""The one checkpoint loader: what a path is (converted, HF, training run or step), read once;
training checkpoints load, export to HF and load back; no Orbax metadata warning; clear errors."""

from __future__ import annotations

import logging
import shutil

import grain
import jax
import numpy as np
import pytest
from flax import nnx

import convert_torch_weights
from conftest import ROOT, golden_path
from mmada_jax import checkpoints, config as config_lib, model as model_lib
from mmada_jax import CheckpointError, ModelConfig, load_model, load_vq, open_checkpoint, save_model
from mmada_jax.convert import convert_to_orbax
from mmada_jax.training import TrainConfig
from mmada_jax.training import checkpoint as train_ckpt
from mmada_jax.training.loop import run_sft

pytestmark = pytest.mark.golden
N, L, B = 16, 8, 8            # image tokens, text budget, batch
TOKENIZER = ROOT / "tests/fixtures/tiny_tokenizer"


def _batches(tokens, count=4, seed=0):
    """Random SFT batches in the checkpoint's own id layout (codes and ids from its token table)."""
    rng = np.random.default_rng(seed)
    words = min(min(tokens.special.values()), tokens.mask_id)   # plain text ids lie below every special id
    text = lambda: np.concatenate([np.full((B, 1), tokens.bos_id), rng.integers(0, words, (B, L - 2)),
                                   np.full((B, 1), tokens.eos_id)], 1)
    codes = lambda: rng.integers(0, tokens.codebook_size, (B, N))
    return [{k: v.astype(np.int32) for k, v in {
        "input_image_codes": codes(), "output_image_codes": codes(), "input_text": text(), "output_text": text(),
        "input_text_len": rng.integers(2, L + 1, B), "output_text_len": rng.integers(2, L + 1, B)}.items()}
            for _ in range(count)]


def _open_data(config, tokens, out_dir, log):
    dataset = grain.MapDataset.source(_batches(tokens)).repeat(None).to_iter_dataset()
    return iter(dataset), {"num_image_tokens": N, "grid": [4, 4]}   # a free choice: any grid fits the model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-step SFT run of the tiny MMaDA (checkpoints at steps 2 and 3) and the params the loop
    held in memory at each save."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(checkpoint=str(golden_path("mmada_tiny")), synthetic=1, text_len=L, batch_size=B, steps=3,
                         save_every=2, lr=1e-3, warmup_steps=1, out_dir=str(out), log_every=1,
                         vq=str(golden_path("magvitv2_tiny")), tokenizer=str(TOKENIZER))
    saved = {}
    original = train_ckpt.RunCheckpoints.save

    def save(self, step, state, *args, **kw):
        saved[step] = jax.tree.map(np.asarray, jax.device_get(state["params"]))
        return original(self, step, state, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_ckpt.RunCheckpoints, "save", save)
        run_sft(config, log=lambda *_: None, open_data=_open_data)
    return out, saved


def _in_memory_model(params, config):
    graphdef, state = nnx.split(model_lib.abstract_model(config))
    nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, params))
    return nnx.merge(graphdef, state)


def _ids(config):
    """Two rows of ids spread over the checkpoint's whole vocabulary."""
    return (np.arange(2 * 24).reshape(2, 24) * 7) % config.vocab_size


def _assert_params_equal(model, params):
    loaded = nnx.to_pure_dict(nnx.state(model))
    assert set(loaded) == set(params)
    for key, value in params.items():
        np.testing.assert_array_equal(np.asarray(loaded[key]), value, err_msg=key)


def test_run_folder_and_step_load_the_trained_params(run):
    out, saved = run
    model, config = load_model(out)                                  # the run folder: its latest step
    _assert_params_equal(model, saved[3])
    assert (config.kind, config.param_dtype) == ("mmada", "float32")
    step2, _ = load_model(out / "checkpoints" / "2")                 # one training checkpoint
    _assert_params_equal(step2, saved[2])
    want = _in_memory_model(saved[3], config)(_ids(config))
    np.testing.assert_allclose(np.asarray(model(_ids(config))), np.asarray(want), atol=1e-6, rtol=0)
    bf16, bf16_config = load_model(out, dtype="bfloat16")            # fp32 master weights, cast on restore
    assert bf16_config.param_dtype == "bfloat16" and bf16.wte.dtype == jax.numpy.bfloat16
    np.testing.assert_array_equal(np.asarray(bf16.wte).astype(np.float32),
                                  saved[3]["wte"].astype(jax.numpy.bfloat16).astype(np.float32))


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_training_checkpoint_restores_into_shards(run):
    from mmada_jax import make_mesh
    out, saved = run
    model, _ = load_model(out, mesh=make_mesh({"fsdp": 8}))
    assert isinstance(model.wte.sharding, jax.sharding.NamedSharding)
    _assert_params_equal(model, saved[3])


def test_open_training_checkpoint_names_its_side_files(run):
    out, _ = run
    ckpt = open_checkpoint(out)
    assert (ckpt.format, ckpt.kind, ckpt.step) == ("training", "mmada", 3)
    assert ckpt.path == out / "checkpoints" / "3"
    assert ckpt.tokenizer_dir == TOKENIZER and ckpt.vq_dir == golden_path("magvitv2_tiny")
    assert ckpt.train_config["steps"] == 3 and ckpt.side_dir == golden_path("mmada_tiny")
    assert open_checkpoint(out / "checkpoints").step == 3            # the checkpoints/ folder itself
    assert type(load_vq(out)).__name__ == "MagvitV2Tokenizer"        # the run's image tokenizer
    # a load_model of an opened checkpoint reads nothing twice
    model, _ = load_model(ckpt)
    assert model.wte.shape == (ckpt.config.vocab_size, ckpt.config.d_model)


@pytest.mark.parametrize("which", ["run", "step"])
def test_to_hf_export_of_a_training_checkpoint_loads_back(run, tmp_path, which, capsys):
    out, saved = run
    src = out if which == "run" else out / "checkpoints" / "2"
    step = 3 if which == "run" else 2
    assert convert_torch_weights.main([str(src), str(tmp_path / "hf"), "--to-hf"]) == 0
    assert (tmp_path / "hf" / "config.json").exists() and (tmp_path / "hf" / "generation_config.json").exists()
    ckpt = open_checkpoint(tmp_path / "hf")
    assert ckpt.format == "hf" and ckpt.kind == "mmada"
    model, config = load_model(ckpt)
    _assert_params_equal(model, saved[step])
    want = _in_memory_model(saved[step], config)(_ids(config))
    np.testing.assert_allclose(np.asarray(model(_ids(config))), np.asarray(want), atol=1e-6, rtol=0)


def _copy_step(run_dir, dst, step=3):
    shutil.copytree(run_dir / "checkpoints" / str(step), dst / "checkpoints" / str(step))
    return dst / "checkpoints" / str(step)


def test_run_saved_without_the_model_item_reads_the_base_config(run, tmp_path):
    out, saved = run
    step = _copy_step(out, tmp_path)
    shutil.rmtree(step / "model")
    model, config = load_model(tmp_path)
    assert config == open_checkpoint(out).config
    _assert_params_equal(model, saved[3])


def test_errors_name_the_path_and_what_was_expected(run, tmp_path):
    out, _ = run
    step = _copy_step(out, tmp_path / "a")
    shutil.rmtree(step / "state")
    with pytest.raises(CheckpointError, match=r"without its 'state' item") as e:
        load_model(step)
    assert str(step) in str(e.value)
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="without a finished checkpoint"):
        open_checkpoint(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="expected a converted checkpoint") as e:
        load_model(tmp_path / "c")
    assert str(tmp_path / "c") in str(e.value) and "training run" in str(e.value)
    with pytest.raises(CheckpointError, match="not found"):
        open_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="not a transformer"):
        load_model(golden_path("magvitv2_tiny"))
    with pytest.raises(CheckpointError, match="not an image tokenizer"):
        load_vq(golden_path("mmada_tiny"))


def _absl_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "absl"]


def test_converted_and_saved_checkpoints_load_without_orbax_warnings(tmp_path, caplog):
    convert_to_orbax(golden_path("mmada_tiny"), tmp_path / "conv", log=lambda *_: None)
    with caplog.at_level(logging.INFO, logger="absl"):
        model, config = load_model(tmp_path / "conv")
        save_model(model, tmp_path / "saved")                        # the same layout as the converter
        again, _ = load_model(tmp_path / "saved")
    assert (tmp_path / "saved" / "params" / "_CHECKPOINT_METADATA").exists()
    assert (tmp_path / "saved" / "params" / "state").is_dir()
    assert not _absl_warnings(caplog), _absl_warnings(caplog)
    _assert_params_equal(again, jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model))))

    # a checkpoint of the previous save_model layout (the tree at params/'s root) still loads
    import orbax.checkpoint as ocp
    old = tmp_path / "old"
    writer = ocp.StandardCheckpointer()
    writer.save((old / "params").absolute(), nnx.to_pure_dict(nnx.state(model)))
    writer.wait_until_finished()
    config.to_yaml(old / "config.yaml")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="absl"):
        legacy, _ = load_model(old)
    assert not _absl_warnings(caplog), _absl_warnings(caplog)
    _assert_params_equal(legacy, jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model))))


def test_converted_checkpoint_has_no_metadata_warning_in_a_fresh_process(tmp_path):
    import subprocess
    import sys
    convert_to_orbax(golden_path("mmada_tiny"), tmp_path / "conv", log=lambda *_: None)
    code = "import mmada_jax; mmada_jax.load_model(%r); mmada_jax.load_vq(%r)" % (
        str(tmp_path / "conv"), str(golden_path("magvitv2_tiny")))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Metadata file does not exist" not in proc.stderr and "WARNING:absl" not in proc.stderr, proc.stderr


class _Counter:
    def __init__(self, monkeypatch):
        self.calls = {}
        self.mp = monkeypatch

    def wrap(self, owner, name, classmethod_=False):
        original = getattr(owner, name)

        def counted(*args, **kw):
            self.calls[name] = self.calls.get(name, 0) + 1
            return original(*args[1:], **kw) if classmethod_ else original(*args, **kw)
        self.mp.setattr(owner, name, classmethod(counted) if classmethod_ else counted)


@pytest.mark.parametrize("fmt", ["converted", "hf", "training"])
def test_config_read_once_and_abstract_model_built_once(fmt, run, tmp_path, monkeypatch):
    if fmt == "converted":
        convert_to_orbax(golden_path("mmada_tiny"), tmp_path / "conv", log=lambda *_: None)
        path = tmp_path / "conv"
    else:
        path = golden_path("mmada_tiny") if fmt == "hf" else run[0]
    counter = _Counter(monkeypatch)
    counter.wrap(config_lib, "load_config")
    counter.wrap(ModelConfig, "from_hf_dir", classmethod_=True)
    counter.wrap(ModelConfig, "from_hf_config", classmethod_=True)
    counter.wrap(ModelConfig, "from_dict", classmethod_=True)
    counter.wrap(model_lib, "abstract_model")
    ckpt = open_checkpoint(path)
    load_model(ckpt)
    reads = {"converted": {"load_config": 1, "from_dict": 1}, "hf": {"from_hf_config": 1},
             "training": {"from_dict": 1}}[fmt]
    assert counter.calls == dict(reads, abstract_model=1), counter.calls
    counter.calls.clear()
    load_model(path)                                                 # straight from the path: the same
    assert counter.calls == dict(reads, abstract_model=1), counter.calls


@pytest.mark.parametrize("fmt", ["hf", "converted"])
def test_vq_abstract_module_built_once(fmt, tmp_path, monkeypatch):
    from mmada_jax.vq import checkpoint as vq_kinds
    path = golden_path("magvitv2_tiny")
    if fmt == "converted":
        convert_to_orbax(path, tmp_path / "conv", log=lambda *_: None)
        path = tmp_path / "conv"
    vq_kinds.abstract_params.cache_clear()
    counter = _Counter(monkeypatch)
    counter.wrap(vq_kinds, "abstract_model")
    counter.wrap(config_lib, "load_config")
    load_vq(path)
    assert counter.calls == {"abstract_model": 1, **({"load_config": 1} if fmt == "converted" else {})}, counter.calls


def test_open_checkpoint_of_converted_and_hf_dirs(tmp_path):
    convert_to_orbax(golden_path("mmada_tiny"), tmp_path / "conv", log=lambda *_: None)
    ckpt = open_checkpoint(tmp_path / "conv")
    assert (ckpt.format, ckpt.kind, ckpt.side_dir) == ("converted", "mmada", tmp_path / "conv" / "hf")
    assert ckpt.tokenizer_dir == tmp_path / "conv"                  # hf/ holds no tokenizer files
    shutil.copy(TOKENIZER / "tokenizer.json", tmp_path / "conv" / "hf" / "tokenizer.json")
    assert open_checkpoint(tmp_path / "conv").tokenizer_dir == tmp_path / "conv" / "hf"
    hf = open_checkpoint(golden_path("amused_vq_tiny"))
    assert (hf.format, hf.kind, hf.vq_dir) == ("hf", "amused", golden_path("amused_vq_tiny") / "vqvae")
    assert hf.image_tokenizer and hf.weights_dir == golden_path("amused_vq_tiny") / "vqvae"
    assert open_checkpoint(golden_path("dimoo_tiny")).kind == "dimoo"
    with pytest.raises(CheckpointError, match="expected a checkpoint directory, got a file"):
        open_checkpoint(golden_path("mmada_tiny") / "config.json")


def test_kinds_and_sections_are_explicit_tables():
    from mmada_jax import convert
    assert list(convert.KINDS) == ["mmada", "llada", "dimoo", "magvitv2", "amused", "clip"]
    assert [k for k, v in convert.KINDS.items() if v.image_tokenizer] == ["magvitv2", "amused"]
    assert set(config_lib.config_sections()) == {"model", "vq", "clip"}
    assert checkpoints.dtype_name("bf16") == "bfloat16"

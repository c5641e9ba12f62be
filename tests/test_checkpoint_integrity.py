"""Checkpoints carry a checksum per parameter, checked when read: a flipped byte in a converted,
saved or training checkpoint is a CheckpointError naming the checkpoint and the parameter;
truncated Orbax files are a CheckpointError too; NaN/Inf never load silently; checkpoints written
before checksums existed still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import golden_path
from mmada_jax import CheckpointError, load_model, save_model
from mmada_jax.convert import CHECKSUMS_FILE, convert_to_orbax
from mmada_jax.training import checkpoint as train_ckpt

# reading damaged files leaves Orbax/TensorStore callbacks on a closed event loop (their noise)
pytestmark = [pytest.mark.golden, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]
CORRUPT = r"does not match its checksum|cannot read parameters"


def _params(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in nnx.to_pure_dict(nnx.state(model, nnx.Param)).items()}


def _data_files(ckpt: Path) -> list[Path]:
    return sorted((f for f in ckpt.rglob("d/*") if f.is_file()), key=lambda f: -f.stat().st_size)


def _flip(path: Path, at: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * at)] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(converted checkpoint, the model it holds) of the golden tiny MMaDA."""
    out = tmp_path_factory.mktemp("conv") / "conv"
    convert_to_orbax(golden_path("mmada_tiny"), out, log=lambda *_: None)
    model, _ = load_model(out)
    return out, model


def _training_step(directory: Path, model, step: int = 1) -> Path:
    """One training checkpoint written through RunCheckpoints as the loop writes it."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state = {"params": params, "opt_state": {"count": np.zeros((), np.int32)}, "step": np.asarray(step, np.int32)}
    run = train_ckpt.RunCheckpoints(directory / "checkpoints")
    run.save(step, state, config={"steps": step}, force=True, model_config=model.config.to_dict())
    run.close()
    return directory / "checkpoints" / str(step)


@pytest.mark.parametrize("how", ["converted", "save_model"])
def test_flipped_byte_in_a_converted_checkpoint(how, tiny, tmp_path):
    src, model = tiny
    ckpt = tmp_path / how
    if how == "converted":
        shutil.copytree(src, ckpt)
    else:
        save_model(model, ckpt)
    assert set(json.loads((ckpt / CHECKSUMS_FILE).read_text())["params"]) == set(_params(model))
    _flip(_data_files(ckpt / "params")[0])
    for dtype in (None, "bfloat16"):                     # checked in the stored dtype, then cast
        with pytest.raises(CheckpointError, match=CORRUPT) as e:
            load_model(ckpt, dtype=dtype)
        assert str(ckpt) in str(e.value)
        if "checksum" in str(e.value):
            assert f"checkpoint {ckpt}: parameter " in str(e.value)


def test_flipped_byte_and_truncation_in_a_training_checkpoint(tiny, tmp_path):
    _, model = tiny
    step = _training_step(tmp_path / "run", model)
    assert (step / "checksums").is_dir()
    loaded, _ = load_model(tmp_path / "run")
    for k, v in _params(model).items():
        np.testing.assert_array_equal(_params(loaded)[k], v, err_msg=k)

    shutil.copytree(tmp_path / "run", tmp_path / "flipped")
    flipped = tmp_path / "flipped" / "checkpoints" / "1"
    _flip(_data_files(flipped / "state")[0])
    with pytest.raises(CheckpointError, match=CORRUPT) as e:
        load_model(flipped)
    assert str(flipped) in str(e.value)
    # resuming the run checks it too
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                             "opt_state": {"count": np.zeros((), np.int32)}, "step": np.asarray(1, np.int32)})
    manager = train_ckpt.RunCheckpoints(tmp_path / "flipped" / "checkpoints")
    try:
        with pytest.raises(CheckpointError, match=CORRUPT) as e:
            manager.restore(1, abstract)
        assert str(flipped) in str(e.value)
    finally:
        manager.close()

    shutil.copytree(tmp_path / "run", tmp_path / "truncated")
    data = _data_files(tmp_path / "truncated" / "checkpoints" / "1" / "state")[0]
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read parameters") as e:
        load_model(tmp_path / "truncated")
    assert str(tmp_path / "truncated" / "checkpoints" / "1") in str(e.value) and len(str(e.value)) < 600


@pytest.mark.parametrize("damage", ["remove-data", "remove-metadata", "truncate-manifest"])
def test_damaged_orbax_files_are_a_checkpoint_error(damage, tiny, tmp_path):
    ckpt = tmp_path / "c"
    shutil.copytree(tiny[0], ckpt)
    state = ckpt / "params" / "state"
    if damage == "remove-data":
        for f in _data_files(state):
            f.unlink()
    elif damage == "remove-metadata":
        (state / "_METADATA").unlink()
    else:
        for f in state.rglob("manifest.ocdbt"):
            f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="cannot read parameters") as e:
        load_model(ckpt)
    assert str(ckpt) in str(e.value) and len(str(e.value)) < 600


def test_nan_in_a_saved_checkpoint(tiny, tmp_path):
    nan_model, _ = load_model(tiny[0])
    nan_model.ff_out[...] = nan_model.ff_out[...].at[1, 2, 3].set(np.nan)
    save_model(nan_model, tmp_path / "nan")
    with pytest.raises(CheckpointError, match=r"parameter ff_out holds 1 non-finite") as e:
        load_model(tmp_path / "nan")
    assert str(tmp_path / "nan") in str(e.value)
    loaded, _ = load_model(tmp_path / "nan", allow_nonfinite=True)
    assert np.isnan(np.asarray(loaded.ff_out[...])).sum() == 1
    # a training checkpoint holding NaN: the same
    step = _training_step(tmp_path / "run", nan_model)
    with pytest.raises(CheckpointError, match=r"parameter ff_out holds 1 non-finite") as e:
        load_model(step)
    assert str(step) in str(e.value)


def test_nan_in_a_hf_directory_loaded_in_memory(tmp_path):
    from safetensors.numpy import load_file, save_file
    src = tmp_path / "hf"
    shutil.copytree(golden_path("mmada_tiny"), src)
    shard = src / "model-00001-of-00002.safetensors"
    tensors = load_file(str(shard))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].copy()
    tensors[key].reshape(-1)[:2] = np.inf
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match=rf"{key}: 2 non-finite") as e:
        load_model(src)
    assert "allow_nonfinite=True" in str(e.value)
    load_model(src, allow_nonfinite=True)


def test_checkpoints_without_checksums_still_load(tiny, tmp_path):
    src, model = tiny
    old = tmp_path / "old"
    shutil.copytree(src, old)
    (old / CHECKSUMS_FILE).unlink()
    loaded, _ = load_model(old)
    step = _training_step(tmp_path / "run", model)
    shutil.rmtree(step / "checksums")
    from_run, _ = load_model(step)
    for k, v in _params(model).items():
        np.testing.assert_array_equal(_params(loaded)[k], v, err_msg=k)
        np.testing.assert_array_equal(_params(from_run)[k], v, err_msg=k)

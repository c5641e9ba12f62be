"""convert_torch_weights.py: HF -> Orbax -> HF round trips and clear errors on bad checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import convert_torch_weights
from conftest import golden_path, load_npz
from mmada_jax import CheckpointError, ConfigError, load_model
from mmada_jax.hf_io import TensorSource


def _all_tensors(directory: Path) -> dict[str, np.ndarray]:
    src = TensorSource(directory)
    return {k: src.get(k) for k in src.keys()}


def _copy_tiny(tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(golden_path("mmada_tiny"), dst)
    return dst


def _run(argv, capsys) -> tuple[int, str]:
    code = convert_torch_weights.run_guarded(lambda: convert_torch_weights.main([str(a) for a in argv]))
    return code, capsys.readouterr().err


@pytest.mark.golden
def test_round_trip_is_bit_exact(tmp_path, capsys):
    src = golden_path("mmada_tiny")
    assert _run([src, tmp_path / "ours"], capsys)[0] == 0
    assert _run([tmp_path / "ours", tmp_path / "back", "--to-hf"], capsys)[0] == 0
    original, back = _all_tensors(src), _all_tensors(tmp_path / "back")
    assert sorted(original) == sorted(back)
    for key, value in original.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    want = json.loads((src / "config.json").read_text())
    got = json.loads((tmp_path / "back" / "config.json").read_text())
    assert got == want
    assert (tmp_path / "back" / "generation_config.json").exists()
    # sharded export (tiny shard size) reads back identically
    assert _run([tmp_path / "ours", tmp_path / "sharded", "--to-hf", "--max-shard-size-gb", "1e-4"], capsys)[0] == 0
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = _all_tensors(tmp_path / "sharded")
    for key, value in original.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


@pytest.mark.golden
def test_bfloat16_conversion_and_export(tmp_path, capsys):
    src = golden_path("mmada_tiny")
    assert _run([src, tmp_path / "bf16", "--dtype", "bfloat16"], capsys)[0] == 0
    model, config = load_model(tmp_path / "bf16")
    assert config.param_dtype == "bfloat16" and str(model.wte[...].dtype) == "bfloat16"
    assert _run([tmp_path / "bf16", tmp_path / "back", "--to-hf"], capsys)[0] == 0
    back = _all_tensors(tmp_path / "back")
    for key, value in _all_tensors(src).items():
        assert back[key].dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(back[key], value.astype(ml_dtypes.bfloat16), err_msg=key)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.golden
def test_single_file_and_pytorch_bin(tmp_path):
    torch = pytest.importorskip("torch")
    tensors = _all_tensors(golden_path("mmada_tiny"))
    want = load_npz(golden_path("mmada_tiny") / "outputs.npz")["random__logits"]
    ids = load_npz(golden_path("mmada_tiny") / "inputs.npz")["random__input_ids"]
    for layout in ("single", "bin", "bin_sharded"):
        d = tmp_path / layout
        d.mkdir()
        shutil.copy(golden_path("mmada_tiny") / "config.json", d)
        if layout == "single":
            save_file(tensors, str(d / "model.safetensors"))
        elif layout == "bin":
            torch.save({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, d / "pytorch_model.bin")
        else:
            keys = sorted(tensors)
            parts = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
            weight_map = {}
            for i, part in enumerate(parts):
                name = f"pytorch_model-0000{i + 1}-of-00002.bin"
                torch.save({k: torch.from_numpy(tensors[k].copy()) for k in part}, d / name)
                weight_map.update({k: name for k in part})
            (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
        model, _ = load_model(d)
        np.testing.assert_allclose(model(ids), want, atol=1e-4, rtol=1e-4, err_msg=layout)


def _expect_error(tmp_path, capsys, src, *patterns):
    code, err = _run([src, tmp_path / "out"], capsys)
    assert code == 2, err
    for pattern in patterns:
        assert pattern in err, f"{pattern!r} not in error: {err}"
    with pytest.raises((CheckpointError, ConfigError)):
        load_model(src)
    return err


@pytest.mark.golden
def test_missing_shard(tmp_path, capsys):
    src = _copy_tiny(tmp_path)
    (src / "model-00002-of-00002.safetensors").unlink()
    _expect_error(tmp_path, capsys, src, "model-00002-of-00002.safetensors", "missing")


def _rewrite_single(src: Path, edit) -> None:
    tensors = _all_tensors(src)
    for f in list(src.glob("model*.safetensors*")):
        f.unlink()
    edit(tensors)
    save_file(tensors, str(src / "model.safetensors"))


@pytest.mark.golden
def test_extra_key(tmp_path, capsys):
    src = _copy_tiny(tmp_path)
    _rewrite_single(src, lambda t: t.update({"model.transformer.blocks.0.bias": np.zeros(4, np.float32)}))
    _expect_error(tmp_path, capsys, src, "unexpected key", "model.transformer.blocks.0.bias")


@pytest.mark.golden
def test_missing_key(tmp_path, capsys):
    src = _copy_tiny(tmp_path)
    key = f"model.transformer.blocks.{_hf_config(src)['n_layers'] - 1}.q_proj.weight"   # the last block
    _rewrite_single(src, lambda t: t.pop(key))
    _expect_error(tmp_path, capsys, src, "missing key", key)


@pytest.mark.golden
def test_wrong_shape(tmp_path, capsys):
    src = _copy_tiny(tmp_path)
    key = f"model.transformer.blocks.{_hf_config(src)['n_layers'] - 1}.up_proj.weight"   # the last block

    def edit(t):
        t[key] = t[key][:-1]
    _rewrite_single(src, edit)
    _expect_error(tmp_path, capsys, src, key, "shape")


@pytest.mark.golden
def test_truncated_file(tmp_path, capsys):
    src = _copy_tiny(tmp_path)
    shard = src / "model-00001-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    _expect_error(tmp_path, capsys, src, "model-00001-of-00002.safetensors", "truncated")


def _hf_config(src: Path) -> dict:
    return json.loads((src / "config.json").read_text())


# Each case derives its wrong value from the checkpoint's own config: one layer more than stored
# (the first missing block is named), a d_model that still splits into the stored head count
# (so only the weight shapes can reject it), a different MLP width, an unsupported block type.
_MISMATCHES = {
    "n_layers": lambda c: ({"n_layers": c["n_layers"] + 1}, f"blocks.{c['n_layers']}"),
    "d_model": lambda c: ({"d_model": c["d_model"] + 2 * c["n_heads"]}, "shape"),
    "mlp_hidden_size": lambda c: ({"mlp_hidden_size": c["mlp_hidden_size"] + 1}, "ff_proj"),
    "block_type": lambda c: ({"block_type": "sequential"}, "block_type"),
}


@pytest.mark.golden
@pytest.mark.parametrize("case", sorted(_MISMATCHES))
def test_config_that_does_not_match_the_weights(tmp_path, capsys, case):
    src = _copy_tiny(tmp_path)
    config = _hf_config(src)
    change, pattern = _MISMATCHES[case](config)
    config.update(change)
    (src / "config.json").write_text(json.dumps(config))
    _expect_error(tmp_path, capsys, src, pattern)


def test_missing_directory_and_config(tmp_path, capsys):
    code, err = _run([tmp_path / "nowhere", tmp_path / "out"], capsys)
    assert code == 2 and "nowhere" in err
    (tmp_path / "empty").mkdir()
    code, err = _run([tmp_path / "empty", tmp_path / "out"], capsys)
    assert code == 2 and "config.json" in err


@pytest.mark.golden
def test_destination_not_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, err = _run([golden_path("mmada_tiny"), out], capsys)
    assert code == 2 and "--overwrite" in err and (out / "keep.txt").read_text() == "user data"
    assert _run([golden_path("mmada_tiny"), out, "--overwrite"], capsys)[0] == 0


@pytest.mark.golden
def test_kind_override(tmp_path, capsys):
    assert _run([golden_path("mmada_tiny"), tmp_path / "as_llada", "--kind", "llada"], capsys)[0] == 0
    _, config = load_model(tmp_path / "as_llada")
    assert config.kind == "llada"


@pytest.mark.golden
def test_dimoo_checkpoint_detected(tmp_path, capsys):
    src = golden_path("dimoo_tiny")
    assert _run([src, tmp_path / "a"], capsys)[0] == 0
    model, config = load_model(tmp_path / "a")
    assert config.kind == "dimoo" and config.tokens.image_offset == json.loads(
        (src / "config.json").read_text())["text_vocab_size"]
    outputs = load_npz(src / "outputs.npz")
    ids = load_npz(src / "inputs.npz")["random__input_ids"]
    np.testing.assert_allclose(model(ids), outputs["random__logits"], atol=1e-4, rtol=1e-4)


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.golden
def test_pickle_bin_is_never_unpickled_unsafely(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    d = tmp_path / "evil"
    d.mkdir()
    shutil.copy(golden_path("mmada_tiny") / "config.json", d)
    torch.save({"model.transformer.wte.weight": _Exploit()}, d / "pytorch_model.bin")
    code, err = _run([d, tmp_path / "out"], capsys)
    assert code == 2 and "weights_only" in err and "pytorch_model.bin" in err
    assert "this must never run" not in capsys.readouterr().out

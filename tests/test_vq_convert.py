"""Weight conversion of the image tokenizers: convert_torch_weights.py --kind magvitv2|amused,
auto-detection, the header checks with clear errors, the bit-exact --to-hf round trip, and
loading converted / reference directories with ``load_vq``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import convert_torch_weights
import mmada_jax
from conftest import golden_path, load_npz
from mmada_jax.cli_utils import run_guarded
from mmada_jax.convert import convert_to_orbax, export_to_hf, resolve_kind
from mmada_jax.hf_io import CheckpointError

pytestmark = pytest.mark.golden

# (golden dir, kind, folder holding config + weights, weights file)
CASES = {
    "magvitv2": ("magvitv2_tiny", ".", "model.safetensors"),
    "amused": ("amused_vq_tiny", "vqvae", "diffusion_pytorch_model.safetensors"),
}


def weights_path(root: Path, kind: str) -> Path:
    _, sub, name = CASES[kind]
    return root / sub / name


def copy_case(kind: str, tmp_path: Path) -> Path:
    src = golden_path(CASES[kind][0])
    dst = tmp_path / "src"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.npz"))
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def tensors_equal(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert sorted(x) == sorted(y)
    for k in x:
        assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_detect_and_round_trip(kind, tmp_path, capsys):
    src = golden_path(CASES[kind][0])
    spec, cdir, _ = resolve_kind(src)                     # auto-detection (amused: vqvae/)
    assert spec.name == kind and cdir == weights_path(src, kind).parent
    ours, back = tmp_path / "ours", tmp_path / "back"
    assert convert_torch_weights.main([str(src), str(ours)]) == 0
    assert (ours / "config.yaml").exists()
    assert mmada_jax.load_config(ours).kind == kind
    assert convert_torch_weights.main([str(ours), str(back), "--to-hf"]) == 0
    out_dir = back / spec.subfolder if spec.subfolder else back
    written = list(out_dir.glob("*.safetensors"))
    assert [p.name for p in written] == [f"{spec.weights_prefix}.safetensors"]
    tensors_equal(weights_path(src, kind), written[0])       # every tensor, buffers included
    assert json.loads((out_dir / "config.json").read_text()) == \
        json.loads((weights_path(src, kind).parent / "config.json").read_text())
    # the exported directory converts again (closing the loop)
    assert convert_torch_weights.main([str(back), str(tmp_path / "again")]) == 0


@pytest.mark.parametrize("kind", sorted(CASES))
def test_converted_and_reference_dirs_give_same_codes(kind, tmp_path):
    src = golden_path(CASES[kind][0])
    convert_to_orbax(src, tmp_path / "ours", kind=kind, log=lambda s: None)
    a, b = mmada_jax.load_vq(src), mmada_jax.load_vq(tmp_path / "ours")
    assert type(a) is type(b) and a.config == b.config
    pa = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(a.state)}
    pb = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(b.state)}
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    inputs = load_npz(src / "inputs.npz")
    key = next(k for k in inputs if k.endswith("images_uint8"))
    images = inputs[key]
    np.testing.assert_array_equal(np.asarray(a.encode(images)), np.asarray(b.encode(images)))


def test_explicit_kind_finds_the_vqvae_subfolder(tmp_path):
    src = golden_path("amused_vq_tiny")
    spec, cdir, _ = resolve_kind(src, "amused")
    assert cdir == src / "vqvae"
    tok = mmada_jax.load_vq(src / "vqvae")                 # the subfolder itself also works
    assert tok.kind == "amused"


def _run_cli_error(args, capsys) -> str:
    """Run the converter as its command line does; it must exit 2 with a message."""
    rc = run_guarded(lambda: convert_torch_weights.main(args))
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_missing_key_named(tmp_path, capsys):
    src = copy_case("amused", tmp_path)
    w = weights_path(src, "amused")
    tensors = load_file(str(w))
    victim = sorted(k for k in tensors if k.endswith("conv1.weight"))[0]
    del tensors[victim]
    save_file(tensors, str(w))
    err = _run_cli_error([str(src), str(tmp_path / "dst"), "--kind", "amused"], capsys)
    assert "missing key" in err and victim in err


def test_wrong_shape_named(tmp_path, capsys):
    src = copy_case("magvitv2", tmp_path)
    w = weights_path(src, "magvitv2")
    tensors = load_file(str(w))
    tensors["encoder.conv_in.weight"] = tensors["encoder.conv_in.weight"][:, :, :2]
    save_file(tensors, str(w))
    err = _run_cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert "encoder.conv_in.weight" in err and "shape" in err


def test_unexpected_key_named(tmp_path, capsys):
    src = copy_case("amused", tmp_path)
    w = weights_path(src, "amused")
    tensors = load_file(str(w))
    tensors["encoder.extra.weight"] = np.zeros((2,), np.float32)
    save_file(tensors, str(w))
    err = _run_cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert "unexpected key" in err and "encoder.extra.weight" in err


def test_lfq_buffers_checked_not_trusted(tmp_path, capsys):
    src = copy_case("magvitv2", tmp_path)
    w = weights_path(src, "magvitv2")
    tensors = load_file(str(w))
    tensors["quantize.embedding"] = -tensors["quantize.embedding"]
    save_file(tensors, str(w))
    err = _run_cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert "quantize.embedding" in err and "values differ" in err
    # a checkpoint without the buffers converts (they are recomputed)
    del tensors["quantize.embedding"], tensors["quantize.power_vals"]
    save_file(tensors, str(w))
    assert convert_torch_weights.main([str(src), str(tmp_path / "dst2")]) == 0


def test_config_mismatch_and_bad_config(tmp_path, capsys):
    src = copy_case("amused", tmp_path)
    cfg = src / "vqvae" / "config.json"
    hf = json.loads(cfg.read_text())
    hf["latent_channels"] = hf["latent_channels"] * 2
    cfg.write_text(json.dumps(hf))
    err = _run_cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert "does not fit parameter" in err
    hf["latent_channels"] //= 2
    hf["mid_block_add_attention"] = True
    cfg.write_text(json.dumps(hf))
    err = _run_cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert "mid_block_add_attention" in err
    cfg.write_text("{not json")
    err = _run_cli_error([str(src), str(tmp_path / "dst"), "--kind", "amused"], capsys)
    assert str(cfg) in err and "JSON" in err


def test_truncated_weights_and_missing_dir(tmp_path, capsys):
    src = copy_case("magvitv2", tmp_path)
    w = weights_path(src, "magvitv2")
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    err = _run_cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert "truncated" in err and w.name in err
    err = _run_cli_error([str(tmp_path / "nowhere"), str(tmp_path / "dst")], capsys)
    assert "nowhere" in err
    with pytest.raises(CheckpointError, match="not found"):
        mmada_jax.load_vq(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no image-tokenizer checkpoint"):
        mmada_jax.load_vq(tmp_path / "empty")


def test_save_and_reload_random_tokenizer(tmp_path):
    from mmada_jax.vq import save_vq
    src = golden_path("amused_vq_tiny")
    tok = mmada_jax.load_vq(src)
    save_vq(tok, tmp_path / "saved")
    again = mmada_jax.load_vq(tmp_path / "saved")
    assert again.config == tok.config
    export_to_hf(tmp_path / "saved", tmp_path / "hf", log=lambda s: None)
    tensors_equal(weights_path(src, "amused"), tmp_path / "hf" / "vqvae" / "diffusion_pytorch_model.safetensors")

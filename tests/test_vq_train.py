"""python -m train.vq: a few steps of a micro MAGVIT-v2 on world images (falling loss, bit-exact
resume, an export every loader reads), the LFQ terms against a direct computation, config errors."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmada_jax.config import ConfigError
from mmada_jax.vq.config import MagvitV2Config
from mmada_jax.vq.train import VQTrainConfig, lfq_terms, run_vq_training, world_images

MICRO = MagvitV2Config(enc_ch=8, enc_ch_mult=(1, 1, 2), enc_num_res_blocks=(1, 1, 1), dec_ch=8,
                       dec_ch_mult=(1, 1, 2), dec_num_res_blocks=(1, 1, 1), z_channels=4, resolution=32,
                       norm_groups=4, image_size=32)


def micro(out_dir, **kw):
    base = dict(model=MICRO, batch_size=4, steps=8, lr=3e-3, warmup_steps=1, save_every=4, log_every=1,
                out_dir=str(out_dir), eval_items=4)
    return VQTrainConfig(**{**base, **kw})


def _params(run_dir):
    from mmada_jax.checkpoints import load_vq
    from flax import nnx
    tok = load_vq(run_dir / "vq")
    return {".".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(tok.model, nnx.Param))}


def test_loss_falls_resume_is_bit_exact_and_export_loads(tmp_path):
    logs = []
    rows = run_vq_training(micro(tmp_path / "a"), log=logs.append)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[-1]["recon"] < rows[0]["recon"]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert any("ETA" in line for line in logs)
    out = tmp_path / "a"
    assert (out / "loss.png").stat().st_size > 0
    rec = json.loads((out / "vq" / "reconstruction.json").read_text())
    assert rec["items"] == 4 and set(rec["means"]) == {"Image Quality", "Image Alignment", "Image Consistency",
                                                      "Output Alignment"}

    # the same run in two pieces: 4 steps, then a restart that resumes to 8
    first = micro(tmp_path / "b")

    class Stop(Exception):
        pass

    def interrupt(line):
        if line.startswith("step 5/"):   # step 4 is saved by then
            raise Stop
    with pytest.raises(Stop):
        run_vq_training(first, log=interrupt)
    resumed = []
    run_vq_training(first, log=resumed.append)
    assert any("resumed from step 4" in line for line in resumed)
    a, b = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    # the export is a converted checkpoint: the codes of world images round-trip through load_vq
    from mmada_jax.checkpoints import load_vq
    tok = load_vq(out / "vq")
    images = world_images(0, 99, 2, 32)
    codes = np.asarray(tok.encode(images))
    assert codes.shape == (2, (32 // MICRO.downsample) ** 2) and codes.max() < 2 ** MICRO.z_channels
    assert tok.decode(codes).shape == (2, 32, 32, 3)


def test_export_converts_to_hf(tmp_path):
    pytest.importorskip("safetensors")
    from convert_torch_weights import main as convert
    run_vq_training(micro(tmp_path / "run", steps=2, save_every=2, eval_items=0), log=lambda s: None)
    assert convert([str(tmp_path / "run" / "vq"), str(tmp_path / "hf"), "--to-hf"]) == 0
    from mmada_jax.checkpoints import load_vq
    a = load_vq(tmp_path / "run" / "vq")
    b = load_vq(tmp_path / "hf")
    images = world_images(1, 0, 2, 32)
    np.testing.assert_array_equal(np.asarray(a.encode(images)), np.asarray(b.encode(images)))


def test_group_norm_settings_survive_the_hf_config():
    """The reference hard-codes GroupNorm(32, eps 1e-6); other values travel in extra keys."""
    other = MICRO.replace(norm_groups=8, norm_eps=1e-5)
    hf = other.to_hf_config()
    assert hf["encoder"]["norm_groups"] == hf["decoder"]["norm_groups"] == 8
    assert MagvitV2Config.from_hf_config(hf) == other
    real = MagvitV2Config()                      # the reference's own values: no extra keys
    assert not set(real.to_hf_config()["encoder"]) & {"norm_groups", "norm_eps"}


def test_lfq_terms_match_a_direct_computation():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    t, gamma = 0.5, 1.0
    got = jax.device_get(lfq_terms(jnp.asarray(latent), t, gamma))
    flat = latent.reshape(-1, 4)
    codes = np.array([[1.0 if (c >> (3 - b)) & 1 else -1.0 for b in range(4)] for c in range(16)])
    dist = ((flat[:, None, :] - codes[None]) ** 2).sum(-1)        # softmax(-d/t) == softmax(2 z.c / t)
    logits = -dist / t
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    h = lambda q: -(q * np.log(q)).sum(-1)
    np.testing.assert_allclose(got["entropy"], h(p).mean() - gamma * h(p.mean(0)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["commit"], ((flat - np.sign(flat)) ** 2).mean(), rtol=1e-6)
    np.testing.assert_array_equal(got["quantized"], np.where(latent > 0, 1.0, -1.0))


def test_quantize_warmup_feeds_the_continuous_latent_then_the_signs():
    from mmada_jax.vq.checkpoint import build_model
    from mmada_jax.vq.train import to_pixels, vq_loss
    model = build_model(MICRO)
    pixels = jnp.asarray(to_pixels(world_images(0, 0, 2, MICRO.resolution)))
    latent = model.latent(pixels)
    direct = {name: float(jnp.mean((model.decoder(z) - pixels) ** 2))
              for name, z in (("continuous", latent), ("signs", jnp.where(latent > 0, 1.0, -1.0)))}
    assert abs(direct["continuous"] - direct["signs"]) > 1e-4      # the two inputs are told apart
    config = micro("unused", quantize_warmup_steps=5)
    for step, want in ((0, "continuous"), (4, "continuous"), (5, "signs"), (9, "signs")):
        _, metrics = vq_loss(model, pixels, config, jnp.int32(step))
        np.testing.assert_allclose(float(metrics["recon"]), direct[want], rtol=1e-5)
    _, metrics = vq_loss(model, pixels, micro("unused"), jnp.int32(0))      # off: signs from step 0
    np.testing.assert_allclose(float(metrics["recon"]), direct["signs"], rtol=1e-5)


def test_world_images_depend_only_on_seed_and_step():
    a = world_images(3, 7, 4, 32)
    np.testing.assert_array_equal(a, world_images(3, 7, 4, 32))
    assert not np.array_equal(a, world_images(3, 8, 4, 32))
    assert a.dtype == np.uint8 and a.shape == (4, 32, 32, 3)


@pytest.mark.parametrize("override, words", [
    (["lr=0"], "lr=0"), (["steps=ten"], "steps='ten'"), (["recon_loss=l3"], "recon_loss='l3'"),
    (["vq.z_channels=20"], "z_channels=20"), (["nonsense=1"], "nonsense"), (["vq.image_size=36"], "image_size=36"),
])
def test_config_errors_name_the_key(tmp_path, override, words):
    from mmada_jax.training.config import REPO_ROOT
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        VQTrainConfig.from_yaml(REPO_ROOT / "configs" / "demo_vq.yaml", override)


def test_train_vq_cli_reports_bad_config(tmp_path, capsys):
    from train.vq import main
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err

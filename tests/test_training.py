"""The SFT train step: sharded equals unsharded, the non-finite guard, the schedule."""

from __future__ import annotations


import jax
import numpy as np
import pytest

from conftest import golden_path
from mmada_jax import load_model, make_mesh
from mmada_jax.sharding import parse_mesh
from mmada_jax.training import TrainConfig
from mmada_jax.training.objectives import DataLayout, make_objective
from mmada_jax.training.step import batch_shardings, jit_train_step, lr_schedule, make_train_step, setup_state

# N codes on a 4 x 4 grid: a free choice of the data layout (any grid fits the transformer)
N, L = 16, 8


def _config(**kw):
    base = dict(checkpoint=str(golden_path("mmada_tiny")), synthetic=4, text_len=L, batch_size=8, steps=20,
                lr=1e-3, warmup_steps=2)
    base.update(kw)
    return TrainConfig(**base)


def _batch(config, tokens, seed=0):
    """A random batch in the checkpoint's id layout: codes below its codebook size, text framed by its
    bos/eos with plain ids below every special id and the mask."""
    rng = np.random.default_rng(seed)
    b, k = config.batch_size, tokens.codebook_size
    hi = min(min(tokens.special.values()), tokens.mask_id)
    text = lambda: np.concatenate([np.full((b, 1), tokens.bos_id), rng.integers(0, hi, (b, L - 2)),  # noqa: E731
                                   np.full((b, 1), tokens.eos_id)], 1)
    batch = {"input_image_codes": rng.integers(0, k, (b, N)), "output_image_codes": rng.integers(0, k, (b, N)),
             "input_text": text(), "output_text": text(), "input_text_len": rng.integers(2, L + 1, b),
             "output_text_len": rng.integers(2, L + 1, b)}
    return {key: v.astype(np.int32).reshape((config.grad_accum, -1) + v.shape[1:]) for key, v in batch.items()}


def _run(config, mesh_spec, steps=2, corrupt=False):
    spec = parse_mesh(mesh_spec)
    mesh = make_mesh(spec, devices=jax.devices()[:int(np.prod(list(spec.values())))])
    model, model_config = load_model(config.checkpoint, mesh=mesh, attention_mask_mode="additive")
    graphdef, state, shardings = setup_state(model, config, mesh)
    if corrupt:
        state["params"]["ff_out"] = state["params"]["ff_out"] * np.inf
    step = make_train_step(graphdef, config, make_objective(config, model_config, DataLayout(N, (4, 4))))
    batch = _batch(config, model_config.tokens)
    b_shardings = batch_shardings(batch, mesh)
    with jax.set_mesh(mesh):
        fn = jit_train_step(step, shardings, b_shardings)
        metrics = []
        for _ in range(steps):
            state, m = fn(state, jax.device_put(batch, b_shardings))
            metrics.append(jax.device_get(m))
    return jax.device_get(state), metrics


@pytest.mark.golden
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_sharded_step_equals_unsharded():
    config = _config()
    ref_state, ref_metrics = _run(config, "fsdp=1")     # one device
    for spec in ("fsdp=8", "data=2,fsdp=2,tensor=2", "fsdp=2,tensor=4"):
        state, metrics = _run(config, spec)
        for a, b in zip(metrics, ref_metrics):
            np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
        for key in ref_state["params"]:
            np.testing.assert_allclose(state["params"][key], ref_state["params"][key], atol=1e-6, rtol=1e-5, err_msg=key)


@pytest.mark.golden
def test_non_finite_update_is_skipped():
    config = _config()
    state, metrics = _run(config, "fsdp=8", steps=1, corrupt=True)
    assert metrics[0]["skipped"] == 1 and not np.isfinite(metrics[0]["loss"])
    assert int(state["step"]) == 1
    clean, _ = _run(config, "fsdp=8", steps=0)
    for key in clean["params"]:
        if key != "ff_out":
            np.testing.assert_array_equal(state["params"][key], clean["params"][key], err_msg=key)
    for a, b in zip(jax.tree.leaves(state["opt_state"]), jax.tree.leaves(clean["opt_state"])):
        np.testing.assert_array_equal(a, b)


def test_lr_schedule_warmup_then_cosine():
    config = _config(lr=1.0, warmup_steps=10, steps=110, min_lr_scale=0.1)
    s = lr_schedule(config)
    np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110), s(500)], [0, 0.5, 1.0, 0.55, 0.1, 0.1], atol=1e-6)


def test_config_errors(tmp_path):
    from mmada_jax import ConfigError
    (tmp_path / "c.yaml").write_text("train:\n  lr: 1.0\n  synthetic: 4\n  stepps: 3\n")
    with pytest.raises(ConfigError, match="stepps.*did you mean 'steps'"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("train:\n  synthetic: 4\n")
    with pytest.raises(ConfigError, match="batchsize"):
        TrainConfig.from_yaml(tmp_path / "c.yaml", ["batchsize=3"])
    with pytest.raises(ConfigError, match="multiple of grad_accum"):
        TrainConfig.from_yaml(tmp_path / "c.yaml", ["batch_size=3", "grad_accum=2"])
    assert TrainConfig.from_yaml(tmp_path / "c.yaml", ["lr=0.5", "mesh=fsdp=2"]).mesh == "fsdp=2"

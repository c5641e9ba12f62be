"""Parity of the transformer with the PyTorch reference (golden logits) and its options."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import golden_path, load_npz
from mmada_jax import ModelConfig, init_model, load_model
from mmada_jax.convert import KINDS

ATOL = RTOL = 1e-4


def _close(got, want, atol=ATOL, rtol=RTOL):
    got = np.asarray(got, np.float32)
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
    return float(np.abs(got - want).max())


@pytest.fixture(scope="module")
def tiny_converted(tmp_path_factory):
    """mmada_tiny converted through the convert_torch_weights.py command line."""
    import convert_torch_weights
    dst = tmp_path_factory.mktemp("tiny") / "ckpt"
    assert convert_torch_weights.main([str(golden_path("mmada_tiny")), str(dst)]) == 0
    return dst


def _tiny_cases():
    inputs = load_npz(golden_path("mmada_tiny") / "inputs.npz")
    return sorted(k.split("__")[0] for k in inputs if k.endswith("__input_ids"))


@pytest.mark.golden
@pytest.mark.parametrize("impl", ["plain", "xla"])
def test_mmada_tiny_logits(tiny_converted, impl):
    inputs = load_npz(golden_path("mmada_tiny") / "inputs.npz")
    outputs = load_npz(golden_path("mmada_tiny") / "outputs.npz")
    model, _ = load_model(tiny_converted, attention_impl=impl)
    cases = _tiny_cases()
    assert cases, "no golden cases found"
    for case in cases:
        _close(model(inputs[f"{case}__input_ids"]), outputs[f"{case}__logits"])
        if f"{case}__attention_mask" in inputs:  # the Parallel-M additive 0/1 key bias
            got = model(inputs[f"{case}__input_ids"], inputs[f"{case}__attention_mask"], mask_mode="additive")
            _close(got, outputs[f"{case}_with_attention_mask__logits"])


@pytest.mark.golden
def test_mmada_tiny_hidden_states(tiny_converted):
    inputs = load_npz(golden_path("mmada_tiny") / "inputs.npz")
    outputs = load_npz(golden_path("mmada_tiny") / "outputs.npz")
    model, config = load_model(tiny_converted)
    out = model(inputs["random__input_ids"], return_hidden_states=True)
    want = outputs["random__hidden_states"]
    assert out.hidden_states.shape == want.shape == (config.n_layers + 1,) + want.shape[1:]
    _close(out.hidden_states, want)
    _close(out.logits, outputs["random__logits"])


@pytest.mark.golden
def test_mmada_tiny_fullvocab():
    root = golden_path("mmada_tiny_fullvocab")
    inputs, outputs = load_npz(root / "inputs.npz"), load_npz(root / "outputs.npz")
    model, config = load_model(root)
    assert config.vocab_size == outputs["all_mask__logits"].shape[-1]
    probe = inputs["probe_ids"]
    cases = sorted(k[: -len("__argmax")] for k in outputs if k.endswith("__argmax"))
    assert len(cases) >= 4
    for case in cases:
        base = case.replace("_with_attention_mask", "")
        ids = inputs[f"{base}__input_ids"]
        mask = inputs.get(f"{base}__attention_mask") if case != base else None
        logits = np.asarray(model(ids, mask, mask_mode="additive") if mask is not None else model(ids))
        np.testing.assert_array_equal(logits.argmax(-1), outputs[f"{case}__argmax"])
        _close(jax.nn.logsumexp(logits, axis=-1), outputs[f"{case}__logsumexp"])
        top = np.sort(logits, axis=-1)[..., ::-1][..., :8]
        _close(top, outputs[f"{case}__top8_values"])
        _close(logits[..., probe], outputs[f"{case}__probe_logits"])
        if f"{case}__logits" in outputs:
            _close(logits, outputs[f"{case}__logits"])


@pytest.mark.golden
def test_head_on_positions_and_vocab_slice():
    """The head on a subset of positions / vocabulary columns equals slicing full logits."""
    model, config = load_model(golden_path("mmada_tiny"))
    ids = load_npz(golden_path("mmada_tiny") / "inputs.npz")["interleave_like__input_ids"]
    full = np.asarray(model(ids))
    t = config.tokens
    cols = (t.image_offset, t.image_offset + t.codebook_size)
    pos = np.arange(min(5, ids.shape[1] - 1), min(12, ids.shape[1]))   # a window that fits the recorded length
    np.testing.assert_allclose(model(ids, positions=pos, vocab_range=cols), full[:, pos, cols[0]:cols[1]],
                               atol=1e-6, rtol=1e-6)
    per_row = np.stack([pos[::-1]] * ids.shape[0])
    np.testing.assert_allclose(model(ids, positions=per_row), full[:, pos[::-1]], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="vocab_range"):
        model(ids, vocab_range=(0, config.vocab_size + 1))


@pytest.mark.golden
def test_bf16_close_to_fp32():
    root = golden_path("mmada_tiny")
    ids = load_npz(root / "inputs.npz")["interleave_like__input_ids"]
    want = load_npz(root / "outputs.npz")["interleave_like__logits"]
    for kw in ({"dtype": "bfloat16"}, {"dtype": jnp.bfloat16}):
        model, config = load_model(root, **kw)
        assert config.param_dtype == config.dtype == "bfloat16"
        assert model.q_proj[...].dtype == jnp.bfloat16
        logits = model(ids)
        assert logits.dtype == jnp.bfloat16
        got = np.asarray(logits, np.float32)
        err = np.abs(got - want).max()
        assert err < 0.1 * np.abs(want).max(), err
        agree = (got.argmax(-1) == want.argmax(-1)).mean()
        assert agree > 0.9, agree
    # fp32 master weights, bf16 compute
    model, config = load_model(root, param_dtype="float32", dtype="bfloat16")
    assert model.q_proj[...].dtype == jnp.float32 and model(ids).dtype == jnp.bfloat16


def _tiny_config(**kw):
    base = ModelConfig.from_yaml("configs/mmada_tiny.yaml")
    return dataclasses.replace(base, **kw)


def test_grouped_query_attention_matches_repeated_heads():
    """n_kv_heads < n_heads equals full MHA with each kv head repeated for its query group."""
    gqa_cfg = _tiny_config(n_kv_heads=2, attention_impl="plain")
    gqa = init_model(gqa_cfg, seed=3)
    mha = init_model(_tiny_config(attention_impl="plain"), seed=3)
    state = nnx.state(gqa, nnx.Param)
    mha_state = nnx.state(mha, nnx.Param)
    groups = gqa_cfg.n_heads // gqa_cfg.n_kv_heads
    for name in nnx.to_pure_dict(state):
        value = state[name][...]
        if name in ("k_proj", "v_proj"):
            l, d, _ = value.shape
            value = jnp.repeat(value.reshape(l, d, gqa_cfg.n_kv_heads, gqa_cfg.head_dim), groups, axis=2)
            value = value.reshape(l, d, -1)
        mha_state[name].set_value(value)
    nnx.update(mha, mha_state)
    ids = np.random.default_rng(0).integers(0, gqa_cfg.vocab_size, (2, 9))
    np.testing.assert_allclose(gqa(ids), mha(ids), atol=1e-5, rtol=1e-5)
    xla = nnx.merge(*nnx.split(gqa))
    object.__setattr__(xla, "config", dataclasses.replace(gqa_cfg, attention_impl="xla"))
    np.testing.assert_allclose(xla(ids), gqa(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["plain", "xla"])
def test_hard_mask_ignores_padding(impl):
    """With a hard key mask, the logits of real tokens do not depend on what the pads hold."""
    config = _tiny_config(attention_impl=impl)
    model = init_model(config, seed=1)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, config.vocab_size, (2, 10))
    mask = np.ones_like(ids)
    mask[0, 7:] = 0
    mask[1, :3] = 0
    other = ids.copy()
    other[mask == 0] = rng.integers(0, config.vocab_size, (mask == 0).sum())
    a, b = np.asarray(model(ids, mask)), np.asarray(model(other, mask))
    np.testing.assert_allclose(a[mask == 1], b[mask == 1], atol=1e-5, rtol=1e-5)
    assert not np.allclose(np.asarray(model(ids))[mask == 1], a[mask == 1], atol=1e-4)


@pytest.mark.parametrize("policy", ["full", "save_dots", "save_qkv_proj", "save_out_proj"])
def test_remat_policy_same_loss_and_grads(policy):
    ids = np.random.default_rng(2).integers(0, 576, (2, 8))

    def loss_and_grads(config):
        model = init_model(config, seed=4)

        def loss(m):
            return jnp.mean(jax.nn.logsumexp(m(ids), axis=-1))
        return nnx.value_and_grad(loss)(model)

    l0, g0 = loss_and_grads(_tiny_config())
    l1, g1 = loss_and_grads(_tiny_config(remat_policy=policy))
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(g0)), jax.tree.leaves(nnx.to_pure_dict(g1))):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_forward_is_jittable_and_batch_independent():
    config = _tiny_config()
    model = init_model(config, seed=5)
    ids = np.random.default_rng(3).integers(0, config.vocab_size, (3, 11))

    @nnx.jit
    def forward(m, x):
        return m(x)
    batched = np.asarray(forward(model, ids))
    for i in range(3):
        np.testing.assert_allclose(batched[i], np.asarray(model(ids[i:i + 1]))[0], atol=2e-5, rtol=1e-5)


def test_transformer_kinds_registered():
    assert {"mmada", "llada", "dimoo"} <= set(KINDS)


def test_left_padding_with_position_ids_equals_unpadded_row():
    """Hard-masked left padding plus shifted RoPE positions reproduce the row computed alone."""
    config = _tiny_config(attention_impl="xla")
    model = init_model(config, seed=6)
    rng = np.random.default_rng(4)
    short = rng.integers(0, config.vocab_size, (1, 7))
    pad = 4
    padded = np.concatenate([np.full((1, pad), config.tokens.pad_id), short], axis=1)
    mask = np.concatenate([np.zeros((1, pad), np.int32), np.ones((1, 7), np.int32)], axis=1)
    position_ids = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    alone = np.asarray(model(short))
    got = np.asarray(model(padded, mask, position_ids=position_ids))[:, pad:]
    np.testing.assert_allclose(got, alone, atol=1e-5, rtol=1e-5)

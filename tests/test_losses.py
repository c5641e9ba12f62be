"""Training objectives equal the reference's (golden ``losses``): inputs, loss parts, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from conftest import golden_path, load_npz
from mmada_jax import load_model
from mmada_jax.convert import llada_param_maps
from mmada_jax.mmada.losses import mmada_pretrain_losses
from mmada_jax.mmada.prompts import padded_text, with_bos
from mmada_jax.parallel_a import sft as sft_a
from mmada_jax.parallel_m.sft import mask_ratio as parallel_mask_ratio
from mmada_jax.parallel_m.sft import sft_forward as parallel_sft_forward
from mmada_jax.parallel_m.sft import sft_inputs as parallel_sft_inputs
from mmada_jax.sequences import IGNORE

pytestmark = pytest.mark.golden
RTOL = 1e-5


def _sft_case():
    g = load_npz(golden_path("losses/m_sft.npz"))
    model, config = load_model(golden_path("mmada_tiny"))
    b, length, n, k, offset, mask = (int(v) for v in g["m__params"])
    t = config.tokens
    assert (t.image_offset, t.mask_id, t.codebook_size) == (offset, mask, k)

    def text(i, kind):
        ids = g[f"m__{kind}_text_ids_{i}"].tolist()
        return padded_text(t, ids, length), min(len(with_bos(t, ids)) + 1, length)
    ins, outs = [text(i, "input") for i in range(b)], [text(i, "output") for i in range(b)]
    batch = {"input_image_codes": g["m__input_image_codes"], "output_image_codes": g["m__output_image_codes"],
             "input_text": np.array([x for x, _ in ins]), "input_text_len": np.array([y for _, y in ins]),
             "output_text": np.array([x for x, _ in outs]), "output_text_len": np.array([y for _, y in outs])}
    rand = {key[len("m__"):]: g[key] for key in g if key.startswith("m__rand_")}
    inputs = parallel_sft_inputs(t, batch, rand, eps=float(g["m__eps"]), cond_dropout_prob=float(g["m__cond_dropout_prob"]))
    return g, model, inputs, n, length


def test_parallel_sft_inputs_and_loss():
    g, model, inputs, n, length = _sft_case()
    for name in ("input_ids", "labels", "attention_mask", "image_masked", "text_masked"):
        np.testing.assert_array_equal(np.asarray(getattr(inputs, name)), g[f"m__{name}"], err_msg=name)
    np.testing.assert_allclose(inputs.t, g["m__t"], rtol=1e-7)
    np.testing.assert_allclose(inputs.mask_prob, g["m__mask_prob"], rtol=1e-6)
    coeffs = g["m__coeffs"]
    parts = parallel_sft_forward(model, inputs, num_image_tokens=n, text_len=length,
                                 text_coeff=float(coeffs[0]), image_coeff=float(coeffs[1]))
    for name in ("loss", "text_loss", "image_loss"):
        np.testing.assert_allclose(float(parts[name]), g[f"m__{name}"], rtol=RTOL, err_msg=name)


def test_parallel_sft_without_padding_bias_sees_the_sequence_as_sampling_does():
    """``padding_bias=False`` (not the reference) is the loss of the model run with no attention
    mask, as the sampler runs it; with padding in the batch it differs from the reference's."""
    from mmada_jax.parallel_m.sft import sft_loss
    _, model, inputs, n, length = _sft_case()
    assert not np.asarray(inputs.attention_mask).all()        # the case has EOS padding to leak
    ours = parallel_sft_forward(model, inputs, num_image_tokens=n, text_len=length, padding_bias=False)
    out = inputs.input_ids.shape[1] - (n + 2 + length)
    logits = model(inputs.input_ids)[:, out:]
    want = sft_loss(logits, inputs.labels[:, out:], inputs.t, num_image_tokens=n)
    for name in ("loss", "text_loss", "image_loss"):
        np.testing.assert_allclose(float(ours[name]), float(want[name]), rtol=RTOL, err_msg=name)
    reference = parallel_sft_forward(model, inputs, num_image_tokens=n, text_len=length)
    assert abs(float(reference["loss"]) - float(ours["loss"])) > 1e-4


def test_changed_image_weight_weighs_the_codes_an_edit_changes():
    """``changed_image_weight`` (not the reference): the image CE of output codes that differ from
    the input's code at the same position times w, every other slot once, over B x (N + 2); the
    text loss untouched; w = 1 is the reference's loss."""
    g, model, inputs, n, length = _sft_case()
    np.testing.assert_array_equal(np.asarray(inputs.image_changed),
                                  np.asarray(g["m__output_image_codes"]) != np.asarray(g["m__input_image_codes"]))
    masked = np.asarray(inputs.image_masked)   # a pattern with both kinds among the masked codes
    changed = masked & (np.cumsum(masked, axis=1) % 2 == 1)
    inputs = inputs._replace(image_changed=jnp.asarray(changed))
    out = inputs.input_ids.shape[1] - (n + 2 + length)
    logits = np.asarray(model(inputs.input_ids, inputs.attention_mask, mask_mode="additive")[:, out:], np.float64)
    labels = np.asarray(inputs.labels[:, out:])
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, np.maximum(labels, 0)[..., None], -1)[..., 0]
    ce = np.where(labels != IGNORE, logz - picked, 0.0)[:, :n + 2]
    weight = np.ones_like(ce)
    weight[:, 1:n + 1] = np.where(changed, 2.5, 1.0)
    assert (ce[:, 1:n + 1] * changed).sum() > 0 and (ce[:, 1:n + 1] * (masked & ~changed)).sum() > 0
    ours = parallel_sft_forward(model, inputs, num_image_tokens=n, text_len=length, changed_image_weight=2.5)
    plain = parallel_sft_forward(model, inputs, num_image_tokens=n, text_len=length, changed_image_weight=1.0)
    np.testing.assert_allclose(float(ours["image_loss"]), (ce * weight).mean(), rtol=RTOL)
    np.testing.assert_allclose(float(plain["image_loss"]), ce.mean(), rtol=RTOL)
    np.testing.assert_allclose(float(ours["text_loss"]), float(plain["text_loss"]), rtol=RTOL)


def test_parallel_sft_gradients():
    g, model, inputs, n, length = _sft_case()
    grads = nnx.grad(lambda m: parallel_sft_forward(m, inputs, num_image_tokens=n, text_len=length)["loss"])(model)
    grads = nnx.to_pure_dict(grads)
    norm = np.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(grads)))
    np.testing.assert_allclose(norm, g["m__grad_norm"], rtol=RTOL)
    want = load_file(str(golden_path("losses/m_sft_grads.safetensors")))
    seen = set()
    for m in llada_param_maps(model.config):
        ours = np.asarray(grads[m.path[0]])
        for i, key in enumerate(m.sources):
            got = m.to_hf(ours[i] if m.stacked else ours)
            np.testing.assert_allclose(got, want[key], atol=1e-5, rtol=1e-4, err_msg=key)
            seen.add(key)
    assert seen == set(want), set(want) ^ seen


def test_mmada_pretrain_losses():
    g = load_npz(golden_path("losses/m_forward_process.npz"))
    model, config = load_model(golden_path("mmada_tiny"))

    def losses(m):
        return mmada_pretrain_losses(
            m(g["fp__input_ids"]), g["fp__input_ids"], g["fp__labels"], batch_sizes=g["fp__batch_sizes"],
            max_seq_length=int(g["fp__max_seq_length"]), mask_id=config.tokens.mask_id,
            p_mask_lm=g["fp__p_mask_lm"], p_mask_mmu=g["fp__p_mask_mmu"], answer_lengths=g["fp__answer_lengths"])
    out = losses(model)
    for name in ("loss_t2i", "loss_lm", "loss_mmu"):
        np.testing.assert_allclose(float(out[name]), g[f"fp__{name}"], rtol=RTOL, err_msg=name)
    grads = nnx.grad(lambda m: sum(losses(m).values()))(model)
    norm = np.sqrt(sum(float(jnp.sum(x ** 2)) for x in jax.tree.leaves(nnx.to_pure_dict(grads))))
    np.testing.assert_allclose(norm, g["fp__grad_norm_of_sum"], rtol=RTOL)


def test_mask_ratio_is_the_double_cosine():
    t = np.array([0.25, 0.5, 0.75, 0.9], np.float32)
    np.testing.assert_allclose(parallel_mask_ratio(t, 0.0), [0.119, 0.444, 0.825, 0.970], atol=1e-3)


def test_dimoo_sft_loss():
    """MMaDA-Parallel-A: pooled token-mean CE, the logged image/text parts and their position sets."""
    g = load_npz(golden_path("losses/a_sft.npz"))
    model, config = load_model(golden_path("dimoo_tiny"))
    assert config.kind == "dimoo"

    def losses(m):
        return sft_a.sft_loss(m(g["a__input_ids"]), g["a__input_ids"], g["a__labels"], config.tokens)
    out = losses(model)
    np.testing.assert_array_equal(np.asarray(out["image_positions"]), g["a__image_loss_positions"])
    np.testing.assert_array_equal(np.asarray(out["text_positions"]), g["a__text_loss_positions"])
    for name in ("loss", "text_loss", "image_loss"):
        np.testing.assert_allclose(float(out[name]), g[f"a__{name}"], rtol=RTOL, err_msg=name)
    grads = nnx.grad(lambda m: losses(m)["loss"])(model)
    norm = np.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(nnx.to_pure_dict(grads))))
    np.testing.assert_allclose(norm, g["a__grad_norm"], rtol=RTOL)
    want = load_file(str(golden_path("losses/a_sft_grads.safetensors")))
    grads = nnx.to_pure_dict(grads)
    for m in llada_param_maps(config):
        ours = np.asarray(grads[m.path[0]])
        for i, key in enumerate(m.sources):
            np.testing.assert_allclose(m.to_hf(ours[i] if m.stacked else ours), want[key], atol=1e-5, rtol=1e-4,
                                       err_msg=key)


def _a_item_batch(g, i, tokens, text_len):
    """Item ``i`` of the golden -A batch as the grain pipeline gives it, and draws that make the
    builder pick the reference's recorded positions."""
    item = lambda key: g[f"a__item{i}__{key}"]
    pad = lambda ids: np.r_[tokens.bos_id, ids, tokens.eos_id, np.full(text_len - len(ids) - 2, tokens.eos_id)]
    batch = {"input_text": pad(item("instruction_ids"))[None], "input_text_len": np.array([len(item("instruction_ids")) + 2]),
             "output_text": pad(item("answer_ids"))[None], "output_text_len": np.array([len(item("answer_ids")) + 2]),
             "input_image_codes": item("input_image_codes")[None], "output_image_codes": item("output_image_codes")[None],
             "has_input_image": np.array([True])}

    def order(positions, width):   # the recorded positions first, in their order
        u = np.ones(width, np.float32)
        u[positions] = (np.arange(len(positions)) + 1) / (len(positions) + 1) * 0.5
        return u[None]
    rand = {"rand_dropout": g["a__cond_dropout_rand"][i:i + 1].astype(np.float32),
            "rand_image_r": np.array([item("image_r")], np.float32),
            "rand_image_order": order(item("image_sampled_positions"), item("output_image_codes").size),
            "rand_text_r": np.array([item("text_r")], np.float32),
            "rand_text_order": order(item("text_sampled_positions"), text_len)}
    return batch, rand


def test_dimoo_sft_inputs_match_the_reference_items():
    """Every golden -A item (plain, condition-dropped, non-square grids) is built id for id."""
    from mmada_jax.config import load_config
    g = load_npz(golden_path("losses/a_sft.npz"))
    tokens = load_config(golden_path("dimoo_tiny")).tokens
    # a text budget that holds every item's BOS + ids + EOS
    text_len = 2 + max(len(g[k]) for k in g if k.endswith(("__answer_ids", "__instruction_ids")))
    for i, length in enumerate(g["a__lengths"]):
        batch, rand = _a_item_batch(g, i, tokens, text_len)
        (_, in_w), (_, out_w) = g[f"a__item{i}__input_grid_hw"], g[f"a__item{i}__output_grid_hw"]
        x = sft_a.sft_inputs(tokens, batch, rand, system_ids=g[f"a__item{i}__system_ids"], input_grid_w=int(in_w),
                             output_grid_w=int(out_w))
        ids, labels = np.asarray(x.input_ids[0]), np.asarray(x.labels[0])
        np.testing.assert_array_equal(ids[:length], g["a__input_ids"][i, :length], err_msg=f"item {i}")
        np.testing.assert_array_equal(labels[:length], g["a__labels"][i, :length], err_msg=f"item {i}")
        assert np.all(ids[length:] == 0) and np.all(labels[length:] == IGNORE)
        assert int(x.valid[0].sum()) == length and ids[int(x.answer_start[0])] == tokens["boa"]
        assert int(x.answer_start[0]) + x.answer_len <= ids.shape[0]


def test_dimoo_sft_forward_on_the_answer_window():
    """The loss with the head on each row's answer window only equals the reference's (full logits)."""
    g = load_npz(golden_path("losses/a_sft.npz"))
    model, config = load_model(golden_path("dimoo_tiny"))
    ids, labels = g["a__input_ids"], g["a__labels"]
    start = np.argmax(ids == config.tokens["boa"], axis=1).astype(np.int32)
    inputs = sft_a.SFTInputs(ids, labels, ids != 0, start, ids.shape[1] - int(start.max()))
    assert all(np.all(labels[i, start[i] + inputs.answer_len:] == -100) for i in range(len(ids)))
    parts = sft_a.sft_forward(model, inputs, config.tokens)
    for name in ("loss", "text_loss", "image_loss"):
        np.testing.assert_allclose(float(parts[name]), g[f"a__{name}"], rtol=RTOL, err_msg=name)
    grads = nnx.grad(lambda m: sft_a.sft_forward(m, inputs, config.tokens)["loss"])(model)
    norm = np.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(nnx.to_pure_dict(grads))))
    np.testing.assert_allclose(norm, g["a__grad_norm"], rtol=RTOL)

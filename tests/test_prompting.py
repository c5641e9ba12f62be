"""Sequence layouts equal the reference's, id for id (golden ``prompting``, real id layout)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import golden_path, load_npz
from mmada_jax import TokenIds
from mmada_jax.mmada import prompts as P
from mmada_jax.parallel_m.layout import Layout, output_init
from mmada_jax.parallel_m.prompts import inference_prompt

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def data():
    return load_npz(golden_path("prompting") / "prompting.npz")


@pytest.fixture(scope="module")
def meta():
    return json.loads((golden_path("prompting") / "prompting_meta.json").read_text())


@pytest.fixture(scope="module")
def tokens(meta):
    layout = meta["layout"]
    t = TokenIds.mmada(0)
    assert (t.bos_id, t.eos_id, t.mask_id, t.image_offset) == (layout["bos"], layout["eos"], layout["mask"], layout["text_vocab"])
    names = {"<|soi|>": "soi", "<|eoi|>": "eoi", "<|t2i|>": "t2i", "<|mmu|>": "mmu", "[iPAD]": "ipad",
             "<|interleave|>": "interleave", "<|r2i|>": "r2i", "<|t2it|>": "t2it"}
    for token, name in names.items():
        assert t[name] == layout["reserved"][token], token
    assert t["end_header"] == layout["end_header"]
    return t


def _texts(data, task):
    return [data[f"{task}__text_ids_{i}"].tolist() for i in range(100) if f"{task}__text_ids_{i}" in data]


def test_t2i_training(data, meta, tokens):
    drop = data["t2i__cond_dropout_rand"] < meta["params"]["cond_dropout_prob"]
    ids, mask, labels = P.t2i_prompt(tokens, _texts(data, "t2i"), data["t2i__image_ids"],
                                     meta["params"]["max_text_len"], labels=data["t2i__labels_in"], drop_condition=drop)
    np.testing.assert_array_equal(ids, data["t2i__input_ids"])
    np.testing.assert_array_equal(mask, data["t2i__attention_mask"])
    np.testing.assert_array_equal(labels, data["t2i__label_ids"])


def test_t2i_generation(data, meta, tokens):
    n = data["t2i_gen__image_ids"].shape[1]
    ids, mask, uids, umask = P.t2i_gen_prompt(tokens, _texts(data, "t2i_gen"), n, meta["params"]["max_text_len"])
    for got, key in ((ids, "input_ids"), (mask, "attention_mask"), (uids, "uncond_input_ids"),
                     (umask, "uncond_attention_mask")):
        np.testing.assert_array_equal(got, data[f"t2i_gen__{key}"], err_msg=key)


def test_mmu(data, meta, tokens):
    ids, prompt, labels = P.mmu_prompt(tokens, data["mmu__image_ids"], _texts(data, "mmu"), meta["params"]["max_text_len"])
    np.testing.assert_array_equal(ids, data["mmu__input_ids"])
    np.testing.assert_array_equal(prompt, data["mmu__prompt_mask"])
    np.testing.assert_array_equal(labels, data["mmu__label_ids"])
    for i, text in enumerate(_texts(data, "mmu")[:2]):
        ids, prompt = P.mmu_gen_prompt(tokens, data["mmu__image_ids"][i], text, meta["params"]["max_text_len"])
        np.testing.assert_array_equal(ids, data[f"mmu_gen__input_ids_{i}"])
        np.testing.assert_array_equal(prompt, data[f"mmu_gen__prompt_mask_{i}"])


def test_lm(data, tokens):
    ids, mask, labels = P.lm_prompt(tokens, _texts(data, "lm"), int(data["lm__max_seq_len"]))
    np.testing.assert_array_equal(ids, data["lm__input_ids"])
    np.testing.assert_array_equal(mask, data["lm__attention_mask"])
    np.testing.assert_array_equal(labels, data["lm__label_ids"])
    ids, prompt, labels = P.lm_chat_prompt(tokens, _texts(data, "mmu"), int(data["lm_chat__max_seq_len"]))
    np.testing.assert_array_equal(ids, data["lm_chat__input_ids"])
    np.testing.assert_array_equal(prompt, data["lm_chat__prompt_mask"])
    np.testing.assert_array_equal(labels, data["lm_chat__label_ids"])


def test_interleave_inference(data, tokens):
    cond, uncond = inference_prompt(tokens, data["interleave_infer__image_codes"],
                                                 data["interleave_infer__text_ids"].tolist())
    np.testing.assert_array_equal(cond, data["interleave_infer__input_ids"])
    np.testing.assert_array_equal(uncond, data["interleave_infer__uncond_input_ids"])


def test_interleave_inference_padded_as_sft(data, tokens):
    """pad_to=L lays the instruction out as parallel SFT does (Layout.for_training): the
    unpadded prompt, then EOS up to L text slots; the unconditional row keeps the same length."""
    codes, text = data["interleave_infer__image_codes"], data["interleave_infer__text_ids"].tolist()
    plain, _ = inference_prompt(tokens, codes, text)
    pad = len(text) + 2 + 5
    cond, uncond = inference_prompt(tokens, codes, text, pad_to=pad)
    n = np.asarray(codes).size
    assert len(cond) == len(uncond) == Layout.for_training(n, n, pad).input_len
    np.testing.assert_array_equal(cond[:len(plain)], plain)
    assert (np.asarray(cond[len(plain):]) == tokens.eos_id).all()
    with pytest.raises(ValueError, match="exceeds pad_to"):
        inference_prompt(tokens, codes, text, pad_to=len(text) + 1)


def test_interleave_output_init_matches_sampler_golden(tokens):
    golden = load_npz(golden_path("samplers") / "interleave_fullvocab.npz")
    n, _, m = golden["params"][:3]
    lc = golden["input_ids"].shape[0]
    start = golden["combined_before_step"][0]
    np.testing.assert_array_equal(output_init(tokens, Layout(0, int(n), int(m))), start[lc:])
    np.testing.assert_array_equal(start[:lc], golden["input_ids"])

"""Rollouts that keep what RL needs, for MMaDA-Parallel-A (``generate_ti2ti``): the recorded steps
against the full trajectory and an independent forward pass (conditional and the two
unconditional rows built by hand), and the learner's recompute from the stored states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import golden_path
from mmada_jax import load_model
from mmada_jax.parallel_a import generate
from mmada_jax.parallel_a.prompts import edit_prompt_from_ids
from mmada_jax.parallel_a.sampler import Settings, max_text_per_step, text_schedule
from mmada_jax.sampling.common import image_step_indices, left_padding

pytestmark = pytest.mark.golden     # the tiny random -A transformer of the golden set

GRID, TEXT_LEN, STEPS, IMAGE_STEPS = (2, 3), 12, 8, 4
KW = dict(text_len=TEXT_LEN, text_steps=STEPS, image_steps=IMAGE_STEPS, instruction_cfg=1.5, image_cfg=2.0,
          text_temperature=0.5, image_temperature=1.0)
STEPS_RECORDED = np.asarray([[0, 3, 7], [5, 1, 2], [6, 4, 3]])


@pytest.fixture(scope="module")
def model():
    return load_model(golden_path("dimoo_tiny"))[0]


def _prompts(model):
    """Three edit prompts of different lengths (instructions, input grids): left-padded rows."""
    t = model.config.tokens
    rng = np.random.default_rng(0)
    ids = lambda n: rng.integers(0, t.image_offset // 2, n).tolist()
    return [edit_prompt_from_ids(t, ids(3), ids(n), rng.integers(0, t.codebook_size, g), grid=GRID, text_len=TEXT_LEN)
            for n, g in ((4, (2, 2)), (9, (2, 3)), (1, (3, 2)))]


@pytest.fixture(scope="module", params=[False, True], ids=["full_vocab", "restrict_text"])
def run(model, request):
    prompts = _prompts(model)
    keys = jax.random.split(jax.random.key(5), len(prompts))
    kw = dict(KW, restrict_text=request.param)
    out = generate(model, prompts, seed=keys, return_trajectory=True, record_steps=STEPS_RECORDED, **kw)
    plain = generate(model, prompts, seed=keys, **kw)
    return prompts, kw, out, plain


def test_recording_does_not_change_the_rollout_and_keeps_the_trajectory(model, run):
    _, _, out, plain = run
    np.testing.assert_array_equal(out.ids, plain.ids)
    np.testing.assert_array_equal(out.image_codes, plain.image_codes)
    rec, traj = out.recording, out.trajectory
    np.testing.assert_array_equal(rec.steps, STEPS_RECORDED)
    for b, row in enumerate(STEPS_RECORDED):
        for slot, t in enumerate(row):
            if t > 0:
                np.testing.assert_array_equal(rec.before[b, slot], traj[t - 1, b])
            np.testing.assert_array_equal(rec.after[b, slot], traj[t, b])
    mask = model.config.tokens.mask_id
    text = out.layout.text_positions()
    assert (rec.before[STEPS_RECORDED == 0][:, text] == mask).all()     # step 0 starts all-masked


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _forward(model, rows, pads, length):
    consts = left_padding(np.asarray(pads), length)
    hidden, _ = model.encode(jnp.asarray(rows), consts["attention_mask"], mask_mode="hard",
                             position_ids=consts["position_ids"])
    return np.asarray(model.head(hidden), np.float64)


def test_recorded_logp_and_predictions_match_an_independent_forward(model, run):
    prompts, kw, out, _ = run
    rec, lay, t = out.recording, out.layout, model.config.tokens
    pos, text_pos = lay.image_positions(), lay.text_positions()
    lo, hi = t.image_offset, t.image_offset + t.codebook_size
    image_steps = set(image_step_indices(STEPS, IMAGE_STEPS).tolist())
    decoded = rec.decoded(t.mask_id)
    pads, length = out.pads, lay.total
    text_only = 0
    for slot in range(STEPS_RECORDED.shape[1]):
        before, after = rec.before[:, slot], rec.after[:, slot]
        logits = _forward(model, before, pads, length)
        text_logits = logits[:, text_pos]
        if kw["restrict_text"]:
            col = np.arange(text_logits.shape[-1])
            text_logits = np.where((col < t.image_offset) & (col != t.mask_id), text_logits, -np.inf)
        text_lsm, img_lsm = _log_softmax(text_logits), _log_softmax(logits[:, pos, lo:hi])
        # the unconditional rows: the sequence after the step with each prefix written at the row's start
        uncond = []
        for prefix_of in (lambda p: p.uncon_input_text, lambda p: p.uncon_input_image):
            rows = after.copy()
            for b, (p, pad) in enumerate(zip(prompts, pads)):
                rows[b, pad:pad + len(prefix_of(p))] = prefix_of(p)
            uncond.append(_forward(model, rows, pads, length)[:, pos, lo:hi])
        cond = logits[:, pos, lo:hi]
        guided = cond + kw["instruction_cfg"] * (cond - uncond[0]) + kw["image_cfg"] * (cond - uncond[1])
        for b in range(len(prompts)):
            for p in np.flatnonzero(decoded[b, slot]):
                if p in text_pos:
                    want = text_lsm[b, p - lay.text_start, after[b, p]]
                else:
                    want = img_lsm[b, int(np.flatnonzero(pos == p)[0]), after[b, p] - t.image_offset]
                np.testing.assert_allclose(rec.logp[b, slot, p], want, atol=1e-4, rtol=1e-4)
            assert (rec.logp[b, slot][~decoded[b, slot]] == 0).all()
            known = before[b, pos]
            codes = rec.image_codes[b, slot]
            is_known = known != t.mask_id
            np.testing.assert_array_equal(codes[is_known], known[is_known] - t.image_offset)
            newly = decoded[b, slot, pos]
            np.testing.assert_array_equal(codes[newly], after[b, pos][newly] - t.image_offset)
            text_after = after[b, text_pos]
            still = text_after == t.mask_id
            np.testing.assert_array_equal(rec.text_ids[b, slot][~still], text_after[~still])
            np.testing.assert_array_equal(rec.text_ids[b, slot][still], text_lsm[b][still].argmax(-1))
            if STEPS_RECORDED[b, slot] not in image_steps:
                assert not newly.any()
                np.testing.assert_array_equal(codes[~is_known], guided[b][~is_known].argmax(-1))
                text_only += 1
    assert text_only > 0


def test_learner_recomputes_the_samplers_log_probs(model, run):
    from mmada_jax.rl.trajectory import step_batch, token_logp

    _, kw, out, _ = run
    t = model.config.tokens
    slots = max_text_per_step(Settings(**{k: kw[k] for k in ("text_len", "text_steps", "image_steps")}))
    assert slots == text_schedule(TEXT_LEN, STEPS).max() and slots > 1
    batch = step_batch(out.recording, out.pads, out.layout, t.mask_id, t.image_offset, slots)
    w = batch["weights"]
    np.testing.assert_array_equal(w.sum(-1), out.recording.decoded(t.mask_id).sum(-1))
    logp = np.asarray(token_logp(model, {k: jnp.asarray(v) for k, v in batch.items()}, out.layout,
                                 kw["restrict_text"])).reshape(w.shape)
    np.testing.assert_allclose(logp * w, batch["sampler_logp"], atol=1e-4, rtol=1e-4)
    assert (logp[w > 0] < 0).all()

"""Rollouts that keep what RL needs: the recorded steps of the -M sampler against the full
trajectory and an independent forward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmada_jax import ModelConfig, init_model
from mmada_jax.parallel_m import generate as parallel_generate
from mmada_jax.parallel_m import inference_prompt
from mmada_jax.parallel_m.sampler import Settings, max_text_per_step
from mmada_jax.sampling.common import image_step_indices, left_padding

N, TEXT_LEN, STEPS, IMAGE_STEPS = 16, 8, 8, 4


@pytest.fixture(scope="module")
def tiny():
    return init_model(ModelConfig.from_yaml("configs/mmada_tiny.yaml"), seed=11)


def _requests(tiny, lengths=(3, 7, 5)):
    t = tiny.config.tokens
    rng = np.random.default_rng(0)
    codes = rng.integers(0, t.codebook_size, (len(lengths), N))
    pairs = [inference_prompt(t, c, rng.integers(0, 120, n).tolist()) for c, n in zip(codes, lengths)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


KW = dict(num_image_tokens=N, text_len=TEXT_LEN, text_steps=STEPS, image_steps=IMAGE_STEPS, image_cfg=2.0,
          text_temperature=0.7, image_temperature=1.0)
SLOTS = max_text_per_step(Settings(text_len=TEXT_LEN, text_steps=STEPS, image_steps=IMAGE_STEPS))


@pytest.fixture(scope="module")
def run(tiny):
    cond, uncond = _requests(tiny)
    steps = np.asarray([[0, 3, 7], [5, 1, 2], [6, 4, 3]])    # one row's steps in any order
    keys = jax.random.split(jax.random.key(5), 3)
    out = parallel_generate(tiny, cond, uncond, seed=keys, return_trajectory=True, record_steps=steps, **KW)
    plain = parallel_generate(tiny, cond, uncond, seed=keys, **KW)
    return cond, uncond, steps, out, plain


def test_recording_does_not_change_the_rollout(run):
    _, _, _, out, plain = run
    np.testing.assert_array_equal(out.ids, plain.ids)
    np.testing.assert_array_equal(out.image_codes, plain.image_codes)


def test_recorded_states_are_the_trajectory_around_each_chosen_step(tiny, run):
    _, _, steps, out, _ = run
    rec, traj = out.recording, out.trajectory
    np.testing.assert_array_equal(rec.steps, steps)
    for b in range(steps.shape[0]):
        for slot, t in enumerate(steps[b]):
            start = traj[t - 1, b] if t > 0 else None
            if start is not None:
                np.testing.assert_array_equal(rec.before[b, slot], start)
            np.testing.assert_array_equal(rec.after[b, slot], traj[t, b])
    mask = tiny.config.tokens.mask_id
    assert rec.decoded(mask).any(axis=-1).all()        # every step decodes some text
    first = steps == 0
    assert (rec.before[first][:, out.layout.text_start + 1:] == mask).all()    # step 0 starts all-masked


def _independent(tiny, cond, uncond, before, pads, layout, image_cfg):
    """Conditional log-softmax of the text and codebook logits and the guided image argmax,
    from a fresh forward of the stored state (plus its unconditional twin)."""
    t = tiny.config.tokens
    consts = left_padding(pads, layout.total)
    unc = np.concatenate([np.stack([np.pad(u, (p, 0), constant_values=t.pad_id) for u, p in zip(uncond, pads)]),
                          before[:, layout.input_len:]], axis=1)
    rows = jnp.concatenate([before, unc], axis=0)
    mask = jnp.concatenate([consts["attention_mask"]] * 2, axis=0)
    pos = jnp.concatenate([consts["position_ids"]] * 2, axis=0)
    hidden, _ = tiny.encode(rows, mask, mask_mode="hard", position_ids=pos)
    logits = np.asarray(tiny.head(hidden), np.float64)
    b = before.shape[0]
    lsm = logits[:b] - np.log(np.exp(logits[:b] - logits[:b].max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits[:b].max(-1, keepdims=True)
    lo, hi = t.image_offset, t.image_offset + t.codebook_size
    img = logits[:, layout.image_start:layout.image_end, lo:hi]
    img_lsm = img[:b] - np.log(np.exp(img[:b] - img[:b].max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - img[:b].max(-1, keepdims=True)
    guided = (1 + image_cfg) * img[:b] - image_cfg * img[b:]
    return lsm, img_lsm, guided.argmax(-1)


def test_recorded_logp_and_image_prediction_match_an_independent_forward(tiny, run):
    cond, uncond, steps, out, _ = run
    rec, lay, t = out.recording, out.layout, tiny.config.tokens
    image_steps = set(image_step_indices(STEPS, IMAGE_STEPS).tolist())
    decoded = rec.decoded(t.mask_id)
    checked_text_only = 0
    for slot in range(steps.shape[1]):
        before, after = rec.before[:, slot], rec.after[:, slot]
        lsm, img_lsm, guided = _independent(tiny, cond, uncond, before, out.pads, lay, KW["image_cfg"])
        for b in range(before.shape[0]):
            for p in np.flatnonzero(decoded[b, slot]):
                if p >= lay.text_start:
                    want = lsm[b, p, after[b, p]]
                else:
                    want = img_lsm[b, p - lay.image_start, after[b, p] - t.image_offset]
                np.testing.assert_allclose(rec.logp[b, slot, p], want, atol=1e-4, rtol=1e-4)
            assert (rec.logp[b, slot][~decoded[b, slot]] == 0).all()
            known = before[b, lay.image_start:lay.image_end]
            codes = rec.image_codes[b, slot]
            is_known = known != t.mask_id
            np.testing.assert_array_equal(codes[is_known], known[is_known] - t.image_offset)
            newly = decoded[b, slot, lay.image_start:lay.image_end]
            np.testing.assert_array_equal(codes[newly], after[b, lay.image_start:lay.image_end][newly] - t.image_offset)
            text_after = after[b, lay.text_start:]
            still = text_after == t.mask_id
            np.testing.assert_array_equal(rec.text_ids[b, slot][~still], text_after[~still])
            np.testing.assert_array_equal(rec.text_ids[b, slot][still], lsm[b, lay.text_start:][still].argmax(-1))
            if steps[b, slot] not in image_steps:
                assert not newly.any()
                np.testing.assert_array_equal(codes[~is_known], guided[b][~is_known])
                checked_text_only += 1
    assert checked_text_only > 0


def test_final_mode_records_the_last_step_and_bad_steps_are_named(tiny):
    cond, uncond = _requests(tiny, (4,))
    out = parallel_generate(tiny, cond, uncond, seed=0, record_steps=[[STEPS - 1]], **KW)
    np.testing.assert_array_equal(out.recording.after[0, 0], out.ids[0])
    for bad, what in (([[STEPS]], "lie in"), ([[1, 1]], "repeats"), ([1, 2], "shape"), ([[0.5]], "integers")):
        with pytest.raises(ValueError, match=what):
            parallel_generate(tiny, cond, uncond, seed=0, record_steps=bad, **KW)


def test_learner_recomputes_the_samplers_log_probs_from_the_stored_states(tiny, run):
    """The trajectory estimator's forward on the recorded states gives the sampler's own
    log-probabilities of the decoded tokens (the gap RL reports as a metric)."""
    from mmada_jax.rl.trajectory import step_batch, token_logp

    _, _, steps, out, _ = run
    t = tiny.config.tokens
    batch = step_batch(out.recording, out.pads, out.layout, t.mask_id, t.image_offset, SLOTS)
    b, s = steps.shape
    assert batch["ids"].shape == (b * s, out.layout.total)
    w = batch["weights"]
    np.testing.assert_array_equal(w.sum(-1), out.recording.decoded(t.mask_id).sum(-1))
    logp = np.asarray(token_logp(tiny, {k: jnp.asarray(v) for k, v in batch.items()}, out.layout)).reshape(w.shape)
    np.testing.assert_allclose(logp * w, batch["sampler_logp"], atol=1e-4, rtol=1e-4)
    assert (logp[w > 0] < 0).all()


def _learner_batch(tiny, run, adv, beta_ref=None):
    from mmada_jax.rl.objective import rollout_batch
    from mmada_jax.rl.trajectory import step_batch

    _, _, _, out, _ = run
    t = tiny.config.tokens
    steps = step_batch(out.recording, out.pads, out.layout, t.mask_id, t.image_offset, SLOTS)
    ref = steps["sampler_logp"] if beta_ref is None else beta_ref
    return {k: jnp.asarray(v) for k, v in rollout_batch(steps, adv, ref).items()}, out.layout


def test_objective_gradient_at_one_inner_update_is_that_of_advantage_times_logp(tiny, run):
    """Through the model: with mu = 1 (and the reference = the policy, so the KL term is 0 with 0
    gradient) the ParaRL loss has the gradient of -mean_steps(mean_tokens(A log pi))."""
    from flax import nnx

    from mmada_jax.rl.objective import LossOptions, make_objective, step_logp

    adv = np.asarray([[1.0, -0.5, 0.3], [-1.2, 0.8, 0.0], [0.4, 0.4, -2.0]], np.float32)
    batch, layout = _learner_batch(tiny, run, adv)
    objective = make_objective(layout, LossOptions(beta=0.5))
    graphdef, params = nnx.split(tiny)

    def ours(p):
        return objective.loss(nnx.merge(graphdef, p), batch, None)["loss"]

    def by_hand(p):
        logp = step_logp(nnx.merge(graphdef, p), batch, layout)
        w = batch["weights"]
        per_step = (-batch["advantages"][..., None] * logp * w).sum(-1) / w.sum(-1)
        return per_step.mean()

    g1, g2 = jax.grad(ours)(params), jax.grad(by_hand)(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert float(objective.loss(tiny, batch, None)["kl"]) < 1e-6


def test_a_gradient_step_raises_the_log_prob_of_rewarded_steps_and_lowers_penalised_ones(tiny, run):
    from flax import nnx

    from mmada_jax.rl.objective import LossOptions, make_objective, step_logp

    adv = np.asarray([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]], np.float32)
    batch, layout = _learner_batch(tiny, run, adv)
    objective = make_objective(layout, LossOptions(beta=0.0))
    graphdef, params = nnx.split(tiny)
    loss = lambda p: objective.loss(nnx.merge(graphdef, p), batch, None)["loss"]
    moved = jax.tree.map(lambda p, g: p - 0.05 * g, params, jax.grad(loss)(params))
    w = np.asarray(batch["weights"])
    mean_logp = lambda p: (np.asarray(step_logp(nnx.merge(graphdef, p), batch, layout)) * w).sum((1, 2)) / w.sum((1, 2))
    before, after = mean_logp(params), mean_logp(moved)
    assert after[0] > before[0] and after[1] < before[1]

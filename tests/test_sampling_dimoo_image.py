"""Lumina-DiMOO / MMaDA-Parallel-A image generation (T2I, I2I): schedule, layout, guidance against
separate unpadded forwards, batch = single runs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from conftest import golden_path
from mmada_jax import load_model
from mmada_jax.parallel_a import generate_image, image_prompt
from mmada_jax.parallel_a.image import keep_schedule

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def model():
    return load_model(golden_path("dimoo_tiny"))[0]


def _turn(t, system, user, bos=True):
    return ([t.bos_id] if bos else []) + [t["system"], *system, t["end_system"], t["user"], *user, t["end_user"]]


def test_keep_schedule():
    assert keep_schedule(16, 4).tolist() == [14, 11, 6, 0]
    assert keep_schedule(1024, 64)[0] == 1023 and keep_schedule(1024, 64)[-2] == 25 and keep_schedule(4, 64)[-2] == 1


def test_layouts(model):
    t = model.config.tokens
    p, u = _turn(t, [5, 6], [7, 8, 9]), _turn(t, [5, 6], [t["uncondition"]])
    mask, nl = t.mask_id, t["newline"]
    answer = [t["boa"], t["boi"], mask, mask, mask, nl, mask, mask, mask, nl, t["eoi"], t["eoa"]]
    t2i = image_prompt(t, p, u, grid=(2, 3))
    assert t2i.cond.tolist() == p + answer and [x.tolist() for x in t2i.unconds] == [u + answer]
    assert t2i.answer.image_positions().tolist() == [2, 3, 4, 6, 7, 8] and t2i.answer.answer_len == len(answer)
    codes = np.array([[1, 2], [3, 4]])
    img = [t["boi"], 1 + t.image_offset, 2 + t.image_offset, nl, 3 + t.image_offset, 4 + t.image_offset, nl, t["eoi"]]
    i2i = image_prompt(t, p, u, grid=(2, 3), input_image_codes=codes)
    assert i2i.cond.tolist() == p[:-1] + img + p[-1:] + answer
    assert [x.tolist() for x in i2i.unconds] == [u[:-1] + img + u[-1:] + answer, p + answer]


def test_guidance_equals_separate_unpadded_forwards(model):
    """One greedy step fills every position with argmax(cond + w1 (cond - u_text) + w2 (cond - u_img)),
    each logit row from its own unpadded forward (the reference runs them separately)."""
    t = model.config.tokens
    rng = np.random.default_rng(1)
    prompt = image_prompt(t, _turn(t, [5, 6, 7], [8, 9, 10, 11, 12]), _turn(t, [5, 6, 7], [t["uncondition"]]),
                          grid=(3, 4), input_image_codes=rng.integers(0, t.codebook_size, (2, 2)))
    w = (1.5, 3.0)
    out = generate_image(model, prompt, guidance=w[0], image_cfg=w[1], steps=1, temperature=0.0)
    cols = (t.image_offset, t.image_offset + t.codebook_size)

    def logits(seq):
        pos = len(seq) - prompt.answer.answer_len + prompt.answer.image_positions()
        return np.asarray(model(seq[None], positions=pos, vocab_range=cols))[0]
    cond, ut, ui = (logits(s) for s in (prompt.cond, *prompt.unconds))
    np.testing.assert_array_equal(out.image_codes[0], np.argmax(cond + w[0] * (cond - ut) + w[1] * (cond - ui), -1))


def test_t2i_trajectory_follows_the_schedule(model):
    t = model.config.tokens
    prompt = image_prompt(t, _turn(t, [5], [6, 7]), _turn(t, [5], [t["uncondition"]]), grid=(4, 4))
    out = generate_image(model, prompt, guidance=4.0, steps=4, temperature=1.0, seed=3, return_trajectory=True)
    masked = (out.trajectory[:, 0][:, prompt.answer.image_positions()] == t.mask_id).sum(-1)
    assert masked.tolist() == keep_schedule(16, 4).tolist()
    assert out.image_codes.min() >= 0 and out.image_codes.max() < t.codebook_size
    again = generate_image(model, prompt, guidance=4.0, steps=4, temperature=1.0, seed=3)
    np.testing.assert_array_equal(out.image_codes, again.image_codes)


def test_batch_equals_single_runs(model):
    t = model.config.tokens
    rng = np.random.default_rng(0)
    u = _turn(t, [5, 6], [t["uncondition"]])
    k = t.codebook_size
    prompts = [image_prompt(t, _turn(t, [5, 6], [7]), u, grid=(3, 3), input_image_codes=rng.integers(0, k, (2, 2))),
               image_prompt(t, _turn(t, [5, 6], list(range(20, 31))), u, grid=(3, 3),
                            input_image_codes=rng.integers(0, k, (1, 3)))]
    keys = jax.random.split(jax.random.key(5), 2)
    kw = dict(guidance=2.5, image_cfg=4.0, steps=5, temperature=1.0)
    batch = generate_image(model, prompts, seed=keys, **kw)
    for i, p in enumerate(prompts):
        single = generate_image(model, p, seed=keys[i:i + 1], **kw)
        np.testing.assert_array_equal(batch.image_codes[i], single.image_codes[0], err_msg=f"row {i}")
    assert not np.array_equal(batch.image_codes[0], batch.image_codes[1])
    with pytest.raises(ValueError, match="share the output grid"):
        generate_image(model, [prompts[0], image_prompt(t, _turn(t, [5], [6]), u, grid=(2, 2),
                                                        input_image_codes=np.zeros((1, 1), int))], guidance=1.0)
    with pytest.raises(ValueError, match="all text-to-image prompts or all image-to-image"):
        generate_image(model, [prompts[0], image_prompt(t, _turn(t, [5], [6]), u, grid=(3, 3))])

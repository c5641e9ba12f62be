"""Samplers: exact replay of every golden trajectory, batches equal single runs, flat compile size."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from conftest import golden_path, load_npz
from mmada_jax import ModelConfig, init_model, load_model
from mmada_jax.mmada import T2ILayout, generate_t2i, generate_text
from mmada_jax.mmada import prompts as P
from mmada_jax.parallel_m import generate as parallel_generate
from mmada_jax.parallel_m import inference_prompt
from mmada_jax.sampling.common import as_randomness, image_step_indices, num_transfer_tokens

MODELS = {"tiny": "mmada_tiny", "fullvocab": "mmada_tiny_fullvocab"}


def _model(variant):
    return load_model(golden_path(MODELS[variant]))[0]


def _tape(g):
    return {k: g[k] for k in ("u_multinomial", "u_gumbel") if k in g}


@pytest.mark.golden
@pytest.mark.parametrize("variant", sorted(MODELS))
def test_llada_generate_replays_golden(variant):
    g = load_npz(golden_path(f"samplers/llada_generate_{variant}.npz"))
    gen, block, steps, mask = (int(v) for v in g["params"])
    model = _model(variant)
    assert model.config.tokens.mask_id == mask
    for cfg in sorted({k.split("__")[0] for k in g if k.startswith("cfg")}):
        out = generate_text(model, g["prompt_ids"], gen_length=gen, block_length=block, steps=steps,
                             cfg=float(g[f"{cfg}__cfg_scale"]), return_trajectory=True)
        np.testing.assert_array_equal(out.ids, g[f"{cfg}__final_x"])
        np.testing.assert_array_equal(out.trajectory[:-1], g[f"{cfg}__x_before_step"][1:])
        b = g["prompt_ids"].shape[0]
        np.testing.assert_array_equal(g[f"{cfg}__step_model_input_ids"][:, :b], g[f"{cfg}__x_before_step"])


@pytest.mark.golden
@pytest.mark.parametrize("variant", sorted(MODELS))
def test_t2i_replays_golden(variant):
    g = load_npz(golden_path(f"samplers/t2i_{variant}.npz"))
    n, k, max_text_len, steps, offset, mask = (int(v) for v in g["params"])
    model = _model(variant)
    assert (model.config.tokens.image_offset, model.config.tokens.codebook_size) == (offset, k)
    out = generate_t2i(model, g["input_ids"], g["uncond_input_ids"], layout=T2ILayout(max_text_len, n),
                       steps=steps, guidance=float(g["guidance_scale"]),
                       temperature=float(g["temperature"]), tape=_tape(g), return_trajectory=True)
    np.testing.assert_array_equal(out.image_codes, g["output_image_ids"])
    np.testing.assert_array_equal(out.ids, g["final_input_ids"])
    b = g["input_ids"].shape[0]
    np.testing.assert_array_equal(out.trajectory[:-1], g["step_model_input_ids"][1:, :b])


@pytest.mark.golden
@pytest.mark.parametrize("variant", sorted(MODELS))
def test_parallel_replays_golden(variant):
    g = load_npz(golden_path(f"samplers/interleave_{variant}.npz"))
    n, k, text_len, steps, image_steps, offset, mask = (int(v) for v in g["params"])
    np.testing.assert_array_equal(image_step_indices(steps, image_steps), g["image_step_text_index"])
    model = _model(variant)
    out = parallel_generate(model, g["input_ids"], g["uncond_input_ids"], num_image_tokens=n, text_len=text_len,
                            text_steps=steps, image_steps=image_steps, text_cfg=float(g["cfg_scales"][0]),
                            image_cfg=float(g["cfg_scales"][1]), text_temperature=float(g["temperatures"][0]),
                            image_temperature=float(g["temperatures"][1]), tape=_tape(g), return_trajectory=True)
    np.testing.assert_array_equal(out.image_codes, g["output_image_ids"])
    np.testing.assert_array_equal(out.text_ids, g["output_text_ids"])
    np.testing.assert_array_equal(out.ids, g["final_combined_ids"])
    np.testing.assert_array_equal(out.trajectory[:-1, 0], g["combined_before_step"][1:])


def test_num_transfer_tokens_front_loads_the_remainder():
    np.testing.assert_array_equal(num_transfer_tokens(np.array([10, 3]), 4), [[3, 3, 2, 2], [1, 1, 1, 0]])


def test_image_steps_match_the_spec_example():
    expected = [32, 35, 39, 42, 45, 48, 52, 55, 58, 61, 65, 68, 71, 75, 78, 81, 84, 88, 91, 94, 98, 101,
                104, 107, 111, 114, 117, 120, 124, 127]
    np.testing.assert_array_equal(image_step_indices(128, 30), expected)


def test_cosine_mask_len_matches_torch():
    torch = pytest.importorskip("torch")
    import math
    from mmada_jax.sampling.common import mask_ratio_schedule
    for total in (4, 6, 15, 30, 64, 128, 250):
        ours = mask_ratio_schedule(total)
        for n in (16, 256, 1024, 4096):
            ref = [float((n * torch.cos(torch.tensor((s + 1) / total) * math.pi * 0.5)).floor()) for s in range(total)]
            np.testing.assert_array_equal(np.floor(np.float32(n) * ours), ref)


@pytest.fixture(scope="module")
def tiny():
    return init_model(ModelConfig.from_yaml("configs/mmada_tiny.yaml"), seed=11)


def test_parallel_batch_equals_single_runs(tiny):
    """Rows of different lengths, noisy text and image decoding: row b of the batch equals the
    single run with keys[b]."""
    t = tiny.config.tokens
    rng = np.random.default_rng(0)
    instructions = [rng.integers(0, 120, n).tolist() for n in (3, 7, 5)]
    codes = rng.integers(0, t.codebook_size, (3, 16))
    pairs = [inference_prompt(t, c, ins) for c, ins in zip(codes, instructions)]
    keys = jax.random.split(jax.random.key(7), 3)
    kw = dict(num_image_tokens=16, text_len=8, text_steps=8, image_steps=4, text_cfg=0.5, image_cfg=2.0,
              text_temperature=0.7, image_temperature=1.0)
    batch = parallel_generate(tiny, [p[0] for p in pairs], [p[1] for p in pairs], seed=keys, **kw)
    for i, (cond, uncond) in enumerate(pairs):
        single = parallel_generate(tiny, cond, uncond, seed=keys[i:i + 1], **kw)
        np.testing.assert_array_equal(batch.image_codes[i], single.image_codes[0], err_msg=f"row {i}")
        np.testing.assert_array_equal(batch.text_ids[i], single.text_ids[0], err_msg=f"row {i}")


def test_t2i_and_text_batches_equal_single_runs(tiny):
    t = tiny.config.tokens
    texts = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    ids, _, uids, _ = P.t2i_gen_prompt(t, texts, 16, 12)
    keys = jax.random.split(jax.random.key(3), 3)
    kw = dict(layout=T2ILayout(12, 16), steps=6, guidance=2.0)
    batch = generate_t2i(tiny, ids, uids, seed=keys, **kw)
    prompts = np.random.default_rng(1).integers(0, 120, (3, 6))
    text_kw = dict(gen_length=8, block_length=4, steps=4, temperature=1.0, remasking="random")
    text_batch = generate_text(tiny, prompts, seed=keys, **text_kw)
    for i in range(3):
        single = generate_t2i(tiny, ids[i:i + 1], uids[i:i + 1], seed=keys[i:i + 1], **kw)
        np.testing.assert_array_equal(batch.image_codes[i], single.image_codes[0])
        one = generate_text(tiny, prompts[i:i + 1], seed=keys[i:i + 1], **text_kw)
        np.testing.assert_array_equal(text_batch.ids[i], one.ids[0])


def test_same_seed_same_result_other_seed_differs(tiny):
    t = tiny.config.tokens
    cond, uncond = inference_prompt(t, np.arange(16) % t.codebook_size, [1, 2, 3])
    kw = dict(num_image_tokens=16, text_len=8, text_steps=8, image_steps=4, image_cfg=2.0)
    a = parallel_generate(tiny, cond, uncond, seed=1, **kw)
    b = parallel_generate(tiny, cond, uncond, seed=1, **kw)
    c = parallel_generate(tiny, cond, uncond, seed=2, **kw)
    np.testing.assert_array_equal(a.image_codes, b.image_codes)
    assert not np.array_equal(a.image_codes, c.image_codes)
    assert ((a.image_codes >= 0) & (a.image_codes < t.codebook_size)).all()
    assert (a.text_ids != t.mask_id).all() and a.text_ids[0, 0] == t.bos_id


def test_compiled_program_does_not_grow_with_steps(tiny):
    from mmada_jax.parallel_m import sampler as par
    from mmada_jax.sampling.runner import lower_scan
    t = tiny.config.tokens
    cond, uncond = inference_prompt(t, np.arange(16) % t.codebook_size, [1, 2, 3])
    sizes = []
    for steps in (8, 64, 256):
        args = par.prepare(tiny, cond, uncond, num_image_tokens=16, text_len=8, text_steps=steps,
                           image_steps=4, image_cfg=2.0)
        sizes.append(len(lower_scan(tiny, par._step, *args[:-1]).as_text()))
    assert max(sizes) - min(sizes) < 0.02 * min(sizes), sizes


def test_bad_sampler_inputs(tiny):
    t = tiny.config.tokens
    with pytest.raises(ValueError, match="mask token"):
        generate_text(tiny, np.full((1, 4), t.mask_id), gen_length=4, steps=4)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        generate_text(tiny, np.ones((1, 4), np.int32), gen_length=8, block_length=4, steps=3)
    cond, uncond = inference_prompt(t, np.zeros(16, np.int32), [1])
    with pytest.raises(ValueError, match="unconditional twin"):
        parallel_generate(tiny, cond, uncond[:-1], num_image_tokens=16, text_len=8, text_steps=8, image_steps=4)
    with pytest.raises(ValueError, match="text_guidance must be one of"):
        parallel_generate(tiny, cond, uncond, num_image_tokens=16, text_len=8, text_guidance="plus")
    with pytest.raises(ValueError, match="image_steps \\(9\\) cannot exceed text_steps \\(8\\)"):
        parallel_generate(tiny, cond, uncond, num_image_tokens=16, text_len=8, text_steps=8, image_steps=9)
    with pytest.raises(ValueError, match="text_len must be at least 2"):
        parallel_generate(tiny, cond, uncond, num_image_tokens=16, text_len=1)
    with pytest.raises(ValueError, match="image_cfg must be a finite number"):
        parallel_generate(tiny, cond, uncond, num_image_tokens=16, text_len=8, image_cfg=float("nan"))
    with pytest.raises(ValueError, match="PRNG keys for a batch"):
        as_randomness(jax.random.split(jax.random.key(0), 2), batch=3)

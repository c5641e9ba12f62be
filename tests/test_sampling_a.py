"""MMaDA-Parallel-A's joint sampler (the reference's ``generate_ti2ti``): exact replay of every golden run from its recorded noise."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import golden_path, load_npz
from mmada_jax import load_model
from mmada_jax.parallel_a import Layout, generate
from mmada_jax.parallel_a.prompts import edit_prompt_from_ids
from mmada_jax.parallel_a.sampler import generate_ids
from mmada_jax.sampling.common import image_step_indices

RUNS = ("ti2ti_readme", "ti2ti_cfgtext", "ti2ti_greedy_nocfg")
TAPE = ("u_text_gumbel", "u_multinomial", "randn_remask", "randint_fill")


@pytest.fixture(scope="module")
def model():
    return load_model(golden_path("dimoo_tiny"))[0]


def _run(model, g, **extra):
    (text_start, text_end, image_start, n, newline_every, steps, text_len, _block, timesteps,
     off, k, mask, newline) = (int(v) for v in g["params"])
    cfg_scale, cfg_img, temperature, text_temperature = (float(v) for v in g["scales"])
    t = model.config.tokens
    assert (t.image_offset, t.codebook_size, t.mask_id, t["newline"]) == (off, k, mask, newline)
    assert text_end - text_start == text_len
    np.testing.assert_array_equal(image_step_indices(steps, timesteps), g["image_steps"])
    layout = _layout(g)
    assert (layout.text_start, layout.text_end) == (text_start, text_end)
    return generate_ids(model, g["input_ids"], layout, text_len=text_len, text_steps=steps, image_steps=timesteps,
                        image_temperature=temperature, text_temperature=text_temperature, instruction_cfg=cfg_scale,
                        image_cfg=cfg_img, uncon_text=g["uncon_text"], uncon_image=g["uncon_image"],
                        tape={k: g[k] for k in TAPE if k in g}, return_trajectory=True, **extra)


def _layout(g) -> Layout:
    """The layout of a golden run from its recorded indices."""
    text_start, text_end, image_start, n, newline_every = (int(v) for v in g["params"][:5])
    return Layout(image_start - 2, (n // newline_every, newline_every), text_end - text_start,
                  len(g["input_ids"]) - text_end)


def _input_image(g, tokens) -> np.ndarray:
    """The run's input image as a [grid_h, grid_w] code array, its grid read from the recorded
    sequence (README §7/§8: the input image sits inside the user turn, con_input_list = P[:-1] +
    BOI (grid_w codes NEWLINE) x grid_h EOI + P[-1:], and the answer starts at image_start - 2)."""
    image_start = int(g["params"][2])
    block = np.asarray(g["input_ids"][len(g["uncon_image"]) - 1: image_start - 3])
    assert block[0] == tokens["boi"] and block[-1] == tokens["eoi"], block
    body = block[1:-1]
    grid_h = int(np.sum(body == tokens["newline"]))
    grid_w = int(np.argmax(body == tokens["newline"]))
    rows = body.reshape(grid_h, grid_w + 1)
    assert np.all(rows[:, -1] == tokens["newline"]), "an image row without its trailing NEWLINE"
    codes = rows[:, :-1] - tokens.image_offset
    np.testing.assert_array_equal(codes.ravel(), g["input_image_codes"])
    return codes


def test_input_image_grid_is_read_from_the_sequence():
    """The grid reader above on hand-made non-square grids (wide, tall, one row/column)."""
    from mmada_jax.config import dimoo_tokens
    t = dimoo_tokens({"text_vocab_size": 404, "codebook_size": 64}, 125952)
    rng = np.random.default_rng(0)
    for grid in ((2, 3), (3, 2), (1, 5), (5, 1), (4, 4), (3, 7)):
        codes = rng.integers(0, t.codebook_size, grid)
        p = edit_prompt_from_ids(t, [16, 25], [46, 92, 7], codes, grid=(2, 5), text_len=6)
        g = {"params": np.array([p.layout.text_start, p.layout.text_end, p.layout.image_start]),
             "input_ids": p.full_input_ids, "uncon_image": p.uncon_input_image, "input_image_codes": codes.ravel()}
        got = _input_image(g, t)
        assert got.shape == grid
        np.testing.assert_array_equal(got, codes)


@pytest.mark.golden
@pytest.mark.parametrize("run", RUNS)
def test_ti2ti_replays_golden(model, run):
    g = load_npz(golden_path(f"samplers_a/{run}.npz"))
    out = _run(model, g)
    np.testing.assert_array_equal(out.trajectory[:-1, 0], g["state_before_step"][1:])
    np.testing.assert_array_equal(g["state_before_step"][0], g["input_ids"])
    np.testing.assert_array_equal(out.ids, g["final_ids"])
    np.testing.assert_array_equal(out.image_codes[0], g["output_image_codes"])
    mask = model.config.tokens.mask_id
    text = out.text_ids[0]
    np.testing.assert_array_equal(text[text != mask], g["output_text_ids"])
    if "uncond_text_input_ids" in g:
        # the unconditional rows: the sequence after the text update (image region as before the
        # step) with its prefix overwritten
        pos = g["image_position_mapping"]
        for j, s in enumerate(g["image_steps"]):
            after_text = out.trajectory[s, 0].copy()
            after_text[pos] = g["state_before_step"][s][pos]
            for key, prefix in (("uncond_text_input_ids", g["uncon_text"]), ("uncond_img_input_ids", g["uncon_image"])):
                expected = after_text.copy()
                expected[:len(prefix)] = prefix
                np.testing.assert_array_equal(expected, g[key][j], err_msg=f"{key} at image step {j}")


@pytest.mark.golden
def test_layout_of_the_sampler_inputs_is_prompting_a(model):
    g = load_npz(golden_path("samplers_a/ti2ti_readme.npz"))
    t = model.config.tokens
    codes = _input_image(g, t)   # [grid_h, grid_w], the grid read from the recorded input_ids
    text_start, text_end, image_start, n, newline_every = (int(v) for v in g["params"][:5])
    p = edit_prompt_from_ids(t, g["system_ids"], g["instruction_ids"], codes,
                             grid=(n // newline_every, newline_every), text_len=text_end - text_start)
    np.testing.assert_array_equal(p.full_input_ids, g["input_ids"])
    np.testing.assert_array_equal(p.uncon_input_text, g["uncon_text"])
    np.testing.assert_array_equal(p.uncon_input_image, g["uncon_image"])
    np.testing.assert_array_equal(p.image_position_mapping, g["image_position_mapping"])
    assert (p.layout.text_start, p.layout.text_end, p.layout.image_start) == (text_start, text_end, image_start)
    assert p.layout == _layout(g)


@pytest.mark.golden
def test_sampled_fill_and_seeded_runs(model):
    """``final_fill='sampled'`` leaves no MASK in the image; PRNG-seeded runs are reproducible."""
    g = load_npz(golden_path("samplers_a/ti2ti_cfgtext.npz"))
    out = _run(model, g, final_fill="sampled")
    mask = model.config.tokens.mask_id
    assert not np.any(out.ids[0, g["image_position_mapping"]] == mask)
    off = model.config.tokens.image_offset
    np.testing.assert_array_equal(out.ids[0, g["image_position_mapping"]] - off, out.image_codes[0])
    text_start, text_end, image_start, n, newline_every, steps = (int(v) for v in g["params"][:6])
    kw = dict(text_len=text_end - text_start, text_steps=steps, image_steps=int(g["params"][8]),
              uncon_text=g["uncon_text"], uncon_image=g["uncon_image"], restrict_text=True)
    a = generate_ids(model, g["input_ids"], _layout(g), seed=3, **kw)
    b = generate_ids(model, g["input_ids"], _layout(g), seed=3, **kw)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.image_codes, b.image_codes)
    assert np.all(a.text_ids < model.config.tokens.image_offset) and not np.any(a.text_ids == mask)
    assert a.image_codes.min() >= 0 and a.image_codes.max() < model.config.tokens.codebook_size


@pytest.mark.golden
def test_batch_of_prompts_equals_single_runs(model):
    """Rows of different prefix lengths (instruction, input-image grid) in one batch: each row
    equals its single run with the same key (left-padding masked, RoPE shifted, overlays per row)."""
    import jax

    g = load_npz(golden_path("samplers_a/ti2ti_readme.npz"))
    t = model.config.tokens
    codes = _input_image(g, t)   # [grid_h, grid_w], the grid read from the recorded input_ids
    n, newline_every, steps = (int(v) for v in g["params"][3:6])
    timesteps = int(g["params"][8])
    text_len = int(g["params"][1] - g["params"][0])
    kw = dict(grid=(n // newline_every, newline_every), text_len=text_len)
    rng = np.random.default_rng(0)
    prompts = [edit_prompt_from_ids(t, g["system_ids"], g["instruction_ids"], codes, **kw),
               edit_prompt_from_ids(t, g["system_ids"], list(g["instruction_ids"]) + [5, 6, 7, 8, 9], codes, **kw)]
    # a third row with a shorter system prompt, no instruction and a non-square input grid of
    # another size; the first grid that gives a third prefix length is taken
    lengths = {len(p.full_input_ids) for p in prompts}
    for grid in ((2, 3), (3, 2), (1, 3), (3, 5), (5, 3), (2, 7)):
        third = edit_prompt_from_ids(t, g["system_ids"][:2], [], rng.integers(0, t.codebook_size, grid), **kw)
        if len(third.full_input_ids) not in lengths:
            break
    prompts.append(third)
    assert len({len(p.full_input_ids) for p in prompts}) == 3
    settings = dict(text_len=text_len, text_steps=steps, image_steps=timesteps, image_temperature=1.0,
                    text_temperature=0.5, instruction_cfg=1.5, image_cfg=2.0)
    keys = jax.random.split(jax.random.key(7), len(prompts))
    batch = generate(model, prompts, seed=keys, return_trajectory=True, **settings)
    assert list(batch.pads) == [max(len(p.full_input_ids) for p in prompts) - len(p.full_input_ids) for p in prompts]
    for i, p in enumerate(prompts):
        single = generate(model, p, seed=keys[i:i + 1], return_trajectory=True, **settings)
        pad = batch.pads[i]
        np.testing.assert_array_equal(batch.ids[i, pad:], single.ids[0], err_msg=f"row {i}")
        np.testing.assert_array_equal(batch.trajectory[:, i, pad:], single.trajectory[:, 0], err_msg=f"row {i}")
        np.testing.assert_array_equal(batch.image_codes[i], single.image_codes[0])
        np.testing.assert_array_equal(batch.text_ids[i], single.text_ids[0])
    # the rows really differ (different prompts and keys), and a single run is the unpadded reference path
    assert not np.array_equal(batch.image_codes[0], batch.image_codes[1])

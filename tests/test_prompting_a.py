"""MMaDA-Parallel-A TI2TI editing layout: every array of ``golden/prompting_a`` rebuilt exactly."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import golden_path, load_npz
from mmada_jax.config import dimoo_tokens
from mmada_jax.parallel_a.layout import DOWNSAMPLE, output_grid
from mmada_jax.parallel_a.prompts import edit_prompt_from_ids

CASES = ("square", "nonsquare")


@pytest.fixture(scope="module")
def golden_a():
    import json
    root = golden_path("prompting_a")
    return load_npz(root / "prompting_a.npz"), json.loads((root / "prompting_a_meta.json").read_text())


def _input_codes(tokens, g, case):
    """The input image's VQ codes, read back from the golden tokens (the VQ itself is tested elsewhere)."""
    h, w = (s // DOWNSAMPLE for s in g[f"{case}__input_image_uint8"].shape[:2])
    img = g[f"{case}__input_img_token"]
    special = {tokens["boi"], tokens["eoi"], tokens["newline"]}
    codes = np.asarray([t for t in img if t not in special]) - tokens.image_offset
    return codes.reshape(h, w)


@pytest.mark.golden
@pytest.mark.parametrize("case", CASES)
def test_ti2ti_prompt_matches_golden(golden_a, case):
    g, meta = golden_a
    m = meta["cases"][case]
    tokens = dimoo_tokens({}, 0)  # the golden uses the real ids
    layout = meta["layout_real_ids"]
    assert (tokens.bos_id, tokens["newline"], tokens.mask_id, tokens.image_offset) == (
        layout["bos"], layout["newline"], layout["mask"], layout["text_vocab"])
    p = edit_prompt_from_ids(tokens, g[f"{case}__system_ids"], g[f"{case}__instruction_ids"],
                             _input_codes(tokens, g, case), grid=output_grid(*m["output_px_hw"]),
                             text_len=m["text_gen_length"])
    for key in ("prompt_ids", "uncon_text_ids", "input_img_token", "con_input_list", "uncon_input_text",
                "uncon_input_image", "full_input_ids", "uncond_text_full_initial", "uncond_img_full_initial",
                "image_position_mapping"):
        np.testing.assert_array_equal(getattr(p, key), g[f"{case}__{key}"], err_msg=key)
    lay = p.layout   # the reference's indices: BOA, image start/end, text start/end, N, grid_w, grid
    np.testing.assert_array_equal([lay.prompt_len, lay.image_start, lay.image_end, lay.text_start, lay.text_end,
                                   lay.num_image_tokens, lay.grid[1], *lay.grid], g[f"{case}__indices"])
    assert len(p.full_input_ids) == m["L"] and len(p.prompt_ids) == m["len_P"] and len(p.uncon_text_ids) == m["len_U"]
    assert p.full_input_ids[-1] in m["end_token_ids"]


def test_small_layout_shifts_every_special_id():
    tokens = dimoo_tokens({"text_vocab_size": 404, "codebook_size": 64}, 125952)
    p = edit_prompt_from_ids(tokens, [1, 2], [3], np.arange(6).reshape(2, 3), grid=(3, 2), text_len=4)
    assert p.full_input_ids[0] == 128 and p.input_img_token[1] == 404
    assert len(p.image_position_mapping) == 6 and p.layout.image_end - p.layout.image_start == 9
    with pytest.raises(ValueError):
        edit_prompt_from_ids(tokens, [1], [2], np.full((1, 1), 64), grid=(1, 1), text_len=1)

"""Image tokenizers vs the PyTorch reference goldens (magvitv2_tiny, amused_vq_tiny).

Codes must be identical; latents and decoded pixels agree to atol 1e-4 (the goldens' fp32 vs
fp64 spread is ~1e-5); uint8 images to +-1 (golden README §6). Every size comes from the data.
"""

from __future__ import annotations

import numpy as np
import pytest

import mmada_jax
from conftest import golden_path, load_npz

pytestmark = pytest.mark.golden

ATOL = 1e-4


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def magvit():
    d = golden_path("magvitv2_tiny")
    return mmada_jax.load_vq(d), load_npz(d / "inputs.npz"), load_npz(d / "outputs.npz")


@pytest.fixture(scope="module")
def amused():
    d = golden_path("amused_vq_tiny")
    return mmada_jax.load_vq(d), load_npz(d / "inputs.npz"), load_npz(d / "outputs.npz")


def amused_cases(inputs: dict) -> list[str]:
    return sorted(k.split("__")[0] for k in inputs if k.endswith("__grid_hw"))


# ------------------------------------------------------------------------------- MAGVIT-v2

def test_magvit_pixels_match_reference_preprocessing(magvit):
    tok, inp, _ = magvit
    np.testing.assert_array_equal(tok.from_uint8(inp["images_uint8"]), nhwc(inp["pixel_values"]))


def test_magvit_latent_and_codes(magvit):
    tok, inp, out = magvit
    x = nhwc(inp["pixel_values"])
    np.testing.assert_allclose(np.asarray(tok.latent(x)), nhwc(out["encoder_latent"]), atol=ATOL, rtol=0)
    codes = np.asarray(tok.encode(x))
    assert codes.dtype == np.int32 and codes.shape == out["codes"].shape
    np.testing.assert_array_equal(codes, out["codes"])
    # uint8 input goes through the reference scaling and gives the same codes
    np.testing.assert_array_equal(np.asarray(tok.encode(inp["images_uint8"])), out["codes"])


def test_magvit_codebook_entries(magvit):
    tok, inp, out = magvit
    b, z, h, w = out["quantized"].shape
    got = np.asarray(tok.model.codebook_entry(out["codes"], (h, w)))
    np.testing.assert_array_equal(got, nhwc(out["quantized"]))
    got = np.asarray(tok.model.codebook_entry(inp["codes_for_decode"], (h, w)))
    np.testing.assert_array_equal(got, nhwc(out["codebook_entry_for_given_codes"]))


@pytest.mark.parametrize("codes_key,ref_key", [("in:codes_for_decode", "decoded_from_given_codes"),
                                               ("out:codes", "decoded_from_own_codes")])
def test_magvit_decode(magvit, codes_key, ref_key):
    tok, inp, out = magvit
    src, key = codes_key.split(":")
    codes = (inp if src == "in" else out)[key]
    ref = nhwc(out[ref_key])
    h, w = ref.shape[1:3]
    grid = (h // tok.downsample, w // tok.downsample)
    assert tok.grid(h, w) == grid
    assert tok.num_tokens(h, w) == codes.shape[1]
    got = np.asarray(tok.decode(codes, grid=grid))
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)
    if grid[0] == grid[1]:                       # a square grid is the default
        np.testing.assert_array_equal(np.asarray(tok.decode(codes)), got)


def test_magvit_batch_independent(magvit):
    tok, inp, out = magvit
    codes = inp["codes_for_decode"]
    ref = nhwc(out["decoded_from_given_codes"])
    grid = tok.grid(*ref.shape[1:3])
    alone = np.asarray(tok.decode(codes[-1:], grid=grid))   # the last image of the batch, alone
    np.testing.assert_allclose(alone[0], ref[-1], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(np.asarray(tok.encode(nhwc(inp["pixel_values"])[-1:]))[0], out["codes"][-1])


def test_magvit_uint8_postprocessing(magvit):
    tok, _, out = magvit
    raw = nhwc(out["decoded_from_own_codes"])
    want = (np.clip((raw.astype(np.float64) + 1) / 2, 0, 1) * 255).astype(np.uint8)
    got = tok.to_uint8(raw)
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


# ------------------------------------------------------------------------------- aMUSEd VQ

def test_amused_has_square_and_nonsquare_cases(amused):
    _, inp, _ = amused
    grids = {tuple(inp[f"{c}__grid_hw"]) for c in amused_cases(inp)}
    assert any(h == w for h, w in grids) and any(h != w for h, w in grids)


def test_amused_cases(amused):
    tok, inp, out = amused
    for case in amused_cases(inp):
        grid = tuple(int(v) for v in inp[f"{case}__grid_hw"])
        x = nhwc(inp[f"{case}__pixel_values"])
        np.testing.assert_array_equal(tok.from_uint8(inp[f"{case}__images_uint8"]), x, err_msg=case)
        assert tok.grid(*x.shape[1:3]) == grid
        np.testing.assert_allclose(np.asarray(tok.latent(x)), nhwc(out[f"{case}__latents"]), atol=ATOL,
                                   rtol=0, err_msg=case)
        codes = np.asarray(tok.encode(x))
        np.testing.assert_array_equal(codes, out[f"{case}__codes"], err_msg=case)
        quantized = np.asarray(tok.model.quantize.lookup(codes, grid))
        # the reference's straight-through z + (z_q - z) rounds at ~1e-8
        np.testing.assert_allclose(quantized, nhwc(out[f"{case}__quantized"]), atol=1e-6, rtol=0, err_msg=case)
        for codes_in, ref_key in ((inp[f"{case}__codes_for_decode"], "decoded_raw"),
                                  (out[f"{case}__codes"], "decoded_raw_from_own_codes")):
            got = np.asarray(tok.decode(codes_in, grid=grid))
            np.testing.assert_allclose(got, nhwc(out[f"{case}__{ref_key}"]), atol=ATOL, rtol=0,
                                       err_msg=f"{case} {ref_key}")
        # decode_vq_to_image decodes one image at a time; uint8 may differ by 1 (README §6)
        for i in range(codes.shape[0]):
            one = tok.to_uint8(np.asarray(tok.decode(inp[f"{case}__codes_for_decode"][i:i + 1], grid=grid)))
            diff = np.abs(one[0].astype(int) - out[f"{case}__decoded_uint8"][i].astype(int)).max()
            assert diff <= 1, (case, i, diff)


def test_amused_row_major_token_layout(amused):
    """Our codes in the -A ``encode_img_with_breaks`` layout reproduce the reference tokens
    (BOI 126349, per row: codes + 126356 then <end-of-line> 126084, EOI 126350; spec mmada_a.md §2.3)."""
    _, inp, out = amused
    for case in amused_cases(inp):
        h, w = (int(v) for v in inp[f"{case}__grid_hw"])
        for b, codes in enumerate(out[f"{case}__codes"]):
            rows = codes.reshape(h, w) + 126356
            body = np.concatenate([np.append(r, 126084) for r in rows])
            tokens = np.concatenate([[126349], body, [126350]])
            np.testing.assert_array_equal(tokens, out[f"{case}__encode_img_with_breaks_tokens"][b])


def test_amused_grid_errors(amused):
    tok, inp, out = amused
    case = next(c for c in amused_cases(inp) if inp[f"{c}__grid_hw"][0] != inp[f"{c}__grid_hw"][1])
    codes = out[f"{case}__codes"]
    n = codes.shape[1]
    # an h x w grid can hold a square number of codes (2 x 8); drop one code so that none can fit
    unsquare = codes[:, :-1] if int(round(np.sqrt(n))) ** 2 == n else codes
    with pytest.raises(ValueError, match="not a square grid"):
        tok.decode(unsquare)
    with pytest.raises(ValueError, match="does not hold"):
        tok.decode(out[f"{case}__codes"], grid=(1, 1))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, "):
        tok.decode(np.full_like(out[f"{case}__codes"], tok.codebook_size), grid=tuple(inp[f"{case}__grid_hw"]))
    with pytest.raises(ValueError, match="not a positive multiple"):
        tok.encode(np.zeros((1, tok.downsample + 1, tok.downsample, 3), np.float32))
    with pytest.raises(ValueError, match="NHWC"):
        tok.encode(np.zeros((1, 3, tok.downsample, tok.downsample), np.float32))


@pytest.mark.parametrize("chunks", [((None, None), (2, 2)), ((1, 1), (2, None))])
def test_micro_batching_does_not_change_results(amused, magvit, chunks):
    """A batch of 3 computed whole, one image at a time, or 2 at a time (padded) agrees."""
    for tok, images, codes in ((amused[0], amused[1]["square__images_uint8"], amused[2]["square__codes"]),
                               (magvit[0], magvit[1]["images_uint8"], magvit[2]["codes"])):
        images, codes = np.concatenate([images, images[:1]]), np.concatenate([codes, codes[:1]])
        results = []
        grid = tok.grid(*images.shape[1:3])
        for micro in chunks:
            saved, tok.micro_batch = tok.micro_batch, micro
            try:
                results.append((np.asarray(tok.encode(images)), np.asarray(tok.decode(codes, grid=grid))))
            finally:
                tok.micro_batch = saved
        np.testing.assert_array_equal(results[0][0], results[1][0])
        np.testing.assert_array_equal(results[0][0], codes)
        np.testing.assert_allclose(results[0][1], results[1][1], atol=ATOL, rtol=0)

"""Image files -> tokenizer pixels and back, for both tokenizers: the reference preprocessing
(exact on the golden images), every image mode, tiny and huge images, and clear errors that
name the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import golden_path, load_npz
from mmada_jax.vq import image_io
from mmada_jax.vq.base import AmusedTokenizer, MagvitV2Tokenizer
from mmada_jax.vq.checkpoint import abstract_model
from mmada_jax.vq.config import AmusedVQConfig, MagvitV2Config
from mmada_jax.vq.image_io import ImageError


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write(tmp_path, name: str, array: np.ndarray, mode: str | None = None):
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def tokenizers():
    """Tokenizers over abstract (shape-only) tiny models: enough for the file helpers."""
    m = MagvitV2Config.from_hf_config(json.loads((golden_path("magvitv2_tiny") / "config.json").read_text()))
    a = AmusedVQConfig.from_hf_config(json.loads((golden_path("amused_vq_tiny") / "vqvae" / "config.json")
                                                 .read_text()))
    return MagvitV2Tokenizer(abstract_model(m)), AmusedTokenizer(abstract_model(a))


# ------------------------------------------------------------------------------- golden

@pytest.mark.golden
def test_magvit_png_matches_reference_pixels(tmp_path, tokenizers):
    tok = tokenizers[0]
    inp = load_npz(golden_path("magvitv2_tiny") / "inputs.npz")
    images, want = inp["images_uint8"], np.transpose(inp["pixel_values"], (0, 2, 3, 1))
    paths = [write(tmp_path, f"m{i}.png", im) for i, im in enumerate(images)]
    assert tok.config.image_size == images.shape[1]        # the tiny config squashes to 64
    got = tok.load_images(paths)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.golden
def test_amused_png_matches_reference_pixels(tmp_path, tokenizers):
    tok = tokenizers[1]
    inp = load_npz(golden_path("amused_vq_tiny") / "inputs.npz")
    for case in sorted(k.split("__")[0] for k in inp if k.endswith("__grid_hw")):
        images = inp[f"{case}__images_uint8"]
        want = np.transpose(inp[f"{case}__pixel_values"], (0, 2, 3, 1))
        paths = [write(tmp_path, f"{case}{i}.png", im) for i, im in enumerate(images)]
        np.testing.assert_array_equal(tok.load_images(paths), want)
        assert tok.grid(*want.shape[1:3]) == tuple(inp[f"{case}__grid_hw"])


@pytest.mark.golden
def test_amused_uint8_postprocessing_matches_reference(tokenizers):
    tok = tokenizers[1]
    out = load_npz(golden_path("amused_vq_tiny") / "outputs.npz")
    for case in sorted(k.split("__")[0] for k in out if k.endswith("__decoded_uint8")):
        raw = np.transpose(out[f"{case}__decoded_raw"], (0, 2, 3, 1))
        got = tok.to_uint8(raw)
        # the golden uint8 came from one-image decodes; raw from the batch (README §6: +-1)
        assert np.abs(got.astype(int) - out[f"{case}__decoded_uint8"].astype(int)).max() <= 1


# ------------------------------------------------------------------------------- preprocessing

def test_magvit_squash_is_pil_bicubic_without_crop(tmp_path):
    a = rgb_image(60, 100)
    p = write(tmp_path, "wide.png", a)
    got = image_io.magvit_pixels(p, 32)
    ref = np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BICUBIC)).astype(np.float32)
    np.testing.assert_array_equal(got, (ref / 255 - 0.5) / 0.5)
    assert got.shape == (32, 32, 3) and got.min() >= -1 and got.max() <= 1


def test_amused_floors_to_multiples_of_16(tmp_path):
    a = rgb_image(20, 40)
    got = image_io.amused_pixels(write(tmp_path, "odd.png", a))
    ref = np.asarray(Image.fromarray(a).resize((32, 16), Image.Resampling.LANCZOS)).astype(np.float32) / 255
    assert got.shape == (16, 32, 3)
    np.testing.assert_array_equal(got, ref)
    exact = rgb_image(32, 48)
    np.testing.assert_array_equal(image_io.amused_pixels(write(tmp_path, "ok.png", exact)),
                                  exact.astype(np.float32) / 255)


@pytest.mark.parametrize("mode", ["L", "LA", "1", "P", "RGBA", "CMYK"])
def test_modes_convert_like_pil(tmp_path, mode):
    base = Image.fromarray(rgb_image(16, 16, seed=3))
    img = base.convert(mode)
    if mode == "P":
        img.info["transparency"] = 0
    path = tmp_path / f"img_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path)
    want = np.asarray(Image.open(path).convert("RGB"))
    got = image_io.open_rgb(path)
    assert got.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(got), want)
    assert image_io.amused_pixels(path).shape == (16, 16, 3)
    assert image_io.magvit_pixels(path, 16).shape == (16, 16, 3)


def test_rgba_drops_alpha(tmp_path):
    a = np.concatenate([rgb_image(16, 16), np.zeros((16, 16, 1), np.uint8)], axis=-1)
    p = write(tmp_path, "rgba.png", a, "RGBA")
    np.testing.assert_array_equal(np.asarray(image_io.open_rgb(p)), a[..., :3])


def test_sixteen_bit_is_scaled_not_saturated(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    p = tmp_path / "g16.png"
    Image.fromarray(values).save(p)
    assert Image.open(p).mode.startswith("I;16")
    got = np.asarray(image_io.open_rgb(p))
    np.testing.assert_array_equal(got[0, :, 0], [0, 1, 128, 255])
    assert (got == got[..., :1]).all()


def test_float_images_rejected_with_path(tmp_path):
    p = tmp_path / "float.tiff"
    Image.fromarray(np.zeros((4, 4), np.float32), mode="F").save(p)
    with pytest.raises(ImageError, match=rf"{p}.*mode F"):
        image_io.open_rgb(p)


def test_tiny_images(tmp_path):
    p = write(tmp_path, "one.png", rgb_image(1, 1))
    out = image_io.magvit_pixels(p, 32)                # squashed up: works
    assert out.shape == (32, 32, 3)
    assert np.allclose(out, out[0, 0])
    with pytest.raises(ImageError, match=rf"{p}.*smaller than one 16x16"):
        image_io.amused_pixels(p)
    with pytest.raises(ImageError, match="smaller than one"):
        image_io.amused_pixels(write(tmp_path, "thin.png", rgb_image(8, 64)))


def test_huge_images(tmp_path):
    big = write(tmp_path, "big.png", np.zeros((1500, 2000, 3), np.uint8))
    assert image_io.magvit_pixels(big, 32).shape == (32, 32, 3)
    assert image_io.amused_pixels(big).shape == (1488, 2000, 3)
    with pytest.raises(ImageError, match=rf"{big}: image of 2000x1500 = 3000000 pixels exceeds max_pixels"):
        image_io.magvit_pixels(big, 32, max_pixels=1_000_000)
    assert image_io.magvit_pixels(big, 32, max_pixels=None).shape == (32, 32, 3)


# ------------------------------------------------------------------------------- errors

def test_missing_corrupt_truncated_files_name_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageError, match=rf"{missing}: image file not found"):
        image_io.magvit_pixels(missing)
    with pytest.raises(ImageError, match="not a file"):
        image_io.amused_pixels(tmp_path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not an image" * 10)
    with pytest.raises(ImageError, match=rf"{junk}: not a readable image"):
        image_io.amused_pixels(junk)
    good = write(tmp_path, "good.png", rgb_image(64, 64))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match=rf"{cut}: corrupt or truncated"):
        image_io.magvit_pixels(cut, 32)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=str(empty)):
        image_io.open_rgb(empty)


def test_batch_of_different_sizes_names_the_file(tmp_path, tokenizers):
    a = write(tmp_path, "a.png", rgb_image(32, 32))
    b = write(tmp_path, "b.png", rgb_image(32, 48))
    with pytest.raises(ImageError, match=rf"{b}: size \[32, 48\] differs"):
        tokenizers[1].load_images([a, b])
    assert tokenizers[0].load_images([a, b]).shape == (2, 64, 64, 3)   # squashed: same size


# ------------------------------------------------------------------------------- writing

def test_postprocessing_rules():
    x = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0], np.float32)
    # -M: uint8(clamp((x + 1) / 2, 0, 1) * 255), truncating
    np.testing.assert_array_equal(image_io.magvit_to_uint8(x), [0, 0, 127, 254, 255, 255])
    # -A: round(clip(x, 0, 1) * 255), half to even
    y = np.array([-0.2, 0.0, 0.5, 1.5 / 255, 2.5 / 255, 1.0, 1.7], np.float32)
    np.testing.assert_array_equal(image_io.amused_to_uint8(y), [0, 0, 128, 2, 2, 255, 255])


def test_save_images_round_trip(tmp_path, tokenizers):
    tok = tokenizers[1]
    pixels = rgb_image(32, 48)[None].astype(np.float32) / 255
    [path] = tok.save_images(pixels, [tmp_path / "out" / "x.png"])
    np.testing.assert_array_equal(tok.load_images([path]), pixels)
    with pytest.raises(ImageError, match="expected a uint8"):
        image_io.save_png(np.zeros((4, 4), np.uint8), tmp_path / "bad.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageError, match=rf"{blocker / 'y.png'}: cannot write"):
        image_io.save_png(np.zeros((4, 4, 3), np.uint8), blocker / "y.png")


# ------------------------------------------------------------------------------- -A input crop

def test_amused_crop_sizes_and_choice(tmp_path, tokenizers):
    sizes = image_io.crop_sizes(256)          # spec mmada_a.md §2.2: 49 sizes, 1024x256 .. 256x1024
    assert len(sizes) == 49 and sizes[0] == (1024, 256) and sizes[-1] == (256, 1024)
    assert (512, 512) in sizes and all(w % 32 == 0 and h % 32 == 0 and w * h <= 512 * 512 for w, h in sizes)
    tok = tokenizers[1]
    wide = write(tmp_path, "wide.png", rgb_image(384, 640))
    x = tok.load_image(wide, size=512)        # 640x384 keeps its aspect: a 40x24 token grid
    assert x.shape == (384, 640, 3) and tok.grid(*x.shape[:2]) == (24, 40)
    np.testing.assert_array_equal(x, rgb_image(384, 640).astype(np.float32) / 255)   # no resampling
    square = write(tmp_path, "sq.png", rgb_image(1000, 1000))
    assert tok.load_image(write(tmp_path, "tall.png", rgb_image(1100, 1000)), size=512).shape == (544, 480, 3)
    assert tok.load_image(square, size=512).shape == (512, 512, 3)


def test_amused_crop_random_offset_is_reproducible(tmp_path):
    import random
    img = Image.fromarray(rgb_image(600, 1400))
    a = image_io.amused_crop(img, 512, random.Random(3))
    b = image_io.amused_crop(img, 512, random.Random(3))
    c = image_io.amused_crop(img, 512)                       # centred
    assert a.size == b.size == c.size
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the crop comes from the image bicubic-resized to cover the crop size
    scale = max(a.size[0] / 1400, a.size[1] / 600)
    covered = img.resize((round(1400 * scale), round(600 * scale)), Image.Resampling.BICUBIC)
    left = (covered.size[0] - c.size[0]) // 2
    top = (covered.size[1] - c.size[1]) // 2
    np.testing.assert_array_equal(np.asarray(c), np.asarray(covered)[top:top + c.size[1], left:left + c.size[0]])

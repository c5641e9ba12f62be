"""python -m sample: every subcommand end to end on the tiny checkpoint, and its bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, golden_path, tiny_m_args

pytestmark = pytest.mark.golden


def _run(*args):
    return subprocess.run([sys.executable, "-m", "sample", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def _run_m(command, *args):
    """``_run`` on the tiny random MMaDA (with its test input image where none is given)."""
    given = set(args)
    image = () if given & {"--image", "--prompts"} else ("--image", ROOT / "tests/fixtures/demo_input.png")
    prompt = () if given & {"--prompt", "--prompts"} else ("--prompt", "Make the sky at sunset orange.")
    return _run(command, *tiny_m_args(), *image, *prompt, *args)


def _check_outputs(directory, image=True, trajectory=True):
    record = json.loads((directory / "record.json").read_text())
    assert (directory / "text.txt").exists()
    if image:
        png = np.asarray(Image.open(directory / "image.png"))
        assert png.dtype == np.uint8 and png.ndim == 3 and png.shape[2] == 3
    if trajectory:
        gif = Image.open(directory / "trajectory.gif")
        assert gif.n_frames > 2
    return record


def test_parallel_end_to_end(tmp_path):
    golden_path("mmada_tiny")
    out = _run_m("parallel", "--out", tmp_path, "--trajectory", "--text-steps", 16, "--image-steps", 4,
               "--text-len", 24)
    assert out.returncode == 0, out.stderr
    assert "compiled the sampler" in out.stdout and "steps/s" in out.stdout
    record = _check_outputs(tmp_path / "0000")
    assert record["task"] == "parallel_m" and record["text_steps"] == 16 and record["image_cfg"] == 4.0
    assert len(record["image_codes"]) == record["grid"][0] * record["grid"][1]


def test_parallel_jsonl_batch(tmp_path):
    image = ROOT / "tests/fixtures/demo_input.png"
    lines = [{"prompt": "Make it night.", "image": str(image), "id": "night"},
             {"prompt": "Add a red door to the house please", "image": str(image), "id": "door"},
             {"prompt": "Snow.", "image": str(image), "id": "snow"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    out = _run_m("parallel", "--prompts", tmp_path / "p.jsonl", "--batch-size", 2, "--out", tmp_path / "o",
               "--text-steps", 8, "--image-steps", 2, "--text-len", 16, "--seed", 3)
    assert out.returncode == 0, out.stderr
    for name in ("night", "door", "snow"):
        _check_outputs(tmp_path / "o" / name, trajectory=False)
    # the same request alone (batch 1) gives the same result: keys come from (seed, sample index)
    alone = _run_m("parallel", "--prompts", tmp_path / "p.jsonl", "--batch-size", 1, "--out", tmp_path / "a",
                 "--text-steps", 8, "--image-steps", 2, "--text-len", 16, "--seed", 3)
    assert alone.returncode == 0, alone.stderr
    for name in ("night", "door", "snow"):
        a = json.loads((tmp_path / "o" / name / "record.json").read_text())
        b = json.loads((tmp_path / "a" / name / "record.json").read_text())
        assert a["image_codes"] == b["image_codes"] and a["text"] == b["text"]


@pytest.mark.parametrize("command,image", [("t2i", True), ("mmu", True), ("text", False)])
def test_other_samplers_end_to_end(tmp_path, command, image):
    extra = ("--steps", 4) if command == "t2i" else ("--gen-length", 16, "--steps", 8, "--block-length", 8)
    out = _run(command, "--out", tmp_path, "--trajectory", *extra)
    assert out.returncode == 0, out.stderr
    record = _check_outputs(tmp_path / "0000", image=image)
    assert record["task"] == command


def test_bad_inputs(tmp_path):
    out = _run_m("parallel", "--image", tmp_path / "missing.png", "--out", tmp_path)
    assert out.returncode == 2 and "missing.png" in out.stderr
    long = "word " * 100
    out = _run_m("parallel", "--prompt", long, "--out", tmp_path, "--max-prompt-tokens", 50)
    assert out.returncode == 2 and "more than the budget of 50" in out.stderr and "--truncate" in out.stderr
    out = _run_m("parallel", "--prompt", long, "--out", tmp_path, "--max-prompt-tokens", 50, "--truncate",
               "--text-steps", 4, "--image-steps", 1, "--text-len", 8)
    assert out.returncode == 0 and "truncated to 50" in out.stdout
    out = _run("parallel", "--checkpoint", golden_path("mmada_tiny_fullvocab"), "--vq", golden_path("magvitv2_tiny"),
               "--tokenizer", ROOT / "tests/fixtures/tiny_tokenizer", "--image", ROOT / "tests/fixtures/demo_input.png",
               "--prompt", "x", "--out", tmp_path)
    assert out.returncode == 2 and "do not fit together" in out.stderr
    out = _run("text", "--checkpoint", golden_path("mmada_tiny_fullvocab"),
               "--tokenizer", ROOT / "tests/fixtures/tiny_tokenizer", "--prompt", "x", "--out", tmp_path)
    assert out.returncode == 2 and "tokenizer" in out.stderr and "do not" in out.stderr
    (tmp_path / "bad.jsonl").write_text('{"image": "x.png"}\n')
    out = _run_m("parallel", "--prompts", tmp_path / "bad.jsonl", "--out", tmp_path)
    assert out.returncode == 2 and "bad.jsonl:1" in out.stderr


def test_logits_command():
    out = _run("logits")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("top-5:") == 8
    out = _run("logits", "--ids", "1 2 3")
    assert out.returncode == 2 and "no mask token" in out.stderr
    out = _run("logits", "--checkpoint", "/nonexistent/ckpt")
    assert out.returncode == 2 and "/nonexistent/ckpt" in out.stderr


def test_parallel_on_a_mesh_matches_one_device(tmp_path):
    """--mesh shards the weights over the 8 fake devices (XLA_FLAGS from conftest) and samples the same."""
    args = ("parallel", "--text-steps", 8, "--image-steps", 2, "--text-len", 16, "--seed", 5)
    one = _run_m(*args, "--out", tmp_path / "one")
    sharded = _run_m(*args, "--out", tmp_path / "mesh", "--mesh", "data=2,fsdp=4")
    assert one.returncode == 0 and sharded.returncode == 0, sharded.stderr
    a = json.loads((tmp_path / "one/0000/record.json").read_text())
    b = json.loads((tmp_path / "mesh/0000/record.json").read_text())
    assert a["image_codes"] == b["image_codes"] and a["text"] == b["text"]


A_SMALL = ("--height", 64, "--width", 48, "--timesteps", 4, "--text_steps", 8, "--text_gen_length", 16,
           "--input-size", 64)


def test_parallel_a_end_to_end(tmp_path):
    """MMaDA-Parallel-A with the reference's flag names: PNG of --height x --width (the decoding
    of the recorded codes), text, record and trajectory GIF."""
    from mmada_jax.vq import load_vq
    from sample.__main__ import TINY_A
    out = _run("parallel", "--model", "a", *A_SMALL, "--cfg_scale", 1.0, "--cfg_img", 4.0, "--temperature", 1.0,
               "--text_temperature", 0.5, "--seed", 42, "--text_block_length", 8, "--trajectory",
               "--output_dir", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "dimoo_tiny" in out.stdout and "ignored" in out.stdout and "steps/s" in out.stdout
    record = _check_outputs(tmp_path / "0000")
    assert record["task"] == "parallel_a" and record["image_steps"] == 4 and record["instruction_cfg"] == 1.0
    vq = load_vq(TINY_A["vq"])          # the VQ the CLI used by default
    grid = vq.grid(record["height"], record["width"])
    assert (record["height"], record["width"]) == (64, 48) and len(record["image_codes"]) == grid[0] * grid[1]
    png = np.asarray(Image.open(tmp_path / "0000/image.png"))
    assert png.shape == (64, 48, 3)
    decoded = vq.to_uint8(vq.decode(np.asarray([record["image_codes"]]), grid=grid))[0]
    np.testing.assert_array_equal(png, decoded)


@pytest.mark.slow      # ~30 s; the sampler-level equality is tests/test_sampling_a.py's (default suite)
def test_parallel_a_batch_equals_single(tmp_path):
    """Requests of different prompt lengths and input aspect ratios: batch 3 = batch 1."""
    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 90, 3), dtype=np.uint8)).save(wide)
    demo = ROOT / "tests/fixtures/demo_input.png"
    lines = [{"prompt": "Make it night.", "image": str(demo), "id": "night"},
             {"prompt": "Add a red door to the little house", "image": str(wide), "id": "door"},
             {"prompt": "Snow.", "image": str(wide), "id": "snow"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    runs = {}
    for size in (3, 1):
        out = _run("parallel", "--model", "a", "--prompts", tmp_path / "p.jsonl", *A_SMALL, "--cfg_scale", 2.0,
                   "--text_temperature", 0.7, "--seed", 3, "--batch-size", size, "--out", tmp_path / str(size))
        assert out.returncode == 0, out.stderr
        runs[size] = {x["id"]: json.loads((tmp_path / str(size) / x["id"] / "record.json").read_text()) for x in lines}
    assert runs[3]["door"]["input_grid"] != runs[3]["night"]["input_grid"]
    for name in runs[1]:
        assert runs[3][name]["image_codes"] == runs[1][name]["image_codes"], name
        assert runs[3][name]["text"] == runs[1][name]["text"], name


def test_parallel_a_bad_inputs(tmp_path):
    out = _run("parallel", "--model", "a", "--text-cfg", 2.0, "--out", tmp_path)
    assert out.returncode == 2 and "--text-cfg: not for" in out.stderr and "'dimoo'" in out.stderr
    out = _run_m("parallel", "--height", 64, "--out", tmp_path)
    assert out.returncode == 2 and "--height: not for" in out.stderr and "'mmada'" in out.stderr
    out = _run("t2i", "--image", ROOT / "tests/fixtures/demo_input.png", "--out", tmp_path)
    assert out.returncode == 2 and "--image: not for" in out.stderr
    out = _run("parallel", "--checkpoint", golden_path("dimoo_tiny"), "--model", "m", "--out", tmp_path)
    assert out.returncode == 2 and "'dimoo'" in out.stderr
    # past the config's max_sequence_length the sampler still runs (RoPE positions are computed for
    # any length, as the reference rebuilds its table) and says so
    out = _run("parallel", "--model", "a", *A_SMALL[:4], "--text_gen_length", 4000, "--text_steps", 2,
               "--timesteps", 1, "--out", tmp_path / "long")
    assert out.returncode == 0, out.stderr
    assert "max_sequence_length" in out.stdout and "Make the sky" in out.stdout


@pytest.mark.parametrize("image", [False, True])
def test_t2i_a_end_to_end(tmp_path, image):
    """Lumina-DiMOO / MMaDA-Parallel-A text-to-image, and image-to-image with --image."""
    extra = ("--image", ROOT / "tests/fixtures/demo_input.png", "--input-size", 64) if image else ()
    out = _run("t2i", "--model", "a", "--height", 48, "--width", 64, "--steps", 4, "--trajectory", "--out", tmp_path,
               *extra)
    assert out.returncode == 0, out.stderr
    record = _check_outputs(tmp_path / "0000")
    assert record["task"] == "image_a" and record["mode"] == ("i2i" if image else "t2i")
    assert len(record["image_codes"]) == 3 * 4
    assert record["guidance"] == (2.5 if image else 4.0) and record["steps"] == 4
    assert np.asarray(Image.open(tmp_path / "0000/image.png")).shape == (48, 64, 3)

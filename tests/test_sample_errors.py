"""python -m sample misused as a careful user would: every bad input gets a named error (exit 2)
before any weights are read, nothing is written outside --out, nothing earlier is overwritten
without --overwrite. One table, run in-process (the CLI's ``main``) so the rows share compiles."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import ROOT, golden_path

pytestmark = pytest.mark.golden
DEMO = str(ROOT / "tests/fixtures/demo_input.png")
FAST = ["--text-steps", "4", "--image-steps", "1", "--text-len", "8"]


def _main(argv, capsys):
    from sample.__main__ import main
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:          # argparse
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def _jsonl(path, lines):
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else json.dumps(x).encode() for x in lines) + b"\n")
    return path


def _good(i="a"):
    return {"prompt": "Make it night.", "image": DEMO, "id": i}


# (name, files to write: {name: lines}, argv after "parallel" (tmp/... paths as {tmp}), message, status)
ROWS = [
    ("id with ..", {"p.jsonl": [{"prompt": "x", "image": DEMO, "id": "../x"}]}, ["--prompts", "{tmp}/p.jsonl"],
     "p.jsonl:1: id '../x' is not a safe folder name", 2),
    ("absolute id", {"p.jsonl": [{"prompt": "x", "image": DEMO, "id": "/tmp/abs"}]}, ["--prompts", "{tmp}/p.jsonl"],
     "id '/tmp/abs' is not a safe folder name", 2),
    ("id of a wrong type", {"p.jsonl": [{"prompt": "x", "image": DEMO, "id": [1]}]}, ["--prompts", "{tmp}/p.jsonl"],
     "'id' must be a string or an integer", 2),
    ("duplicate ids", {"p.jsonl": [_good("a"), _good("a")]}, ["--prompts", "{tmp}/p.jsonl"],
     "p.jsonl:2: id 'a' is also the id of line 1", 2),
    ("every bad line listed", {"p.jsonl": [b"{not json", _good("ok"), {"image": DEMO}, b'{"prompt": "\xff"}']},
     ["--prompts", "{tmp}/p.jsonl"], "3 bad request(s)", 2),
    ("line not UTF-8", {"p.jsonl": [b'{"prompt": "caf\xe9", "image": "x"}']}, ["--prompts", "{tmp}/p.jsonl"],
     "p.jsonl:1: not valid UTF-8", 2),
    ("prompt not UTF-8", {}, ["--prompt", b"caf\xe9".decode("utf-8", "surrogateescape")], "--prompt: not valid UTF-8", 2),
    ("missing image", {}, ["--image", "{tmp}/missing.png", "--prompt", "Make it blue."], "missing.png: image file not found",
     2),
    ("negative batch size", {}, ["--batch-size", "-2"], "--batch-size must be at least 1", 2),
    ("zero steps", {}, ["--text-steps", "0"], "text_steps must be at least 1", 2),
    ("image steps over text steps", {}, ["--text-steps", "4", "--image-steps", "9"],
     "image_steps (9) cannot exceed text_steps (4)", 2),
    ("text budget 1", {}, ["--text-len", "1"], "text_len must be at least 2", 2),
    ("nan guidance", {}, ["--image-cfg", "nan"], "image_cfg must be a finite number", 2),
    ("zero resolution", {}, ["--resolution", "0"], "resolution must be at least 16", 2),
    ("seed over 2^32", {}, ["--seed", str(2**64)], "--seed must lie in [0, 2**32)", 2),
    ("negative seed", {}, ["--seed", "-1"], "--seed must lie in", 2),
    ("out is a file", {"file.txt": [b"x"]}, ["--out", "{tmp}/file.txt"], "exists and is not a folder", 2),
    ("out cannot be made", {"file.txt": [b"x"]}, ["--out", "{tmp}/file.txt/sub"], "cannot write there", 2),
    ("over-long prompt", {}, ["--prompt", "word " * 80, "--max-prompt-tokens", "20"],
     "more than the budget of 20", 2),
]


@pytest.mark.parametrize("name,files,argv,message,status", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(tmp_path, capsys, name, files, argv, message, status):
    for fname, lines in files.items():
        _jsonl(tmp_path / fname, lines)
    argv = [a.replace("{tmp}", str(tmp_path)) if isinstance(a, str) else a for a in argv]
    out_dir = tmp_path / "out"
    if "--out" not in argv:
        argv += ["--out", out_dir]
    before = sorted(os.listdir(tmp_path))
    got, stdout, stderr = _main(["parallel", *argv], capsys)
    assert got == status, (stdout, stderr)
    assert message in stderr, stderr
    assert "compiled the sampler" not in stdout            # stopped before any sampling
    assert not (tmp_path.parent / "x").exists() and not os.path.exists("/tmp/abs")
    assert sorted(os.listdir(tmp_path)) in (before, sorted(before + ["out"]))
    if out_dir.exists():
        assert [p for p in out_dir.iterdir() if not p.name.startswith(".")] == []


def test_integer_ids_skip_bad_rerun_and_overwrite(tmp_path, capsys):
    prompts = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Snow.", "image": DEMO, "id": 7}, b"{broken",
                                             {"prompt": "x", "image": str(tmp_path / "nope.png"), "id": "b"}])
    out = tmp_path / "out"
    status, stdout, stderr = _main(["parallel", "--prompts", prompts, "--out", out, "--skip-bad", "--truncate",
                                    *FAST], capsys)
    assert status == 0, stderr
    assert (out / "7" / "image.png").exists() and json.loads((out / "7/record.json").read_text())["id"] == "7"
    bad = [json.loads(line) for line in (out / "bad_requests.jsonl").read_text().splitlines()]
    assert len(bad) == 2 and "p.jsonl:2" in bad[0]["error"] and "nope.png" in bad[1]["error"]
    record = json.loads((out / "7/record.json").read_text())
    assert record["truncate"] is True
    first = (out / "7/record.json").read_bytes()
    # a rerun into the same --out is refused and changes nothing ...
    status, _, stderr = _main(["parallel", "--prompts", prompts, "--out", out, "--skip-bad", *FAST], capsys)
    assert status == 2 and "already holds" in stderr and "--overwrite" in stderr
    assert (out / "7/record.json").read_bytes() == first
    # ... unless --overwrite, which replaces the sample once its new files are complete
    status, _, stderr = _main(["parallel", "--prompts", prompts, "--out", out, "--skip-bad", "--overwrite",
                               "--seed", "1", *FAST], capsys)
    assert status == 0, stderr
    assert json.loads((out / "7/record.json").read_text())["seed"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["7", "bad_requests.jsonl"]


def test_last_trajectory_frame_is_the_output_image():
    """The GIF's last frame draws the codes of image.png (the sampler fills the cells its last step
    left masked), not the last step's sequence with a masked tile."""
    from mmada_jax.app.outputs import trajectory_frames
    from mmada_jax.config import TokenIds

    tokens = TokenIds.mmada(shift=125952, codebook_size=64)
    decoded = []

    class VQ:
        def decode(self, codes, grid):
            decoded.append(np.asarray(codes))
            return np.zeros((len(codes), 8 * grid[0], 8 * grid[1], 3), np.float32)

        def to_uint8(self, x):
            return np.zeros(x.shape, np.uint8)

    trajectory = np.full((3, 6), tokens.mask_id, np.int32)
    trajectory[1:, :3] = tokens.image_offset + 5
    trajectory[2, 3] = tokens.image_offset + 6          # one cell still masked after the last step
    final = np.asarray([5, 5, 5, 6, 7, 8])
    trajectory_frames(trajectory, tokenizer=None, vq=VQ(), tokens=tokens, image_positions=np.arange(6), grid=(2, 3),
                      final_codes=final)
    np.testing.assert_array_equal(decoded[0][-1], final)
    assert (decoded[0][0] == 0).all()                    # earlier frames: masked cells drawn as code 0 (grey)


def test_t2i_a_runs_at_its_default_size(tmp_path, capsys):
    """Lumina-DiMOO's default 1024x1024 output (with the visible tiny aMUSEd VQ, downsampling 16:
    4,246 tokens with the prompt) can lie past the config's max_sequence_length (4096): it runs
    (the RoPE positions are computed for any length, as the reference rebuilds its table) and says
    so. Token counts come from the golden VQ / checkpoint."""
    from mmada_jax import load_config, load_vq
    ckpt, vq_dir = golden_path("dimoo_tiny"), golden_path("amused_vq_tiny")
    vq, config = load_vq(vq_dir), load_config(ckpt)
    status, stdout, stderr = _main(["t2i", "--model", "a", "--checkpoint", ckpt, "--vq", vq_dir,
                                    "--tokenizer", ROOT / "tests/fixtures/tiny_tokenizer_a",
                                    "--prompt", "Make the sky at sunset orange.", "--steps", "1",
                                    "--out", tmp_path / "out"], capsys)
    assert status == 0, stderr
    record = json.loads((tmp_path / "out/0000/record.json").read_text())
    assert (record["height"], record["width"]) == (1024, 1024)
    assert len(record["image_codes"]) == vq.num_tokens(1024, 1024)
    if vq.num_tokens(1024, 1024) >= config.max_sequence_length:   # with the prompt: past it
        assert "longer than the model's max_sequence_length" in stdout

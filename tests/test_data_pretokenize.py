"""pretokenize: records equal vq.encode / tokenizer.encode of the sources; bad data is reported."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

import mmada_jax
from mmada_jax.data import records, synthetic
from mmada_jax.data.pretokenize import BadExampleError, pretokenize
from mmada_jax.tokenizer import load_tokenizer

from conftest import ROOT, golden_path

TOKENIZER = ROOT / "tests/fixtures/tiny_tokenizer"
TEXT_LEN = 512
NUM = 10


@pytest.fixture(scope="module")
def models():
    ckpt, vq_dir = golden_path("mmada_tiny"), golden_path("magvitv2_tiny")
    config = mmada_jax.load_config(ckpt)
    vq = mmada_jax.load_vq(vq_dir)
    size = _vq_size(vq)   # pretokenize's default: the VQ's own image size
    return {"checkpoint": ckpt, "vq": vq_dir, "tokenizer": TOKENIZER, "size": size,
            "num_image_tokens": vq.num_tokens(size, size), "grid": list(vq.grid(size, size)),
            "config": config, "tok": load_tokenizer(TOKENIZER, config), "vq_model": vq}


def _vq_size(vq):
    """Image side for a VQ: its configured ``image_size`` if it has one, else 4 x its downsampling."""
    return int(getattr(vq.config, "image_size", None) or 4 * vq.downsample)


def _kw(models):
    return {k: models[k] for k in ("checkpoint", "vq", "tokenizer")}


@pytest.fixture(scope="module")
def source(models, tmp_path_factory):
    src = tmp_path_factory.mktemp("syn")
    synthetic.write_dataset(src, NUM, seed=0, size=models["size"], t2i_fraction=0.4)
    return src


@pytest.fixture(scope="module")
def written(models, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    logs = []
    summary = pretokenize(source, out, **_kw(models), text_len=TEXT_LEN, batch_size=4, shard_size=4,
                          log=logs.append, progress_every=0.0)
    return out, summary, logs


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_records_equal_encodings(models, source, written):
    out, summary, logs = written
    assert summary.written == {"train": NUM} and summary.skipped == 0
    assert any("ex/s" in m and "ETA" in m for m in logs)
    assert (out / "bad_examples.jsonl").read_text() == ""
    assert json.loads((out / "summary.json").read_text())["written_total"] == NUM
    builder = records.open_pretokenized(out)
    assert builder.info.splits["train"].num_shards == math.ceil(NUM / 4)
    meta = records.metadata(builder)
    assert records.describe(out) == {**meta, "splits": {"train": NUM}}
    tokens = models["config"].tokens
    assert meta["text_len"] == TEXT_LEN and meta["num_image_tokens"] == models["num_image_tokens"]
    assert meta["image_size"] == models["size"] and meta["grid"] == models["grid"]
    assert (meta["bos_id"], meta["eos_id"]) == (tokens.bos_id, tokens.eos_id)
    src = builder.as_data_source("train")
    srcs = _lines(source / "examples.jsonl")
    assert [r["id"].decode() for r in src] == [s["id"] for s in srcs]     # source order

    vq, tok = models["vq_model"], models["tok"]
    assert sum("input_image" not in s for s in srcs) >= 1 and sum("input_image" in s for s in srcs) >= 1
    # expected codes: every image (outputs, inputs, a black one) in one encode call
    paths = ([source / s["output_image"] for s in srcs]
             + [source / s["input_image"] for s in srcs if "input_image" in s] + [_black(source, models["size"])])
    codes = dict(zip(paths, np.asarray(vq.encode(vq.load_images(paths, size=models["size"])))))
    for rec, s in zip(src, srcs):
        assert rec["input_image_codes"].dtype == np.int32 and rec["input_image_codes"].shape == (models["num_image_tokens"],)
        np.testing.assert_array_equal(rec["output_image_codes"], codes[source / s["output_image"]])
        in_path = source / s["input_image"] if "input_image" in s else _black(source, models["size"])
        np.testing.assert_array_equal(rec["input_image_codes"], codes[in_path])
        assert bool(rec["has_input_image"]) == ("input_image" in s)
        assert bool(rec["has_instruction"]) == ("instruction" in s)
        want_instr = tok.encode(s["instruction"]) if "instruction" in s else []
        np.testing.assert_array_equal(rec["instruction_ids"], want_instr)
        np.testing.assert_array_equal(rec["reasoning_ids"], tok.encode(s["reasoning"]))
        assert rec["reasoning_ids"].dtype == np.int32


def _black(folder, size):
    from PIL import Image
    path = folder / "black.png"
    if not path.exists():
        Image.new("RGB", (size, size)).save(path)
    return path


def test_readable_by_name_and_through_the_pipeline(models, written):
    import tensorflow_datasets as tfds
    import mmada_jax.data.builder  # noqa: F401 - registers the builder name
    from mmada_jax.data.pipeline import make_dataset
    out, _, _ = written
    src = tfds.data_source(records.DATASET_NAME, split="train", data_dir=str(out))
    assert len(src) == NUM
    ds = make_dataset(out, "train", batch_size=4, text_len=TEXT_LEN, seed=0, num_epochs=1,
                      checkpoint=models["checkpoint"], process_index=0, process_count=1)
    batches = list(ds)
    assert len(batches) == NUM // 4
    b = batches[0]
    assert b["input_text"].shape == (4, TEXT_LEN) and b["output_image_codes"].shape == (4, models["num_image_tokens"])
    assert (b["output_text"][:, 0] == models["config"].tokens.bos_id).all()


def test_validation_split(models, source, tmp_path):
    s = pretokenize(source, tmp_path, **_kw(models), text_len=TEXT_LEN, val_fraction=0.3, log=lambda m: None)
    assert s.written == {"train": 7, "validation": 3}
    b = records.open_pretokenized(tmp_path)
    ids = [{r["id"] for r in b.as_data_source(split)} for split in ("train", "validation")]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == NUM
    with pytest.raises(FileExistsError, match="--overwrite"):
        pretokenize(source, tmp_path, **_kw(models), text_len=TEXT_LEN, log=lambda m: None)


@pytest.fixture
def bad_source(source, tmp_path):
    """Eight lines from the synthetic set, six of them broken in different ways, plus bad JSON."""
    bad = tmp_path / "bad"
    shutil.copytree(source / "images", bad / "images")
    good_png = (bad / "images/syn000001_out.png").read_bytes()
    (bad / "images/truncated.png").write_bytes(good_png[: len(good_png) // 3])
    (bad / "images/garbage.png").write_bytes(b"this is not a png")
    recs = _lines(source / "examples.jsonl")[:8]
    recs[1]["output_image"] = "images/missing.png"          # missing file (pass 1)
    recs[2]["output_image"] = "images/garbage.png"          # unreadable (pass 2)
    recs[3]["input_image"] = "images/truncated.png"         # corrupt (pass 2)
    del recs[4]["reasoning"]                                # missing required field
    recs[5]["instruction"] = "x" * (TEXT_LEN - 1)           # over-long with BOS/EOS
    del recs[6]["output_image"]
    with open(bad / "examples.jsonl", "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
        f.write("{not json\n")
    return bad, recs


EXPECTED_BAD = {
    "syn000001": "output_image file not found", "syn000002": "unreadable image",
    "syn000003": "corrupt or truncated", "syn000004": "missing reasoning",
    "syn000005": "instruction too long", "syn000006": "missing output_image",
    "examples.jsonl:9": "invalid JSON",
}


def test_bad_examples_reported_and_skipped(models, bad_source, tmp_path, capsys):
    from train.pretokenize import main
    src, recs = bad_source
    out = tmp_path / "out"
    rc = main([str(src), str(out), "--checkpoint", str(models["checkpoint"]), "--vq", str(models["vq"]),
               "--tokenizer", str(TOKENIZER), "--text-len", str(TEXT_LEN), "--batch-size", "2"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    listed = {b["id"]: b["reason"] for b in _lines(out / "bad_examples.jsonl")}
    assert set(listed) == set(EXPECTED_BAD)
    for ex_id, reason in EXPECTED_BAD.items():
        assert reason in listed[ex_id], (ex_id, listed[ex_id])
        assert f"bad example {ex_id!r}" in cap.err and "skipped" in cap.err
    assert "wrote 2 examples" in cap.out and "skipped 7 bad" in cap.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written_total"] == 2 and summary["skipped"] == 7 and summary["lines"] == 9
    kept = [r["id"].decode() for r in records.open_pretokenized(out).as_data_source("train")]
    assert kept == ["syn000000", "syn000007"]


@pytest.mark.parametrize("which", ["pass1", "pass2"])
def test_on_bad_stop_exits_nonzero_naming_the_id(models, bad_source, tmp_path, capsys, which):
    from train.pretokenize import main
    src, recs = bad_source
    lines = (src / "examples.jsonl").read_text().splitlines()
    # pass 1 stops at the missing file of line 2; pass 2 (image decoding) at the garbage image of line 3
    keep = lines[:2] if which == "pass1" else [lines[0], lines[2]]
    (src / "subset.jsonl").write_text("\n".join(keep) + "\n")
    out = tmp_path / "out"
    rc = main([str(src / "subset.jsonl"), str(out), "--checkpoint", str(models["checkpoint"]),
               "--vq", str(models["vq"]), "--tokenizer", str(TOKENIZER), "--text-len", str(TEXT_LEN),
               "--on-bad", "stop"])
    err = capsys.readouterr().err
    bad_id = "syn000001" if which == "pass1" else "syn000002"
    assert rc == 1
    assert f"stopped at bad example {bad_id!r}" in err
    assert [b["id"] for b in _lines(out / "bad_examples.jsonl")] == [bad_id]
    assert not (out / records.DATASET_NAME).exists()        # nothing half-written
    with pytest.raises(BadExampleError, match=bad_id):
        pretokenize(src / "subset.jsonl", tmp_path / "again", **_kw(models), text_len=TEXT_LEN, on_bad="stop",
                    log=lambda m: None)


def test_parallel_a_records_and_metadata(tmp_path):
    """A dimoo checkpoint: aMUSEd codes of the -A crop, the system prompt in the metadata, and a
    non-square image (whose -A crop is not square) reported bad by name."""
    from PIL import Image
    ckpt, vq_dir = golden_path("dimoo_tiny"), golden_path("amused_vq_tiny")
    vq = mmada_jax.load_vq(vq_dir)
    size = _vq_size(vq)
    src = tmp_path / "src"
    synthetic.write_dataset(src, 3, seed=0, size=size, t2i_fraction=0.0)
    lines = _lines(src / "examples.jsonl")
    Image.new("RGB", (2 * size, size * 5 // 8), "red").save(src / "images" / "wide.png")
    lines[1]["output_image"] = "images/wide.png"
    (src / "examples.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    tokenizer = ROOT / "tests/fixtures/tiny_tokenizer_a"
    summary = pretokenize(src, tmp_path / "out", checkpoint=ckpt, vq=vq_dir, tokenizer=tokenizer, text_len=TEXT_LEN,
                          image_size=size, system_prompt="Edit it.", log=lambda *_: None)
    assert summary.written == {"train": 2} and [b.id for b in summary.bad] == [lines[1]["id"]]
    assert "crops to" in summary.bad[0].reason and "wide.png" in summary.bad[0].reason
    meta = records.describe(tmp_path / "out")
    tok = load_tokenizer(tokenizer, mmada_jax.load_config(ckpt))
    assert meta["system_prompt"] == "Edit it." and meta["system_ids"] == tok.encode("Edit it.")
    assert meta["model_kind"] == "dimoo" and meta["grid"] == list(vq.grid(size, size))
    assert meta["num_image_tokens"] == vq.num_tokens(size, size) and meta["image_size"] == size
    source = records.open_pretokenized(tmp_path / "out").as_data_source("train")
    first = source[0]
    pixels = vq.load_image(src / lines[0]["output_image"], size=size)
    np.testing.assert_array_equal(first["output_image_codes"], np.asarray(vq.encode(pixels[None]))[0])
    with pytest.raises(ValueError, match="uses magvitv2"):
        pretokenize(src, tmp_path / "o2", checkpoint=golden_path("mmada_tiny"), vq=vq_dir, tokenizer=TOKENIZER,
                    text_len=TEXT_LEN, log=lambda *_: None)

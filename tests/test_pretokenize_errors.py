"""train.pretokenize keeps the user's data safe: --overwrite swaps the new dataset in only after
success (a failed run leaves the old one byte-identical), and an output folder that is, lies
inside or holds the source is refused."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from conftest import ROOT, golden_path
from mmada_jax.data import records, synthetic
from mmada_jax.data.pretokenize import pretokenize

TOKENIZER = ROOT / "tests/fixtures/tiny_tokenizer"


def _args(models_dir=None):
    return ["--checkpoint", str(golden_path("mmada_tiny")), "--vq", str(golden_path("magvitv2_tiny")),
            "--tokenizer", str(TOKENIZER), "--text-len", "512"]


def _size() -> int:
    """Image side for the golden VQ: its configured size (pretokenize's default), else 4 x its downsampling."""
    from mmada_jax import load_vq
    vq = load_vq(golden_path("magvitv2_tiny"))
    return int(getattr(vq.config, "image_size", None) or 4 * vq.downsample)


def _hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(source of 8 examples, its pretokenized dataset)."""
    root = tmp_path_factory.mktemp("pretok_errors")
    synthetic.write_dataset(root / "src", 8, seed=4, size=_size())
    pretokenize(root / "src", root / "data", checkpoint=golden_path("mmada_tiny"), vq=golden_path("magvitv2_tiny"),
                tokenizer=TOKENIZER, text_len=512, log=lambda *_: None)
    return root / "src", root / "data"


@pytest.fixture
def old_dataset(made, tmp_path):
    dst = tmp_path / "out" / "dst"
    shutil.copytree(made[1], dst)
    return dst


@pytest.mark.parametrize("on_bad,status", [("skip", 2), ("stop", 1)])
def test_failed_overwrite_keeps_the_old_dataset(made, old_dataset, tmp_path, capsys, on_bad, status):
    from train.pretokenize import main
    src = tmp_path / "bad"
    shutil.copytree(made[0] / "images", src / "images")
    lines = [json.loads(x) for x in (made[0] / "examples.jsonl").read_text().splitlines()]
    for rec in lines:
        del rec["reasoning"]                      # no usable example at all
    (src / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = _hashes(old_dataset)
    rc = main([str(src), str(old_dataset), "--overwrite", "--on-bad", on_bad] + _args())
    err = capsys.readouterr().err
    assert rc == status, err
    assert ("no usable examples" if on_bad == "skip" else "stopped at bad example") in err
    assert _hashes(old_dataset) == before                      # byte-identical
    report = err.rsplit("see ", 1)[1].strip().rstrip(")")      # the failed run's bad-example list
    assert report.endswith("bad_examples.jsonl") and json.loads(open(report).readline())["reason"] == "missing reasoning"
    # beside DST: only the folder holding that report; no half-written dataset anywhere
    leftovers = [p for p in old_dataset.parent.iterdir() if p != old_dataset]
    assert [list(p.rglob("*")) for p in leftovers] == [[p / "bad_examples.jsonl"] for p in leftovers]


@pytest.mark.parametrize("where", ["equal", "inside", "containing"])
def test_output_must_lie_apart_from_the_source(made, tmp_path, capsys, where):
    from train.pretokenize import main
    src = tmp_path / "src"
    shutil.copytree(made[0], src)
    dst = {"equal": src, "inside": src / "tok", "containing": tmp_path}[where]
    before = _hashes(tmp_path)
    rc = main([str(src), str(dst), "--overwrite"] + _args())
    err = capsys.readouterr().err
    assert rc == 2 and str(src) in err and str(dst) in err and "apart from the source" in err, err
    assert _hashes(tmp_path) == before and not (src / "tok").exists()


def test_overwrite_replaces_the_dataset(made, old_dataset, tmp_path, capsys):
    from train.pretokenize import main
    (old_dataset / "notes.txt").write_text("mine")            # not pretokenize's: left alone
    src = tmp_path / "new"
    synthetic.write_dataset(src, 4, seed=9, size=_size())
    rc = main([str(src), str(old_dataset), "--overwrite"] + _args())
    assert rc == 0, capsys.readouterr().err
    assert records.describe(old_dataset)["splits"] == {"train": 4}
    assert records.describe(old_dataset)["source"] == str((src / "examples.jsonl").resolve())
    assert (old_dataset / "notes.txt").read_text() == "mine"
    assert json.loads((old_dataset / "summary.json").read_text())["written_total"] == 4
    assert [p.name for p in old_dataset.parent.iterdir()] == ["dst"]    # no temporary folders left

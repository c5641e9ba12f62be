"""train.sft refuses bad input with a clear message (exit 2) before the model loads, never touches
the data it reads, stops a run whose updates are all skipped without writing checkpoints, and runs
the tiny config from any working directory."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from conftest import ROOT, golden_path
from mmada_jax.data.pretokenize import pretokenize
from mmada_jax.data.synthetic import write_dataset

pytestmark = pytest.mark.golden
CONFIG = ROOT / "configs" / "tiny_sft.yaml"
SHARD = "mmada_parallel_sft/1.0.0/mmada_parallel_sft-train.array_record-00001-of-00002"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 pretokenized examples in two shards of 4 (images at the golden VQ's size, 512-token texts)."""
    from mmada_jax import load_vq
    root = tmp_path_factory.mktemp("train_errors")
    vq = load_vq(golden_path("magvitv2_tiny"))
    write_dataset(root / "raw", 8, seed=3, size=int(getattr(vq.config, "image_size", None) or 4 * vq.downsample))
    pretokenize(root / "raw", root / "data", checkpoint=golden_path("mmada_tiny"), vq=golden_path("magvitv2_tiny"),
                tokenizer=ROOT / "tests/fixtures/tiny_tokenizer", text_len=512, shard_size=4, log=lambda *_: None)
    return root / "data"


def _golden_models():
    """Overrides pointing tiny_sft.yaml at the golden models the dataset was made for."""
    return [f"checkpoint={golden_path('mmada_tiny')}", f"vq={golden_path('magvitv2_tiny')}"]


def _hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _flip_bytes(path):
    data = bytearray(path.read_bytes())
    for i in range(200, len(data), 97):
        data[i] ^= 0xFF
    path.write_bytes(data)


DAMAGE = {
    "corrupt_metadata": lambda d: (d / "mmada_parallel_sft/1.0.0/metadata.json").write_text("{not json"),
    "corrupt_shard": lambda d: _flip_bytes(d / SHARD),
    "truncated_shard": lambda d: (d / SHARD).write_bytes((d / SHARD).read_bytes()[:100_000]),
    "empty_shard": lambda d: (d / SHARD).write_bytes(b""),
}

# description, YAML lines added to a copy of tiny_sft.yaml, command-line overrides, damage to a copy
# of the dataset (None: no data_dir), message fragments ({yaml}, {data} filled in), exit status
ROWS = [
    ("lr negative", "", ["lr=-1"], None, ["command line", "lr=-1.0 must be > 0"], 2),
    ("lr nan", "", ["lr=nan"], None, ["command line", "lr=nan must be a finite number"], 2),
    ("lr a word in the YAML", "  lr: fast\n", [], None, ["{yaml}", "lr='fast' must be a number"], 2),
    ("steps a word on the command line", "", ["steps=ten"], None,
     ["command line: steps='ten' must be an integer"], 2),
    ("warmup longer than the run", "", ["steps=5", "warmup_steps=10"], None,
     ["warmup_steps=10 (command line) must not exceed steps=5 (command line)"], 2),
    ("batch not divisible by grad_accum", "", ["grad_accum=3"], None,
     ["batch_size=8 ({yaml}) is not a multiple of grad_accum=3 (command line)"], 2),
    ("instruction budget under BOS + EOS + 1", "", ["instruction_len=2"], None,
     ["instruction_len=2 (command line) must be 0 (= text_len) or >= 3"], 2),
    ("an instruction over instruction_len", "", ["synthetic=0", "instruction_len=3"], "intact",
     ["instruction_len=3: example", "{data}"], 2),
    ("synthetic and data_dir", "", [], "intact", ["not both", "data_dir=", "synthetic=256 ({yaml})"], 2),
    ("data_dir missing", "", ["synthetic=0", "data_dir={data}/nope"], None, ["{data}/nope", "no such folder"], 2),
    ("metadata corrupt", "", ["synthetic=0"], "corrupt_metadata",
     ["{data}/mmada_parallel_sft/1.0.0/metadata.json", "corrupt"], 2),
    ("shard corrupt", "", ["synthetic=0"], "corrupt_shard", ["{data}/" + SHARD, "corrupt or truncated"], 2),
    ("shard truncated", "", ["synthetic=0"], "truncated_shard", ["{data}/" + SHARD, "corrupt or truncated"], 2),
    ("shard empty", "", ["synthetic=0"], "empty_shard", ["{data}/" + SHARD, "empty shard"], 2),
]


@pytest.mark.parametrize("desc,yaml_extra,overrides,damage,fragments,status", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_before_the_model_loads(dataset, tmp_path, monkeypatch, capsys,
                                                     desc, yaml_extra, overrides, damage, fragments, status):
    import mmada_jax.training.loop as loop
    from train.sft import main

    def no_model(*_, **__):
        raise AssertionError(f"{desc}: the model was loaded")
    monkeypatch.setattr(loop, "build_model", no_model)
    yaml = tmp_path / "cfg" / "tiny.yaml"
    yaml.parent.mkdir()
    yaml.write_text(CONFIG.read_text() + yaml_extra)   # (a later duplicate key wins in PyYAML)
    data = tmp_path / "data"
    if damage is not None:
        shutil.copytree(dataset, data)
        if damage != "intact":
            DAMAGE[damage](data)
        overrides = overrides + [f"data_dir={data}"]
    before = _hashes(data) if damage else None
    out = tmp_path / "run"
    argv = (["--config", str(yaml)] + [o.format(data=data) for o in overrides] + _golden_models()
            + [f"out_dir={out}"])
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == status, (desc, err)
    assert err.startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.format(yaml=yaml, data=data) in err, (desc, fragment, err)
    if damage is not None:
        assert _hashes(data) == before, f"{desc}: data_dir was modified"
    assert not out.exists(), f"{desc}: the run created its out_dir"


@pytest.mark.filterwarnings("ignore:.*shorter than the --text-len")   # text_len=48: a small, quick step
def test_a_run_whose_every_update_is_skipped_fails_without_checkpoints(dataset, tmp_path, monkeypatch, capsys):
    """Non-finite losses: after max_skipped_updates consecutive skips the run stops (exit 2) and
    no checkpoint is written, even though save_every=1."""
    import dataclasses
    import mmada_jax.training.loop as loop
    from train.sft import main
    real = loop.make_objective

    def nan_objective(*args, **kw):
        objective = real(*args, **kw)

        def loss(model, micro, key):
            return {k: v * np.float32("nan") for k, v in objective.loss(model, micro, key).items()}
        return dataclasses.replace(objective, loss=loss)
    monkeypatch.setattr(loop, "make_objective", nan_objective)
    out = tmp_path / "run"
    rc = main(["--config", str(CONFIG), "synthetic=0", f"data_dir={dataset}", "steps=4", "warmup_steps=1",
               "max_skipped_updates=2", "save_every=1", "log_every=1", "text_len=48", f"out_dir={out}",
               *_golden_models()])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "training diverged: 2 consecutive updates skipped (max_skipped_updates=2), steps 1-2" in err, err
    assert "No checkpoint was written" in err
    assert not [p for p in (out / "checkpoints").glob("*") if p.name[0].isdigit()]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [1, 1]


def test_tiny_config_runs_from_another_directory(tmp_path, monkeypatch):
    """configs/tiny_sft.yaml's relative paths resolve against the config file / the repository;
    the saved config records absolute paths; synthetic data goes to out_dir/synthetic_data."""
    from mmada_jax.training import TrainConfig
    from train.sft import main
    monkeypatch.chdir(tmp_path)
    config = TrainConfig.from_yaml(CONFIG, ["out_dir=run"])
    assert config.checkpoint == str(ROOT / "tests/golden/mmada_tiny")
    assert config.tokenizer == str(ROOT / "tests/fixtures/tiny_tokenizer") and config.out_dir == str(tmp_path / "run")
    rc = main(["--config", str(CONFIG), "steps=2", "warmup_steps=1", "synthetic=8", "out_dir=run"])
    assert rc == 0
    assert (tmp_path / "run/checkpoints/2").is_dir()
    assert (tmp_path / "run/synthetic_data/pretokenized").is_dir() and (tmp_path / "run/synthetic_data/raw").is_dir()
    saved = json.loads((tmp_path / "run/checkpoints/2/config/metadata").read_text())
    assert all(saved[k].startswith("/") for k in ("checkpoint", "vq", "tokenizer", "out_dir")), saved

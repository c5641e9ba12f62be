"""Benchmark readers: our JSONL, RISEBench's data_total.json, a ParaBench-style folder, and bad files."""

from __future__ import annotations

import json

import pytest

from mmada_jax.evaluation.benchmarks import load_benchmark, parabench_category


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_our_jsonl_file_and_folder(tmp_path):
    f = _write(tmp_path / "b" / "benchmark.jsonl",
               '{"id": "a", "category": "move", "instruction": "go", "input_image": "images/a.png", "truth": 1}\n\n'
               '{"id": "b", "category": "generation", "instruction": "draw", "input_image": null}\n')
    for path in (f, f.parent):
        bench = load_benchmark(path)
        assert bench.format == "jsonl" and bench.root == f.parent and bench.path == f
        assert [it["id"] for it in bench.items] == ["a", "b"]
        assert bench.items[0]["truth"] == 1 and bench.items[1]["input_image"] is None


def test_risebench_layout(tmp_path):
    records = [{"index": "temporal_reasoning_1", "category": "temporal_reasoning", "instruction": "a year later",
                "image": "temporal_reasoning_images/1.png", "reference": "a rotten banana"},
               {"index": "logical_reasoning_1", "category": "logical_reasoning", "instruction": "solve the maze",
                "image": "logical_reasoning_images/1.jpg", "reference_img": "logical_reasoning_images/1_ref.png"}]
    f = _write(tmp_path / "RISEBench" / "data" / "data_total.json", json.dumps(records, indent=1))
    for path in (f, f.parent, f.parent.parent):     # the file, data/, the repository folder
        bench = load_benchmark(path)
        assert bench.format == "risebench" and bench.root == f.parent
        assert [(it["id"], it["category"], it["input_image"]) for it in bench.items] == [
            ("temporal_reasoning_1", "temporal_reasoning", "temporal_reasoning_images/1.png"),
            ("logical_reasoning_1", "logical_reasoning", "logical_reasoning_images/1.jpg")]
        assert bench.items[0]["reference"] == "a rotten banana"
        assert bench.items[1]["reference_img"] == "logical_reasoning_images/1_ref.png"
    del records[1]["instruction"]
    _write(f, json.dumps(records))
    with pytest.raises(ValueError, match=r"data_total.json: record 1: missing field 'instruction'"):
        load_benchmark(f)


def test_parabench_folder_with_other_field_names(tmp_path):
    rows = [{"idx": 7, "task_type": "spatial_editing", "prompt": "move the cup left", "source_image": "edit/7.png"},
            {"id": "k1", "category": "World Knowledge", "instruction": "as in 1900", "image": "edit/k1.png"},
            {"id": "g1", "type": "Generation", "prompt": "a busy market", "extra": [1, 2]}]
    folder = tmp_path / "parabench"
    _write(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    bench = load_benchmark(folder)
    assert bench.format == "parabench" and bench.root == folder
    assert [(it["id"], it["category"], it["instruction"], it["input_image"]) for it in bench.items] == [
        ("7", "Spatial", "move the cup left", "edit/7.png"), ("k1", "World Knowledge", "as in 1900", "edit/k1.png"),
        ("g1", "generation", "a busy market", None)]
    assert bench.items[2]["extra"] == [1, 2] and "prompt" not in bench.items[2]


@pytest.mark.parametrize("row, message", [
    ({"category": "Spatial", "instruction": "x", "image": "a.png"}, "metadata.jsonl:2: missing field 'id' "
                                                                    r"\(looked for 'id', 'index'"),
    ({"id": "b", "category": "Spatial", "instruction": "x"}, "metadata.jsonl:2: missing field 'input_image'"),
    ({"id": "b", "category": "Colour", "instruction": "x", "image": "a.png"}, "category 'Colour' is none of"),
    ({"id": "a", "category": "Causal", "instruction": "x", "image": "a.png"}, "metadata.jsonl:2: duplicate id 'a'"),
    ({"id": "b/c", "category": "Causal", "instruction": "x", "image": "a.png"}, "cannot name a sample folder"),
    ({"id": "b", "category": "Causal", "instruction": 3, "image": "a.png"}, "'instruction' .* non-empty string"),
])
def test_parabench_folder_errors_name_the_record_and_field(tmp_path, row, message):
    first = {"id": "a", "category": "General", "instruction": "add a hat", "image": "a.png"}
    _write(tmp_path / "metadata.jsonl", json.dumps(first) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=message):
        load_benchmark(tmp_path)


def test_unknown_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_benchmark(tmp_path / "nope")
    with pytest.raises(ValueError, match="looked for parabench.jsonl"):
        load_benchmark(tmp_path)
    with pytest.raises(ValueError, match="expected a .jsonl file"):
        load_benchmark(_write(tmp_path / "b.csv", "id\n"))
    with pytest.raises(ValueError, match=r"b.json: expected a JSON list"):
        load_benchmark(_write(tmp_path / "b.json", "{}"))


def test_parabench_category_spellings():
    assert parabench_category("World_Knowledge") == "World Knowledge"
    assert parabench_category("causal-reasoning") == "Causal"
    assert parabench_category(" TEMPORAL edit ") == "Temporal"
    assert parabench_category("t2i") == "generation"
    assert parabench_category("style") is None

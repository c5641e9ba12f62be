"""The synthetic shapes editing dataset: deterministic, and the edit is really in the output image."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mmada_jax.data import synthetic as syn

SIZE = 64


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_dataset_is_deterministic(tmp_path):
    from train.synthetic import main
    assert main([str(tmp_path / "a"), "--num", "12", "--seed", "3"]) == 0
    assert main([str(tmp_path / "b"), "--num", "12", "--seed", "3"]) == 0
    syn.write_dataset(tmp_path / "c", 12, seed=4)
    a, b, c = (_files(tmp_path / d) for d in "abc")
    assert a == b                                         # byte-identical JSONL and PNGs
    assert a["examples.jsonl"] != c["examples.jsonl"]     # another seed, other examples
    recs = [json.loads(line) for line in a["examples.jsonl"].decode().splitlines()]
    assert [r["id"] for r in recs] == [f"syn{i:06d}" for i in range(12)]
    for r in recs:
        assert set(r) <= {"id", "input_image", "instruction", "reasoning", "output_image", "task"}
        assert r["reasoning"] and r["output_image"] in a
        assert r.get("input_image") is None or r["input_image"] in a
    # example i depends on (seed, i) only: a shorter run is a prefix
    syn.write_dataset(tmp_path / "d", 5, seed=3)
    assert (tmp_path / "d/examples.jsonl").read_text().splitlines() == a["examples.jsonl"].decode().splitlines()[:5]


def _px(img, cell):
    r, c = syn.cell_center(cell, SIZE)
    return tuple(int(v) for v in img[r, c])


def test_edits_are_visible_and_match_the_instruction():
    seen = set()
    for i in range(150):
        ex = syn.make_example(seed=0, index=i, size=SIZE, t2i_fraction=0.0)
        assert ex.input_image is not None and ex.instruction is not None
        assert ex.input_image.shape == ex.output_image.shape == (SIZE, SIZE, 3)
        assert (ex.input_image != ex.output_image).any(), (ex.id, ex.instruction)
        np.testing.assert_array_equal(ex.output_image, syn.render(ex.output_scene, SIZE))
        np.testing.assert_array_equal(ex.input_image, syn.render(ex.input_scene, SIZE))
        # the reasoning describes the input and then the result, cell by cell
        assert ex.reasoning.startswith(f"The input image shows: {ex.input_scene.slots()}. ")
        assert ex.reasoning.endswith(f" The edited image shows: {ex.output_scene.slots()}.")
        shapes_in = ex.input_scene.by_cell()
        cell_of = {v: k for k, v in shapes_in.items()}
        bg_in = syn.BACKGROUNDS[ex.input_scene.background]
        text = ex.instruction
        seen.add(ex.task)
        if ex.task == "recolor":
            color, shape, new = re.match(r"\w+ the (\w+) (\w+) (?:to )?(\w+)\.", text).groups()
            cell = cell_of[(shape, color)]
            assert _px(ex.input_image, cell) == syn.COLORS[color]
            assert _px(ex.output_image, cell) == syn.COLORS[new]
        elif ex.task == "remove":
            color, shape = re.search(r"the (\w+) (\w+)\.$", text).groups()
            cell = cell_of[(shape, color)]
            assert _px(ex.input_image, cell) == syn.COLORS[color] and _px(ex.output_image, cell) == bg_in
        elif ex.task == "add":
            color, shape, cell = re.search(r"a (\w+) (\w+) in the (\w+ \w+)", text).groups()
            assert cell not in shapes_in
            assert _px(ex.input_image, cell) == bg_in and _px(ex.output_image, cell) == syn.COLORS[color]
        elif ex.task == "move":
            color, shape, cell = re.search(r"the (\w+) (\w+) (?:to|in) the (\w+ \w+)", text).groups()
            src = cell_of[(shape, color)]
            assert _px(ex.output_image, src) == bg_in and _px(ex.output_image, cell) == syn.COLORS[color]
        elif ex.task == "background":
            bg = re.search(r"background (?:to )?([\w ]+)\.$", text).group(1)
            assert bg != ex.input_scene.background
            assert tuple(ex.output_image[0, 0]) == syn.BACKGROUNDS[bg] and tuple(ex.input_image[0, 0]) == bg_in
        else:
            pytest.fail(f"unexpected task {ex.task}")
    assert seen == set(syn.EDIT_TASKS)


def test_t2i_style_fraction():
    exs = [syn.make_example(seed=1, index=i, size=32) for i in range(400)]
    t2i = [e for e in exs if e.task in syn.T2I_TASKS]
    assert 0.05 < len(t2i) / len(exs) < 0.16                 # default 10%
    assert {e.task for e in t2i} == set(syn.T2I_TASKS)
    for e in t2i:
        rec = syn.example_record(e)
        if e.task == "t2i":
            assert "input_image" not in rec and rec["instruction"].endswith(".")
            assert e.output_scene.describe() in rec["instruction"]
        elif e.task == "no_instruction":
            assert "instruction" not in rec and "input_image" in rec
            np.testing.assert_array_equal(e.input_image, e.output_image)
        else:
            assert "instruction" not in rec and "input_image" not in rec
    assert all(e.task in syn.T2I_TASKS for e in (syn.make_example(2, i, 32, t2i_fraction=1.0) for i in range(20)))
    assert not any(e.task in syn.T2I_TASKS for e in (syn.make_example(2, i, 32, t2i_fraction=0.0) for i in range(50)))
    with pytest.raises(ValueError, match="t2i_fraction"):
        syn.make_example(0, 0, t2i_fraction=1.5)


def test_slot_descriptions_have_one_length():
    """Every scene's ``slots()`` has the same words in the same places: only the background word
    and the two words of each cell vary (what lets a tiny model map cells to words by position)."""
    rng = np.random.default_rng(5)
    texts = [syn.random_scene(rng, 0, 4).slots().split(" ") for _ in range(200)]
    assert len({len(t) for t in texts}) == 1
    fixed = [i for i in range(len(texts[0])) if len({t[i] for t in texts}) == 1]
    assert len(fixed) == len(texts[0]) - 1 - 2 * len(syn.CELLS)
    assert any(syn.NO_SHAPE in " ".join(t) for t in texts) and any(t.count("no") == 0 for t in texts)

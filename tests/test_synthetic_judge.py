"""The programmatic ParaBench-style judge of the synthetic shapes world."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mmada_jax.data import synthetic as syn
from mmada_jax.evaluation import METRICS, get_judge, judges
from mmada_jax.evaluation import synthetic_judge as sj

SIZE = 64
IMAGE_METRICS = ("Image Consistency", "Image Alignment", "Image Quality")
ALL_TASKS = syn.EDIT_TASKS + syn.T2I_TASKS


def _examples_by_task(per_task: int = 3, seed: int = 0) -> dict[str, list[syn.SyntheticExample]]:
    out: dict[str, list] = {t: [] for t in ALL_TASKS}
    i = 0
    while any(len(v) < per_task for v in out.values()):
        ex = syn.make_example(seed, i, SIZE, t2i_fraction=0.4)
        if len(out[ex.task]) < per_task:
            out[ex.task].append(ex)
        i += 1
    return out


EXAMPLES = _examples_by_task()


def _first(task, pred=lambda ex: True):
    for i in range(2000):
        ex = syn.make_example(7, i, SIZE, t2i_fraction=0.0)
        if ex.task == task and pred(ex):
            return ex
    raise AssertionError(f"no {task} example found")


@pytest.fixture(scope="module")
def judge():
    return get_judge("synthetic")


def _score(judge, ex, text=None, image=None):
    item = sj.benchmark_item(ex)
    return judge.score(item, ex.reasoning if text is None else text,
                       ex.output_image if image is None else image)["scores"]


def _assert_full(scores, keys):
    bad = {k: scores[k] for k in keys if scores[k] != 100.0}
    assert not bad, bad


# ----------------------------------------------------------------------------- interface

def test_registry_and_metric_names(judge):
    assert "synthetic" in judges() and isinstance(judge, judges()["synthetic"])
    assert judge.metrics == METRICS == ("Text Quality", "Text Alignment", "Image Consistency", "Image Alignment",
                                        "Image Quality", "Output Alignment", "Overall")
    with pytest.raises(KeyError, match="unknown judge"):
        get_judge("nope")


def test_scene_dict_round_trip_and_item_is_json():
    for exs in EXAMPLES.values():
        for ex in exs:
            for scene in (ex.input_scene, ex.output_scene):
                d = sj.scene_to_dict(scene)
                assert sj.scene_from_dict(json.loads(json.dumps(d))) == scene
                if scene is not None:
                    assert sj.scene_from_dict(json.loads(json.dumps(dataclasses.asdict(scene)))) == scene
            item = json.loads(json.dumps(sj.benchmark_item(ex)))
            assert {"id", "category", "instruction", "input_image", "input_scene", "output_scene"} <= set(item)
            assert item["category"] == ("generation" if ex.task in ("t2i", "unconditional") else ex.task)
            assert (item["input_image"] is None) == (ex.input_image is None)


# ----------------------------------------------------------------------------- parser

def test_parser_accepts_every_generated_reasoning():
    forms = set()
    for i in range(300):
        ex = syn.make_example(11, i, 16, t2i_fraction=0.3)
        parsed = sj.parse_reasoning(ex.reasoning)
        assert parsed is not None, ex.reasoning
        assert parsed.output_scene == ex.output_scene
        if parsed.input_scene is not None:
            assert parsed.input_scene == ex.input_scene
        if parsed.form == "edit":
            assert parsed.task == ex.task
        forms.add(ex.task)
    assert forms == set(ALL_TASKS)


def test_parser_rejects_malformed_text():
    ex = EXAMPLES["recolor"][0]
    r = ex.reasoning
    assert sj.parse_reasoning(r[:-1]) is None                               # truncated
    assert sj.parse_reasoning(r.replace("The input image shows:", "Input:")) is None
    assert sj.parse_reasoning(r.replace("top left: ", "top left: a ", 1)) is None   # not a slot
    assert sj.parse_reasoning(r.replace("; bottom left", ", bottom left", 1)) is None
    assert sj.parse_reasoning(r.replace("becomes", "turns")) is None         # not the template's sentence
    t2i = EXAMPLES["t2i"][0]
    other = syn.Scene("white", (("top left", "circle", "red"),)).slots()
    assert sj.parse_reasoning(t2i.reasoning.replace("The image shows:", "The image shows: " + other + ". X")) is None
    # a slot description must round-trip: a shape twice of one colour and kind is no scene of the world
    twice = syn.Scene("white", (("top left", "circle", "red"), ("top right", "circle", "red"))).slots()
    assert sj.parse_slots(twice) is None and sj.stated_scene(f"The image shows: {twice}.") is None


# ----------------------------------------------------------------------------- ground truth scores 100

@pytest.mark.parametrize("task", ALL_TASKS)
def test_ground_truth_scores_100(judge, task):
    for ex in EXAMPLES[task]:
        res = judge.score(sj.benchmark_item(ex), ex.reasoning, ex.output_image)
        scores = res["scores"]
        expected = set(METRICS) - ({"Image Consistency"} if ex.input_scene is None else set())
        assert set(scores) == expected == set(res["reasons"])
        _assert_full(scores, expected)


def test_other_sizes_and_png_paths(tmp_path):
    judge = get_judge("synthetic", root=tmp_path)
    for size in (32, 128):
        for task in ("move", "t2i"):
            ex = _first(task) if task == "move" else EXAMPLES["t2i"][0]
            ex = dataclasses.replace(ex, output_image=syn.render(ex.output_scene, size))
            Image.fromarray(ex.output_image).save(tmp_path / f"{task}_{size}.png")
            scores = judge.score(sj.benchmark_item(ex), ex.reasoning, f"{task}_{size}.png")["scores"]
            _assert_full(scores, scores)


def test_noise_and_blur_keep_image_metrics(judge):
    rng = np.random.default_rng(0)
    for task in ALL_TASKS:
        for ex in EXAMPLES[task]:
            img = np.asarray(Image.fromarray(ex.output_image).filter(ImageFilter.GaussianBlur(0.7)), np.float64)
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            scores = _score(judge, ex, image=img)
            _assert_full(scores, [m for m in IMAGE_METRICS + ("Output Alignment",) if m in scores])


# ----------------------------------------------------------------------------- corruptions

def _render_with(scene: syn.Scene, cells: dict) -> np.ndarray:
    return syn.render(scene.with_shapes(cells), SIZE)


def test_wrong_colour_of_edited_shape(judge):
    ex = _first("recolor")
    (cell, kind, new), = [s for s in ex.output_scene.shapes if s not in ex.input_scene.shapes]
    used = set(ex.output_scene.by_cell().values()) | set(ex.input_scene.by_cell().values())
    wrong = next(c for c in syn.COLORS if (kind, c) not in used)
    cells = ex.output_scene.by_cell()
    cells[cell] = (kind, wrong)
    s = _score(judge, ex, image=_render_with(ex.output_scene, cells))
    assert s["Image Alignment"] < 100 and s["Output Alignment"] < 100
    _assert_full(s, ["Image Quality", "Image Consistency", "Text Quality", "Text Alignment"])


def test_shape_in_wrong_cell(judge):
    ex = _first("move", lambda e: len(e.input_scene.shapes) <= 2)
    # not moved at all: both touched cells wrong, nothing untouched changed
    s = _score(judge, ex, image=ex.input_image)
    assert s["Image Alignment"] == 0 and s["Output Alignment"] < 100
    _assert_full(s, ["Image Quality", "Image Consistency", "Text Quality", "Text Alignment"])
    # moved to another free cell than asked: an untouched cell changes too
    src = next(c for c, v in sj.scene_slots(ex.input_scene).items() if c != "background"
               and v != sj.scene_slots(ex.output_scene)[c] and v is not None)
    target = next(c for c in syn.CELLS if c != src and c not in ex.output_scene.by_cell()
                  and c not in ex.input_scene.by_cell())
    cells = ex.input_scene.by_cell()
    cells[target] = cells.pop(src)
    s = _score(judge, ex, image=_render_with(ex.input_scene, cells))
    assert s["Image Alignment"] < 100 and s["Image Consistency"] < 100 and s["Output Alignment"] < 100
    _assert_full(s, ["Image Quality", "Text Quality", "Text Alignment"])


def test_shape_missing(judge):
    ex = _first("add")
    s = _score(judge, ex, image=ex.input_image)
    assert s["Image Alignment"] == 0 and s["Output Alignment"] < 100
    _assert_full(s, ["Image Quality", "Image Consistency", "Text Quality", "Text Alignment"])


def test_text_describing_another_scene(judge):
    for task in syn.EDIT_TASKS + ("t2i",):
        ex = EXAMPLES[task][0]
        other = syn.Scene("gray" if ex.output_scene.background != "gray" else "white",
                          (("top left", "triangle", "purple"), ("bottom right", "square", "cyan")))
        marker = "The image shows: " if task == "t2i" else "The edited image shows: "
        text = ex.reasoning.replace(marker + ex.output_scene.slots(), marker + other.slots())
        assert text != ex.reasoning                          # the stated result is another scene
        s = _score(judge, ex, text=text)
        assert s["Text Alignment"] < 100 and s["Output Alignment"] < 100, task
        _assert_full(s, [m for m in IMAGE_METRICS if m in s] + ["Text Quality"])


def test_a_garbled_result_is_not_read_from_the_input_description(judge):
    ex = EXAMPLES["recolor"][0]
    out = ex.output_scene.slots()
    garbled = ex.reasoning.replace(out, out.replace(" background;", " background:"))
    assert sj.stated_scene(garbled) is None
    s = _score(judge, ex, text=garbled)
    assert s["Text Alignment"] == 0 and s["Output Alignment"] == 0 and s["Text Quality"] < 100


def test_masks_left_in_the_text(judge):
    ex = EXAMPLES["remove"][0]
    r = ex.reasoning
    i = r.index(" The ", r.index(". ")) + 1      # the "what happens" sentence
    for masked in (r[:i] + "_" * 10 + r[i + 10:], r[:i] + "<|mdm_mask|>" * 3 + r[i + 10:]):
        s = _score(judge, ex, text=masked)
        assert s["Text Quality"] < 100
        _assert_full(s, ["Text Alignment", "Output Alignment"] + list(IMAGE_METRICS))   # result still stated
    s = _score(judge, ex, text="_" * len(r))
    assert s["Text Quality"] == 0 and s["Text Alignment"] == 0 and s["Output Alignment"] == 0
    # the markers are a parameter
    custom = get_judge("synthetic", mask_markers=("#",))
    masked = r[:i] + "#" * 5 + r[i + 5:]
    assert custom.score(sj.benchmark_item(ex), masked, ex.output_image)["scores"]["Text Quality"] < 100
    garbage = r[:i] + "qzx blorp " + r[i:]
    assert _score(judge, ex, text=garbage)["Text Quality"] < 100


def test_random_pixels(judge):
    rng = np.random.default_rng(1)
    for task in ("recolor", "t2i", "unconditional"):
        ex = EXAMPLES[task][0]
        s = _score(judge, ex, image=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        assert s["Image Quality"] < 50 and s["Image Alignment"] < 100 and s["Overall"] < 80
        _assert_full(s, ["Text Quality", "Text Alignment"])


def test_untouched_cell_changed(judge):
    ex = _first("recolor", lambda e: len(e.input_scene.shapes) < 4)
    edited = {c for c, v in sj.scene_slots(ex.input_scene).items() if v != sj.scene_slots(ex.output_scene)[c]}
    used = set(ex.output_scene.by_cell().values())
    free = next(c for c in syn.CELLS if c not in ex.output_scene.by_cell() and c not in edited)
    cells = ex.output_scene.by_cell()
    cells[free] = next((k, c) for k in syn.SHAPES for c in syn.COLORS if (k, c) not in used)
    s = _score(judge, ex, image=_render_with(ex.output_scene, cells))
    assert s["Image Consistency"] < 100 and s["Output Alignment"] < 100
    _assert_full(s, ["Image Alignment", "Image Quality", "Text Quality", "Text Alignment"])
    # a background change where none was asked
    img = syn.render(dataclasses.replace(ex.output_scene, background="gray" if ex.output_scene.background != "gray"
                                         else "white"), SIZE)
    s = _score(judge, ex, image=img)
    assert s["Image Consistency"] < 100
    _assert_full(s, ["Image Alignment", "Image Quality"])


def test_overall_is_the_mean(judge):
    ex = _first("remove")
    res = judge.score(sj.benchmark_item(ex), ex.reasoning, ex.input_image)["scores"]
    vals = [v for k, v in res.items() if k != "Overall"]
    assert res["Overall"] == pytest.approx(sum(vals) / len(vals)) and len(vals) == 6


def test_input_image_read_when_no_input_scene(tmp_path):
    ex = _first("move")
    Image.fromarray(ex.input_image).save(tmp_path / "in.png")
    item = dict(sj.benchmark_item(ex), input_scene=None, input_image="in.png")
    judge = get_judge("synthetic", root=tmp_path)
    _assert_full(judge.score(item, ex.reasoning, ex.output_image)["scores"], METRICS)
    s = judge.score(item, ex.reasoning, ex.input_image)["scores"]   # not moved
    assert s["Image Alignment"] == 0 and s["Image Consistency"] == 100


def test_speck_in_an_empty_cell_is_ambiguous(judge):
    ex = _first("remove", lambda e: len(e.output_scene.shapes) < 4)
    free = next(c for c in syn.CELLS if c not in ex.output_scene.by_cell())
    img = ex.output_image.copy()
    r, c = syn.cell_center(free, SIZE)
    img[r - 2:r + 2, c - 2:c + 2] = syn.COLORS["red"]   # 16 pixels: 1.6% of the cell, too small for a shape
    s = _score(judge, ex, image=img)
    assert s["Image Quality"] < 100
    _assert_full(s, ["Image Alignment", "Image Consistency", "Output Alignment"])


def test_blank_image_is_not_a_scene(judge):
    ex = _first("remove")
    plain = np.zeros((SIZE, SIZE, 3), np.uint8) + np.uint8([200, 0, 200])   # a colour no background has
    s = _score(judge, ex, image=plain)
    assert s["Image Quality"] == 0 and s["Image Alignment"] == 0 and s["Image Consistency"] == 0


def test_base_task_benchmark_and_judge(tmp_path):
    """The world's base-task benchmarks (t2i: a drawing request and its scene; mmu: an image, the
    question and the scene's slot description) and their judge: ground truth 100, one wrong slot
    80, an unstated slot wrong, another task's item an error."""
    from mmada_jax.evaluation.synthetic_judge import BaseTaskJudge, scene_from_dict, write_base_benchmark
    judge = BaseTaskJudge(root=tmp_path / "mmu")
    t2i = [json.loads(x) for x in write_base_benchmark(tmp_path / "t2i", 3, "t2i").read_text().splitlines()]
    mmu = [json.loads(x) for x in write_base_benchmark(tmp_path / "mmu", 3, "mmu").read_text().splitlines()]
    assert len({it["instruction"] for it in t2i}) == 3 and all(it["instruction"] and not it["input_image"] for it in t2i)
    for it in t2i:
        scene = scene_from_dict(it["output_scene"])
        assert scene.describe() in it["instruction"]
        assert judge.score(it, "", syn.render(scene))["scores"]["Scene Accuracy"] == 100.0
        other = scene.with_shapes(scene.by_cell(), background="black" if scene.background != "black" else "white")
        assert judge.score(it, "", syn.render(other))["scores"]["Scene Accuracy"] == 80.0
    for it in mmu:
        scene = scene_from_dict(it["input_scene"])
        assert it["answer"] == syn.mmu_answer(scene) and (tmp_path / "mmu" / it["input_image"]).is_file()
        assert judge.score(it, it["answer"], None)["scores"] == {"Scene Accuracy": 100.0, "Overall": 100.0}
        cut = it["answer"].split("; bottom right:")[0]                  # the last cell unstated
        got = judge.score(it, cut, None)
        assert got["scores"]["Scene Accuracy"] == 80.0 and "not stated" in got["reasons"]["Scene Accuracy"]
    with pytest.raises(ValueError, match="scores t2i and mmu items, not 'recolor'"):
        judge.score({"id": "e", "category": "recolor"}, "", None)

"""Rewards: the built-ins, a user's callable, checks on what a reward returns, and ParaRL's
normalisation against its formula."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from mmada_jax.data import synthetic as syn
from mmada_jax.rl.rewards import RewardStats, calibrate, get_reward, normalize, score


def test_synthetic_reward_is_output_alignment_of_text_and_image():
    ex = syn.make_example(3, 1, t2i_fraction=0.0)
    other = syn.make_example(3, 2, t2i_fraction=0.0)
    reward = get_reward("synthetic")
    texts = [[ex.reasoning, other.reasoning, "The edited image shows:"]]
    images = np.stack([ex.output_image] * 3)[None]
    got = score(reward, [{"instruction": ex.instruction}], texts, images)
    assert got.shape == (1, 3)
    assert got[0, 0] == 100.0                      # the world's own pair agrees
    assert got[0, 1] < 100.0                       # another scene's description does not
    assert got[0, 2] == 0.0                        # a text that states no scene yet


def test_synthetic_reward_counts_the_result_slots_a_partial_text_states():
    from mmada_jax.evaluation.synthetic_judge import SyntheticJudge, benchmark_item, output_alignment
    from mmada_jax.rl.rollout import MASK_MARK

    ex = syn.make_example(5, 4, t2i_fraction=0.0)
    head, marker, result = ex.reasoning.rpartition("The edited image shows: ")
    slots = result.rstrip(".").split("; ")           # background, then the four cells
    assert len(slots) == 5
    full = output_alignment(ex.reasoning, ex.output_image)
    judged = SyntheticJudge().score(benchmark_item(ex), ex.reasoning, ex.output_image)["scores"]
    assert full == judged["Output Alignment"] == 100.0
    for hole in range(5):       # one slot's statement still masked: 4 of 5 stated and right
        partial = slots.copy()
        partial[hole] = partial[hole].rsplit(" ", 1)[0] + " " + MASK_MARK
        text = head + marker + "; ".join(partial) + "."
        assert output_alignment(text, ex.output_image) == 80.0, text
    assert output_alignment(head + MASK_MARK, ex.output_image) == 0.0
    bg = ex.output_scene.background
    other_bg = next(b for b in syn.BACKGROUNDS if b != bg)
    wrong = head + marker + "; ".join([slots[0].replace(bg, other_bg)] + slots[1:]) + "."
    assert output_alignment(wrong, ex.output_image) == 80.0       # one stated slot the image does not show


def test_callable_reward_and_bad_rewards_are_named():
    module = types.ModuleType("user_rewards_for_test")
    module.brightness = lambda requests, texts, images: images.mean(axis=(2, 3, 4)) / 255.0
    module.wrong_shape = lambda requests, texts, images: np.zeros(3)
    module.nan = lambda requests, texts, images: np.full((len(texts), len(texts[0])), np.nan)
    sys.modules[module.__name__] = module
    images = np.zeros((2, 1, 4, 4, 3), np.uint8)
    images[1] = 255
    bright = get_reward("callable", function="user_rewards_for_test:brightness")
    np.testing.assert_array_equal(score(bright, [{}, {}], [["a"], ["b"]], images), [[0.0], [1.0]])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        score(get_reward("callable", function="user_rewards_for_test:wrong_shape"), [{}, {}], [["a"], ["b"]], images)
    with pytest.raises(ValueError, match="non-finite"):
        score(get_reward("callable", function="user_rewards_for_test:nan"), [{}, {}], [["a"], ["b"]], images)
    with pytest.raises(ValueError, match="cannot be loaded"):
        get_reward("callable", function="user_rewards_for_test:missing")
    with pytest.raises(ValueError, match="module:function"):
        get_reward("callable", function="no_colon")
    with pytest.raises(ValueError, match="known"):
        get_reward("clipp")


def test_normalisation_is_the_papers_formula():
    rng = np.random.default_rng(0)
    raw = rng.normal(30, 5, 400)
    stats = calibrate(raw)
    assert stats == RewardStats(raw.mean(), raw.std(ddof=1), 400)
    c = np.asarray([stats.mu, stats.mu + stats.sigma / 2, stats.mu - 3 * stats.sigma, stats.mu + 9 * stats.sigma])
    np.testing.assert_allclose(normalize(c, stats), [0.5, 0.75, 0.0, 1.0])
    with pytest.raises(ValueError, match="constant"):
        calibrate(np.full(10, 7.0))
    with pytest.raises(ValueError, match="at least 2"):
        calibrate([1.0])


def test_demo_world_base_task_rewards_score_scene_slots():
    """synthetic_t2i: the share of the five slots the image shows as the line's output scene;
    synthetic_mmu: the share a description states as its input scene (unstated slots are wrong)."""
    from mmada_jax.app.requests import Request
    from mmada_jax.evaluation.synthetic_judge import scene_to_dict
    scene = syn.Scene("gray", ()).with_shapes({"top left": ("circle", "red"), "bottom right": ("square", "blue")})
    other = scene.with_shapes({"top left": ("circle", "green"), "bottom right": ("square", "blue")})
    line = {"id": "x", "output_scene": scene_to_dict(scene), "input_scene": scene_to_dict(scene)}
    requests = [Request("Draw it.", item=line), line]                  # a Request or the line itself
    t2i = get_reward("synthetic_t2i")
    images = np.stack([np.stack([syn.render(scene), syn.render(other)])] * 2)
    np.testing.assert_array_equal(score(t2i, requests, [["", ""]] * 2, images), [[100, 80]] * 2)
    mmu = get_reward("synthetic_mmu")
    desc = scene.slots()
    texts = [[desc, other.slots(), desc.replace("bottom right: blue square", "bottom right: <|mdm_mask|>"),
              "nothing to see"], [f"The image shows: {desc}.", "", desc.replace("gray", "white"), desc]]
    np.testing.assert_array_equal(score(mmu, requests, texts, None), [[100, 80, 80, 0], [100, 0, 80, 100]])
    with pytest.raises(ValueError, match="prompt line's 'input_scene'.*'y'"):
        mmu([{"id": "y"}], [["x"]], None)


def test_object_reward_gives_an_empty_image_only_its_background():
    """synthetic_t2i_objects: background + requested shapes, a shape in an empty cell one more
    miss; Scene Accuracy gives the same empty image 60 of 100 for a two-shape request."""
    from mmada_jax.evaluation.synthetic_judge import scene_to_dict
    scene = syn.Scene("gray", ()).with_shapes({"top left": ("circle", "red"), "bottom right": ("square", "blue")})
    empty = syn.Scene("gray", ())
    wrong = scene.with_shapes({"top left": ("circle", "green"), "bottom right": ("square", "blue")})
    extra = scene.with_shapes({**scene.by_cell(), "top right": ("triangle", "cyan")})
    line = {"id": "x", "output_scene": scene_to_dict(scene)}
    images = np.stack([np.stack([syn.render(s) for s in (scene, empty, wrong, extra)])])
    np.testing.assert_allclose(score(get_reward("synthetic_t2i_objects"), [line], [[""] * 4], images),
                               [[100, 100 / 3, 200 / 3, 75]])
    np.testing.assert_allclose(score(get_reward("synthetic_t2i"), [line], [[""] * 4], images), [[100, 60, 80, 80]])
    line["input_scene"] = line["output_scene"]
    texts = [[s.slots() for s in (scene, empty, wrong, extra)]]
    np.testing.assert_allclose(score(get_reward("synthetic_mmu_objects"), [line], texts, None),
                               [[100, 100 / 3, 200 / 3, 75]])

"""UniGRPO's correctness and format rewards on fixed strings (mmada_jax.rl.answers)."""

from __future__ import annotations

import numpy as np
import pytest

from mmada_jax.rl.answers import answers_match, as_number, correctness_scores, extract_answer, has_think_format
from mmada_jax.rl.rewards import get_reward, score


@pytest.mark.parametrize("text, answer", [
    ("<think>2 + 3 = 5, doubled is 10</think> The answer is 10.", "10"),
    ("so we get \\boxed{\\frac{1}{2}} and then \\boxed{42}", "42"),
    ("\\boxed{x^{2}}", "x^{2}"),
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
    ("answer: a red circle\nmore words", "a red circle"),
    ("<think>counting the cubes</think>\n\nthree cubes\n", "three cubes"),
    ("first 3 then 4.5 apples", "4.5"),
    ("no answer here", None),
    ("<think>x</think> The answer is <|mdm_mask|> 7 <|mdm_mask|>.", "7"),
    ("It costs $1,250. The answer is $1,250.", "$1,250"),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("a, b, same", [
    ("1,000.", "1000", True), ("$25", "25.0", True), ("1e3", "1000", True), ("25%", "25", True),
    ("0.1", "0.1000001", True), ("0.1", "0.11", False), ("The Red Circle.", "red circle", True),
    ("a cube", "cubes", False), (None, "3", False), ("three", "3", False),
])
def test_answers_match(a, b, same):
    assert answers_match(a, b) is same


def test_as_number_rejects_words_and_non_finite():
    assert as_number("12 apples") is None and as_number("inf") is None and as_number("-3.5") == -3.5


@pytest.mark.parametrize("text, ok", [
    ("<think>because</think> 5", True), ("<think></think> 5", False), ("<think>because</think>", False),
    ("because 5", False), ("<think>because 5", False), ("<think>a</think><|mdm_mask|>", False),
])
def test_think_format(text, ok):
    assert has_think_format(text) is ok


def test_correctness_reward_is_two_for_right_and_a_half_for_the_format():
    texts = [["<think>4 x 3</think> The answer is 12.", "The answer is 12.", "<think>4 x 3</think> 13", "13"],
             ["#### 7", "<think>.</think> #### 8", "", "<think>.</think> \\boxed{7.0}"]]
    want = [[2.5, 2.0, 0.5, 0.0], [2.0, 0.5, 0.0, 2.5]]
    np.testing.assert_array_equal(correctness_scores(texts, ["12", "7"]), want)
    reward = get_reward("correctness", correct=1.0, formatted=0.25)
    got = score(reward, [{"answer": 12}, {"answer": "7"}], texts, None)
    np.testing.assert_array_equal(got, np.asarray(want) / 2)
    with pytest.raises(ValueError, match="reads 'answer' of every request .*; rollouts \\[1\\]"):
        reward([{"answer": 1}, {"question": "?"}], texts, None)

"""Final answers of reasoning texts, and UniGRPO's correctness and format rewards (``pararl.md`` §3.1).

MMaDA's text and multimodal reasoning rewards (GSM8K, GeoQA, CLEVR) are a correctness reward of
**2.0** when the text's final answer equals the ground truth and a format reward of **0.5** when
the text has MMaDA's reasoning format: a ``<think> ... </think>`` block followed by an answer.
The papers do not give the extraction rules; ours, in order (the first that finds something wins):

1. ``\\boxed{...}`` (the last one; nested braces kept),
2. a GSM8K marker ``#### answer`` (the last one),
3. "the answer is X" / "answer: X" (the last one, up to the end of its line or sentence),
4. the text after ``</think>`` (its last non-empty line),
5. the last number in the text.

Two answers match when both read as numbers that agree to 1e-6 (commas, ``$``, ``%`` and a
trailing period dropped: "1,000." = "1000" = "1e3"), else when their normalised strings agree
(case folded, surrounding punctuation and whitespace runs collapsed, a leading "the"/"a"/"an"
dropped). Masks left in a text (``<|mdm_mask|>``) are dropped before anything is read.
"""

from __future__ import annotations

import math
import re

import numpy as np

MASK_MARK = "<|mdm_mask|>"
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_THINK = re.compile(r"<think>(.*?)</think>(.*)", re.S)
_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*(.+?)(?:\n|\.(?!\d)|$)", re.I)


def _boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer a reasoning text states (module docstring), or None."""
    text = text.replace(MASK_MARK, " ")
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().split("\n")[0].strip()
    said = _ANSWER_IS.findall(text)
    if said:
        return said[-1].strip()
    think = _THINK.search(text)
    if think:
        lines = [line.strip() for line in think.group(2).splitlines() if line.strip()]
        if lines:
            return lines[-1]
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def as_number(answer: str) -> float | None:
    """The answer as a number ("$1,000." -> 1000.0, "25%" -> 25.0), or None."""
    s = answer.strip().replace(",", "").replace("$", "").rstrip("%").rstrip(".").strip()
    if not _NUMBER.fullmatch(s):
        return None
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def normalise(answer: str) -> str:
    s = re.sub(r"\s+", " ", answer.casefold()).strip(" .,:;!?\"'`()[]{}")
    return re.sub(r"^(?:the|a|an) ", "", s)


def answers_match(predicted: str | None, truth: str) -> bool:
    if predicted is None:
        return False
    a, b = as_number(predicted), as_number(str(truth))
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    return normalise(predicted) == normalise(str(truth))


def has_think_format(text: str) -> bool:
    """MMaDA's reasoning format: a non-empty ``<think>...</think>`` then a non-empty answer."""
    m = _THINK.search(text.replace(MASK_MARK, " "))
    return bool(m and m.group(1).strip() and m.group(2).strip())


def correctness_scores(texts: list[list[str]], truths: list[str], *, correct: float = 2.0,
                       formatted: float = 0.5) -> np.ndarray:
    """[B, s] ``correct * [answer matches] + formatted * [think format]`` of B rollouts' s texts."""
    if len(texts) != len(truths):
        raise ValueError(f"{len(texts)} rollouts but {len(truths)} ground-truth answers")
    return np.asarray([[correct * answers_match(extract_answer(t), truth) + formatted * has_think_format(t)
                        for t in row] for row, truth in zip(texts, truths)], np.float64)

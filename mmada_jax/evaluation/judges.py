"""A small registry of judges that score one generated sample with ParaBench's metrics.

A judge scores one benchmark item's generated reasoning text and image::

    judge = get_judge("synthetic", root="bench_dir")
    result = judge.score(item, text, image)
    result["scores"]["Overall"]        # 0..100
    result["reasons"]["Image Quality"] # a short explanation per metric

The protocol (:class:`Judge`): ``judge.metrics`` is the tuple of the metric names it can return
(ParaBench's spelling, ``"Overall"`` last); ``judge.score(item, text, image)`` returns
``{"scores": {metric: float}, "reasons": {metric: str}}`` with every score in ``[0, 100]``. A metric
that does not apply to an item (Image Consistency for a generation item, which has no input image)
is left out of both dicts, and ``"Overall"`` is the mean of the metrics that are present.

``item`` is one benchmark line (a JSON-able dict): ``id``, ``category`` (the edit task or
``"generation"``), ``instruction`` (str or None), ``input_image`` (a path or None) and whatever
ground truth the judge needs (see each judge's module, e.g.
:mod:`mmada_jax.evaluation.synthetic_judge`). ``image`` is a uint8 ``[H, W, 3]`` array or a path.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

METRICS = ("Text Quality", "Text Alignment", "Image Consistency", "Image Alignment", "Image Quality",
           "Output Alignment", "Overall")

#: judges added by users (:func:`register_judge`); the built-in ones are listed in :func:`judges`
JUDGES: dict[str, type] = {}


@runtime_checkable
class Judge(Protocol):
    metrics: tuple[str, ...]

    def score(self, item: dict, text: str, image: Any) -> dict: ...


def register_judge(name: str):
    """Class decorator for a user's judge: make it available as ``get_judge(name)``."""
    def deco(cls: type) -> type:
        JUDGES[name] = cls
        return cls
    return deco


def judges() -> dict[str, type]:
    """Every judge by name: the built-in ones, then those registered by users."""
    from .clip_judge import CLIPJudge
    from .synthetic_judge import BaseTaskJudge, SyntheticJudge
    from .vlm_judge import VLMJudge
    return {"synthetic": SyntheticJudge, "synthetic_base": BaseTaskJudge, "vlm": VLMJudge, "clip": CLIPJudge,
            **JUDGES}


def get_judge(name: str, **options) -> Judge:
    """A judge by name, built with ``options`` (keyword arguments of its class)."""
    table = judges()
    if name not in table:
        raise KeyError(f"unknown judge {name!r}; known: {sorted(table)}")
    return table[name](**options)


def overall(scores: dict[str, float]) -> float:
    """ParaBench's Overall: the mean of the metrics present (``"Overall"`` itself excluded)."""
    vals = [v for k, v in scores.items() if k != "Overall"]
    return float(sum(vals) / len(vals)) if vals else 0.0

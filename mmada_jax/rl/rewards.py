"""Rewards behind one interface, and ParaRL's reward normalisation (``pararl.md`` §1.3).

A reward scores the (text, image) pairs of B rollouts at their s recorded steps:
``reward(requests, texts, images) -> [B, s]`` raw scores, with ``requests`` the B requests
(:class:`~mmada_jax.app.requests.Request`: ``prompt``, ``image`` when editing, ``item`` the prompt
file's whole line with whatever else the reward needs, e.g. an ``answer``), ``texts`` B lists of s
strings (the text decoded so far, special tokens dropped, runs of masked positions written as
``<|mdm_mask|>``: :func:`~mmada_jax.rl.rollout.plain_text` removes them) and ``images`` uint8
[B, s, H, W, 3] (the image predicted at the step, decoded by the VQ). Built-ins (:data:`REWARDS`):

* ``synthetic``: the synthetic world judge's Output Alignment, counting the result slots a partly
  decoded text already states (:func:`~mmada_jax.evaluation.synthetic_judge.output_alignment`;
  0-100, no ground truth needed; the judge's own metric on complete texts);
* ``clip``: the CLIP score of the text so far (mask marks dropped) and the predicted image,
  ``max(scale * cos, 0)`` (torchmetrics' ``clip_score``; ``scale`` 100 by default: the 0-100
  scale MMaDA reports), with a converted CLIP checkpoint (``checkpoint``; e.g. ViT-L/14, as the
  authors' code) and texts truncated to ``max_tokens`` (77) CLIP tokens (:class:`CLIPReward`;
  ``describe()`` says which model, resolution and scale produced the scores);
* ``synthetic_t2i`` / ``synthetic_mmu``: the demo world's base tasks: the share of the five scene
  slots an image shows (T2I, against the line's ``output_scene``) or a description states (MMU,
  against its ``input_scene``);
* ``correctness``: UniGRPO's text and MMU reward, 2.0 for a final answer equal to the request's
  ``answer`` and 0.5 for the ``<think>...</think>`` format (:mod:`.answers`);
* ``callable``: a user's function ``"package.module:function"`` with the same signature, e.g.::

      def brightness(requests, texts, images):      # rewards brighter images
          return images.mean(axis=(2, 3, 4)) / 255.0

Normalisation as the paper: :func:`calibrate` estimates (mu, sigma) on rollouts of the starting
policy; :func:`normalize` maps a raw score c to R = (1 + clip((c - mu) / sigma, -1, 1)) / 2 in
[0, 1]. Non-finite scores are an error, never a silent reward.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Protocol

import numpy as np

from .registry import lookup, registrar


class Reward(Protocol):
    def __call__(self, requests: list[dict], texts: list[list[str]], images: np.ndarray) -> np.ndarray: ...


REWARDS: dict[str, Callable[..., Reward]] = {}

register = registrar(REWARDS)


@register("synthetic")
def synthetic_reward(**_) -> Reward:
    from ..evaluation.synthetic_judge import output_alignment

    def score(requests, texts, images):
        return np.asarray([[output_alignment(text, image) for text, image in zip(row_texts, row_images)]
                           for row_texts, row_images in zip(texts, images)], np.float64)
    return score


def _item(request) -> dict:
    """The prompt file's line of a request (a :class:`~mmada_jax.app.requests.Request`, or the line
    itself)."""
    return request if isinstance(request, dict) else (getattr(request, "item", None) or {})


def _truth(request, key: str):
    from ..evaluation.synthetic_judge import scene_from_dict
    item = _item(request)
    if not item.get(key):
        raise ValueError(f"this reward compares with the prompt line's {key!r} (a synthetic-world benchmark line); "
                         f"request {getattr(request, 'id', None) or item.get('id')!r} has none")
    return scene_from_dict(item[key])


def _scene_reward(truth_key: str, read: str, objects: bool) -> Reward:
    """Rewards of the demo world's base tasks: the scene slots an image shows (``read="image"``,
    pixel recognition) or a text describes (``"text"``), compared with the prompt line's
    ``truth_key`` scene by Scene Accuracy or, with ``objects``, by object accuracy."""
    from ..evaluation.synthetic_judge import described_slots, object_accuracy, recognize, slot_accuracy

    def one(request, output) -> float:
        slots = recognize(output).slots if read == "image" else described_slots(output)
        truth = _truth(request, truth_key)
        return object_accuracy(slots, truth) if objects else slot_accuracy(slots, truth)[0]

    def score(requests, texts, images):
        outputs = images if read == "image" else texts
        return np.asarray([[one(r, out) for out in row] for r, row in zip(requests, outputs)], np.float64)
    return score


@register("synthetic_t2i")
def synthetic_t2i_reward(**_) -> Reward:
    """The demo world's T2I reward: the share (0-100) of the five scene slots the image shows as
    the request's ``output_scene`` has them (the judge's pixel recognition)."""
    return _scene_reward("output_scene", "image", objects=False)


@register("synthetic_t2i_objects")
def synthetic_t2i_objects_reward(**_) -> Reward:
    """The demo world's T2I reward without the empty-cell shortcut: the share (0-100) of the
    background and the requested shapes the image shows right, a shape drawn in an empty cell
    counting as one more miss (:func:`~mmada_jax.evaluation.synthetic_judge.object_accuracy`).
    Trained on ``synthetic_t2i`` (where an empty cell counts as much as a shape) the demo model
    learned to leave cells empty."""
    return _scene_reward("output_scene", "image", objects=True)


@register("synthetic_mmu")
def synthetic_mmu_reward(**_) -> Reward:
    """The demo world's MMU reward: the share (0-100) of the five scene slots the text's
    description states as the request's ``input_scene`` has them."""
    return _scene_reward("input_scene", "text", objects=False)


@register("synthetic_mmu_objects")
def synthetic_mmu_objects_reward(**_) -> Reward:
    """``synthetic_mmu`` without the "no shape" shortcut (as ``synthetic_t2i_objects``)."""
    return _scene_reward("input_scene", "text", objects=True)


@register("correctness")
def correctness_reward(correct: float = 2.0, formatted: float = 0.5, field: str = "answer", **_) -> Reward:
    """UniGRPO's text / MMU reward (:mod:`.answers`): ``correct`` (2.0) when the text's final
    answer matches the request's ``field`` (``answer``), plus ``formatted`` (0.5) for the
    ``<think>...</think>`` format."""
    from .answers import correctness_scores

    def score(requests, texts, images):
        items = [_item(r) for r in requests]
        missing = [i for i, it in enumerate(items) if field not in it]
        if missing:
            raise ValueError(f"the correctness reward reads {field!r} of every request (the prompt file's lines); "
                             f"rollouts {missing[:5]} have none")
        return correctness_scores(texts, [str(it[field]) for it in items], correct=correct, formatted=formatted)
    return score


class CLIPReward:
    """The ``clip`` reward: [B, s] ``max(scale * cos, 0)`` of each recorded step's text (its mask
    marks and the CLIP tokenizer's special-token strings dropped) and image, with one
    :class:`~mmada_jax.clip.CLIPScorer`. ``describe()``: the model, checkpoint, resolution, scale
    and token limit that produced the scores (for the run's records)."""

    def __init__(self, scorer):
        from .rollout import plain_text
        self.scorer = scorer
        self._plain = plain_text

    def __call__(self, requests, texts, images) -> np.ndarray:
        images = np.asarray(images)
        b, s = len(texts), len(texts[0]) if texts else 0
        if images.ndim != 5 or images.shape[:2] != (b, s):
            raise ValueError(f"the clip reward takes images [B, s, H, W, 3] matching the texts' {(b, s)}, "
                             f"got {list(images.shape)}")
        flat = [self._plain(t) for row in texts for t in row]
        scores = self.scorer(flat, images.reshape((b * s,) + images.shape[2:]))
        return scores.reshape(b, s).astype(np.float64)

    def describe(self) -> dict:
        return {"reward": "clip", **self.scorer.describe()}


@register("clip")
def clip_reward(checkpoint: str = "", scale: float = 100.0, max_tokens: int = 77, batch_size: int = 32,
                dtype: str | None = None, **_) -> Reward:
    """Options: ``checkpoint`` (a converted clip checkpoint, or a HF CLIPModel directory),
    ``scale`` (100: torchmetrics' clip_score), ``max_tokens`` (77), ``batch_size`` (pairs per
    network pass), ``dtype`` (default: as stored)."""
    from ..clip import CLIPScorer, load_clip
    if not checkpoint:
        raise ValueError("the clip reward needs checkpoint=<a converted clip checkpoint "
                         "(convert_torch_weights.py on a HF CLIPModel directory)>")
    model, tokenizer = load_clip(checkpoint, dtype=dtype)
    return CLIPReward(CLIPScorer(model, tokenizer, scale=scale, max_tokens=max_tokens, batch_size=batch_size,
                                 source=checkpoint))


@register("callable")
def callable_reward(function: str = "", **_) -> Reward:
    module, _, name = function.partition(":")
    if not module or not name:
        raise ValueError(f"reward function {function!r}: expected 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward function {function!r} cannot be loaded: {e}") from e


def get_reward(name: str, **options) -> Reward:
    return lookup(REWARDS, name, "reward")(**options)


def score(reward: Reward, requests, texts, images) -> np.ndarray:
    """The reward's [B, s] scores, checked: the right shape and finite."""
    b, s = len(texts), len(texts[0]) if texts else 0
    out = np.asarray(reward(requests, texts, images), np.float64)
    if out.shape != (b, s):
        raise ValueError(f"the reward returned shape {out.shape}, expected {(b, s)} (rollouts, steps)")
    if not np.isfinite(out).all():
        raise ValueError(f"the reward returned non-finite scores at (rollout, step) {np.argwhere(~np.isfinite(out))[:5].tolist()}")
    return out


@dataclasses.dataclass(frozen=True)
class RewardStats:
    """mu and sigma of the raw scores of the starting policy (stored with the run)."""

    mu: float
    sigma: float
    count: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def calibrate(scores: np.ndarray, min_sigma: float = 1e-6) -> RewardStats:
    """(mu, sigma) of raw scores of the starting policy at random steps; a constant reward (sigma
    ~ 0) cannot be normalised and is an error."""
    scores = np.asarray(scores, np.float64).ravel()
    if scores.size < 2:
        raise ValueError(f"reward calibration needs at least 2 scores, got {scores.size}")
    sigma = float(scores.std(ddof=1))
    if not sigma > min_sigma:
        raise ValueError(f"the calibration rewards are constant ({scores[0]:g} on all {scores.size}): nothing to "
                         "normalise; use more calibration prompts or another reward")
    return RewardStats(float(scores.mean()), sigma, int(scores.size))


def normalize(scores, stats: RewardStats) -> np.ndarray:
    """R = (1 + clip((c - mu) / sigma, -1, 1)) / 2."""
    z = (np.asarray(scores, np.float64) - stats.mu) / stats.sigma
    return (1.0 + np.clip(z, -1.0, 1.0)) / 2.0

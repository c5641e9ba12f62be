"""``--judge clip``: CLIP scores of each output image against its reasoning text and its instruction.

The automatic metric papers report beside judge scores: ``max(100 cos, 0)`` (torchmetrics'
``clip_score``, MMaDA's scale) of the output image with

* ``CLIP Output Alignment`` - the output reasoning text (the programmatic cousin of ParaBench's
  Output Alignment; CLIP reads 77 tokens, so long reasoning is truncated), and
* ``CLIP Instruction Alignment`` - the instruction (prompt-following, as CLIP score is used for
  text-to-image).

With the CLIP of the ParaRL issue (:mod:`mmada_jax.clip`: a ``clip`` checkpoint converted by
``convert_torch_weights.py``, or a HF ``CLIPModel`` directory). ``describe()`` records the model,
resolution and scale. No Overall: two similarities on one scale are not a ParaBench Overall.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

METRICS = ("CLIP Output Alignment", "CLIP Instruction Alignment")


def _pixels(image) -> np.ndarray:
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"), np.uint8)
    return np.asarray(image, np.uint8)


class CLIPJudge:
    """CLIP scores (see the module docstring). ``checkpoint``: the CLIP to use (required)."""

    metrics = METRICS
    batch_items = 32

    def __init__(self, root: str | Path = ".", checkpoint: str | Path | None = None, batch_size: int = 32,
                 dtype: str | None = None, **_):
        if not checkpoint:
            raise ValueError("--judge clip needs --clip-checkpoint (a converted clip checkpoint, or a HF "
                             "CLIPModel directory)")
        from mmada_jax.clip import CLIPScorer, load_clip
        model, tokenizer = load_clip(checkpoint, dtype=dtype)
        self.scorer = CLIPScorer(model, tokenizer, batch_size=batch_size, source=checkpoint)
        self.root = Path(root)

    def describe(self) -> dict:
        return {"judge": "clip", **self.scorer.describe()}

    def score(self, item: dict, text: str, image) -> dict:
        return self.score_batch([(item, text, image)])[0]

    def score_batch(self, entries) -> list[dict]:
        """One pass per image size: images of a batch may differ in size (CLIP resizes them)."""
        out: list[dict | None] = [None] * len(entries)
        pixels = [_pixels(image) for _, _, image in entries]
        for shape in sorted({p.shape for p in pixels}):
            idx = [i for i, p in enumerate(pixels) if p.shape == shape]
            images = np.stack([pixels[i] for i in idx])
            texts = [entries[i][1] for i in idx]
            prompts = [entries[i][0].get("instruction") or "" for i in idx]
            with_text, with_prompt = self.scorer(texts, images), self.scorer(prompts, images)
            for j, i in enumerate(idx):
                scores = {METRICS[0]: float(with_text[j]), METRICS[1]: float(with_prompt[j])}
                if not prompts[j]:
                    del scores[METRICS[1]]          # no instruction: nothing to compare with
                out[i] = {"scores": scores, "reasons": {m: "max(100 cos, 0) of CLIP embeddings" for m in scores}}
        return out

"""Lumina-DiMOO's MaskGIT image generation, which MMaDA-Parallel-A inherits: text-to-image and
image-to-image without the reasoning text (spec ``mmada_a.md`` §4.3), as ONE jitted ``lax.scan``.

Every sequence ends with the same answer ``<answer> <boi> grid <eoi> </answer>``. The
unconditional inputs are TRUE unconditionals of their own length (unlike the editing sampler's
in-place overwrite): their own prefix followed by the current answer. Per step ``t`` of ``T``
(all rows of all guidance inputs in one forward; rows of different lengths left-padded,
hard-masked, RoPE shifted, which equals the reference's separate unpadded forwards):

* ``guided = cond + sum_g w_g (cond - uncond_g)`` over the codebook columns at the image
  positions (T2I: one uncond row, ``w = guidance``; I2I: ``guidance`` against the
  ``<uncondition>`` instruction with the image, ``image_cfg`` against the instruction without it);
  a weight of 0 skips its forward;
* draw ``argmax(guided / temperature + Gumbel)`` (plain argmax at temperature 0) at every masked
  position, confidence = ``softmax(guided)`` of the draw;
* keep ``keep = floor(N cos(pi/2 (t+1)/T))`` (at least 1; 0 at the last step, so the image ends
  complete) of the newly drawn positions masked: the ones with the lowest
  ``log(max(p, 1e-20)) + temperature * Gumbel`` (not annealed).

The reference has no golden trajectory here; the tests check the guidance against separate
unpadded forwards, the schedule, batch = single runs and determinism.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..sampling.common import (SamplerOutput, Static, as_randomness, exact_default, first_argmax,
                               gumbel_from_uniform, left_padding, top_k_mask)
from ..sampling.runner import run_scan
from ..settings import resolve, setting
from .prompts import ImagePrompt


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """Lumina-DiMOO image generation (defaults: DiMOO's)."""

    steps: int = setting(64, "denoising steps", aliases=["--timesteps"], minimum=1)
    guidance: float | None = setting(None, "guidance towards the instruction (default 4.0 for text-to-image, "
                                           "2.5 for image-to-image)", aliases=["--cfg_scale", "--cfg-scale"])
    image_cfg: float = setting(4.0, "image-to-image: guidance towards the input image (against the "
                                    "image-free input)", aliases=["--cfg_img", "--cfg-img"])
    temperature: float = setting(1.0, "Gumbel temperature of the draws and of the remasking (0: argmax)")

    def for_mode(self, i2i: bool) -> "ImageSettings":
        """The settings with the mode's guidance default filled in (and no image guidance for T2I)."""
        guidance = (2.5 if i2i else 4.0) if self.guidance is None else self.guidance
        return dataclasses.replace(self, guidance=guidance, image_cfg=self.image_cfg if i2i else 0.0)

    @property
    def weights(self) -> tuple[float, ...]:
        """The guidance weights of the unconditional inputs that run (resolved settings)."""
        return tuple(w for w in (self.guidance, self.image_cfg) if w != 0)


def keep_schedule(num_tokens: int, steps: int) -> np.ndarray:
    """Tokens left masked after each step: floor(N cos(pi/2 (t+1)/T)) in float32, >= 1, last 0."""
    t = np.arange(1, steps + 1, dtype=np.float32) / np.float32(steps)
    keep = np.maximum(1, np.floor(np.float32(num_tokens) * np.cos(np.float32(0.5 * math.pi) * t)))
    keep[-1] = 0
    return keep.astype(np.int32)


def _step(model, answer, xs, consts, rnd, st: Static):
    t, keep = xs
    b = answer.shape[0]
    s, lay, tok = st.settings, st.layout, st.tokens
    pos = jnp.asarray(lay.image_positions()) - lay.prompt_len       # inside the answer
    groups = consts["prefixes"].shape[1]          # cond + the unconditional inputs that run
    by_group = lambda a: None if a is None else jnp.concatenate([a[:, g] for g in range(groups)], axis=0)
    rows = by_group(jnp.concatenate([consts["prefixes"], jnp.broadcast_to(answer[:, None], (b, groups) + answer.shape[1:])], axis=2))
    hidden, _ = model.encode(rows, by_group(consts.get("attention_mask")), mask_mode="hard",
                             position_ids=by_group(consts.get("position_ids")))
    logits = model.head(hidden, positions=jnp.asarray(lay.image_positions()),
                        vocab_range=(tok.image_offset, tok.image_offset + tok.codebook_size)).astype(jnp.float32)
    cond = logits[:b]
    guided = cond
    for g, w in enumerate(s.weights, start=1):
        guided = guided + w * (cond - logits[g * b:(g + 1) * b])
    region = answer[:, pos]
    unknown = region == tok.mask_id
    if s.temperature > 0:
        u = rnd.uniform("u_gumbel", t, guided.shape)
        sampled = first_argmax(guided / s.temperature + gumbel_from_uniform(u))
    else:
        sampled = first_argmax(guided)
    probs = jax.nn.softmax(guided, axis=-1)
    p = jnp.take_along_axis(probs, sampled[..., None], axis=-1)[..., 0]
    confidence = jnp.log(jnp.maximum(p, 1e-20))
    if s.temperature > 0:
        confidence = confidence + s.temperature * gumbel_from_uniform(rnd.uniform("u_remask_gumbel", t, p.shape))
    k = jnp.maximum(0, jnp.minimum(keep, unknown.sum(-1) - 1))
    remask = top_k_mask(-jnp.where(unknown, confidence, jnp.inf), k)       # the k least confident new codes
    new = jnp.where(unknown & ~remask, sampled + tok.image_offset, region).astype(jnp.int32)
    answer = answer.at[:, pos].set(new)
    return answer, (answer if st.trajectory else None)


def generate_image(model, prompts: ImagePrompt | Sequence[ImagePrompt], *, settings: ImageSettings | None = None,
                   seed=0, tape=None, exact: bool | None = None, return_trajectory: bool = False,
                   **overrides) -> SamplerOutput:
    """MaskGIT image generation for one prompt or a batch (see the module docstring); all prompts
    text-to-image (one unconditional input each) or all image-to-image (two).

    ``settings``: :class:`ImageSettings` (``**overrides`` replace single fields). ``seed``: int,
    PRNG key or one key per row; ``tape``: recorded ``u_gumbel`` [T, B, N, K] /
    ``u_remask_gumbel`` [T, B, N] to replay. Returns ``image_codes`` [B, N], the final sequences
    ``ids`` (cond rows, left-padded; ``pads``; ``layout``) and with ``return_trajectory`` the
    answer after every step [T, B, answer_len].
    """
    prompts = [prompts] if isinstance(prompts, ImagePrompt) else list(prompts)
    if not prompts:
        raise ValueError("no prompts")
    first = prompts[0]
    if len({len(p.unconds) for p in prompts}) > 1:
        raise ValueError("a batch is all text-to-image prompts or all image-to-image prompts")
    for p in prompts:
        if p.answer != first.answer:
            raise ValueError("the prompts of a batch must share the output grid")
        for seq in (p.cond, *p.unconds):
            if not np.array_equal(seq[-p.answer.answer_len:], first.cond[-first.answer.answer_len:]):
                raise ValueError("every sequence must end with the same masked answer")
    i2i = len(first.unconds) == 2
    s = resolve(ImageSettings, settings, **overrides).for_mode(i2i)
    used = [g for g, w in enumerate((s.guidance, s.image_cfg)[:len(first.unconds)]) if w != 0]
    groups = [[p.cond for p in prompts]] + [[p.unconds[g] for p in prompts] for g in used]
    length = max(len(seq) for group in groups for seq in group)
    t = model.config.tokens
    ta = first.answer.answer_len
    b = len(prompts)
    prefixes = np.full((b, len(groups), length - ta), t.pad_id, np.int32)
    pads = np.zeros((b, len(groups)), np.int32)
    for g, group in enumerate(groups):
        for row, seq in enumerate(group):
            pads[row, g] = length - len(seq)
            prefixes[row, g, pads[row, g]:] = np.asarray(seq[:-ta], np.int32)
    consts = {"prefixes": prefixes}
    if pads.any():
        consts.update({k: v.reshape(b, len(groups), length) for k, v in left_padding(pads.reshape(-1), length).items()})
    exact = exact_default() if exact is None else exact
    layout = dataclasses.replace(first.answer, prompt_len=length - ta)
    static = Static(s, layout, t, exact, return_trajectory)
    xs = (np.arange(s.steps, dtype=np.int32), keep_schedule(layout.num_image_tokens, s.steps))
    init = np.tile(np.asarray(first.cond[-ta:], np.int32), (b, 1))
    answer, traj = run_scan(model, _step, static, init, xs, consts, as_randomness(seed, b, tape), exact)
    answer = np.asarray(answer)
    ids = np.concatenate([prefixes[:, 0], answer], axis=1)
    codes = ids[:, layout.image_positions()] - t.image_offset
    return SamplerOutput(ids=ids, image_codes=codes.astype(np.int32), pads=pads[:, 0], layout=layout,
                         trajectory=None if traj is None else np.asarray(traj))

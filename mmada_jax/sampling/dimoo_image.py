"""Lumina-DiMOO's MaskGIT image generation, which MMaDA-Parallel-A inherits: text-to-image and
image-to-image without the reasoning text (spec mmada_a.md §4.3).

Every sequence ends with the same answer ``<answer> <boi> grid <eoi> </answer>`` (``grid``: rows
of MASK codes each followed by NEWLINE). The unconditional inputs are TRUE unconditionals of their
own length (unlike the parallel sampler's in-place overwrite): their own prefix followed by the
current answer. Per step ``t`` of ``T`` (all rows of all guidance inputs in one forward; rows of
different lengths left-padded, hard-masked, RoPE shifted, which equals the reference's separate
unpadded forwards):

* ``guided = cond + sum_g w_g (cond - uncond_g)`` over the codebook columns at the image
  positions (T2I: one uncond row, ``(1 + w) cond - w uncond``; I2I: ``cfg_scale`` against the
  ``<uncondition>`` instruction with the image, ``cfg_img`` against the instruction without it);
* draw ``argmax(guided / temperature + Gumbel)`` (plain argmax at temperature 0) at every masked
  position, confidence = ``softmax(guided)`` of the draw;
* keep ``keep = floor(N cos(pi/2 (t+1)/T))`` (at least 1; 0 at the last step, so the image ends
  complete) of the newly drawn positions masked: the ones with the lowest
  ``log(max(p, 1e-20)) + temperature * Gumbel`` (not annealed).

The reference has no golden trajectory here; the tests check the schedule, the layout, batch =
single runs and determinism, and the building blocks are the ones the parity-tested samplers use.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..prompting_a import ImagePrompt
from .common import as_randomness, exact_default, first_argmax, gumbel_from_uniform, left_padding, top_k_mask
from .runner import SamplerOutput, run_scan


def keep_schedule(num_tokens: int, steps: int) -> np.ndarray:
    """Tokens left masked after each step: floor(N cos(pi/2 (t+1)/T)) in float32, >= 1, last 0."""
    t = np.arange(1, steps + 1, dtype=np.float32) / np.float32(steps)
    keep = np.maximum(1, np.floor(np.float32(num_tokens) * np.cos(np.float32(0.5 * math.pi) * t)))
    keep[-1] = 0
    return keep.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class _Static:
    prefix_len: int
    weights: tuple[float, ...]
    temperature: float
    offset: int
    codebook_size: int
    mask_id: int
    exact: bool
    trajectory: bool


def _step(model, answer, xs, consts, rnd, st: _Static):
    t, keep = xs
    b = answer.shape[0]
    pos = consts["image_positions"]
    groups = consts["prefixes"].shape[0]          # cond + the unconditional inputs that are used
    rows = jnp.concatenate([jnp.concatenate([consts["prefixes"][g], answer], axis=1) for g in range(groups)], 0)
    hidden, _ = model.encode(rows, consts.get("attention_mask"), mask_mode="hard",
                             position_ids=consts.get("position_ids"))
    logits = model.head(hidden, positions=st.prefix_len + pos,
                        vocab_range=(st.offset, st.offset + st.codebook_size)).astype(jnp.float32)
    cond = logits[:b]
    guided = cond
    for g, w in enumerate(st.weights, start=1):
        guided = guided + w * (cond - logits[g * b:(g + 1) * b])
    region = answer[:, pos]
    unknown = region == st.mask_id
    if st.temperature > 0:
        u = rnd.uniform("u_gumbel", t, guided.shape)
        sampled = first_argmax(guided / st.temperature + gumbel_from_uniform(u))
    else:
        sampled = first_argmax(guided)
    probs = jax.nn.softmax(guided, axis=-1)
    p = jnp.take_along_axis(probs, sampled[..., None], axis=-1)[..., 0]
    confidence = jnp.log(jnp.maximum(p, 1e-20))
    if st.temperature > 0:
        confidence = confidence + st.temperature * gumbel_from_uniform(rnd.uniform("u_remask_gumbel", t, p.shape))
    k = jnp.maximum(0, jnp.minimum(keep, unknown.sum(-1) - 1))
    remask = top_k_mask(-jnp.where(unknown, confidence, jnp.inf), k)       # the k least confident new codes
    new = jnp.where(unknown & ~remask, sampled + st.offset, region).astype(jnp.int32)
    answer = answer.at[:, pos].set(new)
    return answer, (answer if st.trajectory else None)


def generate_image(model, prompts: ImagePrompt | Sequence[ImagePrompt], *, weights: Sequence[float],
                   timesteps: int = 64, temperature: float = 1.0, seed=0, tape=None, exact: bool | None = None,
                   return_trajectory: bool = False) -> SamplerOutput:
    """MaskGIT image generation for one prompt or a batch (see the module docstring).

    ``weights``: one guidance weight per unconditional input of the prompts (a weight of 0 skips
    its forward). ``seed``: int, PRNG key or one key per row; ``tape``: recorded ``u_gumbel``
    [T, B, N, K] / ``u_remask_gumbel`` [T, B, N] to replay. Returns ``image_codes`` [B, N], the
    final sequences ``ids`` (cond rows, left-padded; ``pads``) and with ``return_trajectory`` the
    answer after every step [T, B, answer_len].
    """
    prompts = [prompts] if isinstance(prompts, ImagePrompt) else list(prompts)
    if not prompts:
        raise ValueError("no prompts")
    first = prompts[0]
    for p in prompts:
        if len(p.unconds) != len(weights):
            raise ValueError(f"{len(weights)} guidance weights for a prompt with {len(p.unconds)} unconditional inputs")
        if p.answer_len != first.answer_len or not np.array_equal(p.image_positions, first.image_positions):
            raise ValueError("the prompts of a batch must share the output grid")
        for seq in (p.cond, *p.unconds):
            if not np.array_equal(seq[-p.answer_len:], first.cond[-first.answer_len:]):
                raise ValueError("every sequence must end with the same masked answer")
    used = [g for g, w in enumerate(weights) if w != 0]
    groups = [[p.cond for p in prompts]] + [[p.unconds[g] for p in prompts] for g in used]
    length = max(len(seq) for group in groups for seq in group)
    if length > model.config.max_sequence_length:
        raise ValueError(f"sequence of {length} tokens exceeds max_sequence_length {model.config.max_sequence_length}")
    t = model.config.tokens
    ta = first.answer_len
    b = len(prompts)
    prefixes = np.full((len(groups), b, length - ta), t.pad_id, np.int32)
    pads = np.zeros((len(groups), b), np.int32)
    for g, group in enumerate(groups):
        for row, seq in enumerate(group):
            pads[g, row] = length - len(seq)
            prefixes[g, row, pads[g, row]:] = np.asarray(seq[:-ta], np.int32)
    consts = {"prefixes": prefixes, "image_positions": np.asarray(first.image_positions, np.int32)}
    if pads.any():
        consts.update(left_padding(pads.reshape(-1), length))
    exact = exact_default() if exact is None else exact
    static = _Static(length - ta, tuple(float(weights[g]) for g in used), float(temperature), t.image_offset,
                     t.codebook_size, t.mask_id, exact, return_trajectory)
    n = len(first.image_positions)
    xs = (np.arange(timesteps, dtype=np.int32), keep_schedule(n, timesteps))
    init = np.tile(np.asarray(first.cond[-ta:], np.int32), (b, 1))
    answer, traj = run_scan(model, _step, static, init, xs, consts, as_randomness(seed, b, tape), exact)
    answer = np.asarray(answer)
    codes = answer[:, first.image_positions] - t.image_offset
    ids = np.concatenate([prefixes[0], answer], axis=1)
    return SamplerOutput(ids=ids, image_codes=codes.astype(np.int32), pads=pads[0],
                         trajectory=None if traj is None else np.asarray(traj))

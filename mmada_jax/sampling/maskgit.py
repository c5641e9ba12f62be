"""MaskGIT image decoding: text-to-image (``t2i_generate``) and the image update shared with the
parallel sampler.

Each image step draws a code at every image position from the guided distribution
``softmax((1 + w) * cond - w * uncond)`` over the codebook columns, keeps the codes already
known, and re-masks the ``mask_len`` least confident new ones, confidence being
``log p(code) + temperature * Gumbel``; ``mask_len = floor(N * cos(pi/2 * r))`` clamped to
``[1, #unknown - 1]``. The reference's ``t2i_generate`` overwrites its temperature argument every
step, so the temperature compounds (``temperature_mode='compound'``, the default for parity);
``'anneal'`` is MaskGIT's ``t0 * (1 - r)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .common import (F32_MAX, as_randomness, categorical_from_uniform, exact_default, mask_by_random_topk,
                     mask_ratio_schedule)
from .runner import SamplerOutput, run_scan


def image_update(cond, uncond, region, *, guidance: float, mask_len_cap, temperature, offset: int,
                 mask_id: int, u_categorical, u_gumbel, exact: bool):
    """One MaskGIT update of an image region.

    Args:
      cond, uncond: logits [B, N, K] at the image positions over the codebook columns (uncond
        None without guidance).
      region: current image tokens [B, N] (image ids or MASK).
      mask_len_cap: float32 floor(N * mask_ratio) for this step (scalar).
      temperature: float32 scalar.
    Returns (new region [B, N], sampled codes [B, N] with known codes kept).
    """
    logits = cond if uncond is None else (1 + guidance) * cond - guidance * uncond
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    sampled = categorical_from_uniform(probs, u_categorical, exact)
    unknown = region == mask_id
    sampled = jnp.where(unknown, sampled, region - offset)
    selected = jnp.take_along_axis(probs, sampled[..., None], axis=-1)[..., 0]
    selected = jnp.where(unknown, selected, F32_MAX)
    n_unknown = unknown.sum(-1, keepdims=True).astype(jnp.float32)
    mask_len = jnp.maximum(1.0, jnp.minimum(n_unknown - 1, mask_len_cap))
    masking = mask_by_random_topk(mask_len, selected, temperature, u_gumbel)
    return jnp.where(masking, mask_id, sampled + offset).astype(jnp.int32), sampled


def temperature_schedule(temperature: float, steps: int, mode: str = "compound") -> np.ndarray:
    """Per-step remasking temperature (float64 arithmetic as the reference, then float32)."""
    out, t = [], float(temperature)
    for s in range(steps):
        ratio = (s + 1) / steps
        if mode == "compound":
            t = t * (1.0 - ratio)
            out.append(t)
        elif mode == "anneal":
            out.append(float(temperature) * (1.0 - ratio))
        else:
            raise ValueError(f"temperature_mode must be 'compound' or 'anneal', got {mode!r}")
    return np.asarray(out, np.float32)


@dataclasses.dataclass(frozen=True)
class _T2IStatic:
    prefix_len: int
    num_image_tokens: int
    guidance: float
    offset: int
    codebook_size: int
    mask_id: int
    exact: bool
    trajectory: bool


def _t2i_step(model, x, xs, consts, rnd, st: _T2IStatic):
    s, cap, temp = xs
    b, length = x.shape
    n = st.num_image_tokens
    pos = length - n - 1 + jnp.arange(n, dtype=jnp.int32)
    cols = (st.offset, st.offset + st.codebook_size)
    if st.guidance > 0:
        uncond_rows = jnp.concatenate([consts["uncond_prefix"], x[:, st.prefix_len:]], axis=1)
        both = model(jnp.concatenate([x, uncond_rows], axis=0), positions=pos, vocab_range=cols)
        cond, uncond = both[:b], both[b:]
    else:
        cond, uncond = model(x, positions=pos, vocab_range=cols), None
    region = x[:, length - n - 1:length - 1]
    u_cat = rnd.uniform("u_multinomial", s, (b, n), jnp.float64 if st.exact else jnp.float32)
    u_gum = rnd.uniform("u_gumbel", s, (b, n))
    region, sampled = image_update(cond, uncond, region, guidance=st.guidance, mask_len_cap=cap,
                                   temperature=temp, offset=st.offset, mask_id=st.mask_id,
                                   u_categorical=u_cat, u_gumbel=u_gum, exact=st.exact)
    x = jax.lax.dynamic_update_slice_in_dim(x, region, length - n - 1, axis=1)
    return x, (sampled, x if st.trajectory else None)


def t2i_generate(model, input_ids, uncond_input_ids=None, *, num_image_tokens: int, max_text_len: int,
                 timesteps: int = 15, guidance_scale: float = 3.5, temperature: float = 1.0,
                 temperature_mode: str = "compound", schedule: str = "cosine", seed=0, tape=None,
                 exact: bool | None = None, return_trajectory: bool = False) -> SamplerOutput:
    """Text-to-image MaskGIT decoding of ``t2i_gen_prompt`` sequences [B, M + N + 3].

    ``uncond_input_ids``: the prompts built from empty texts (needed when ``guidance_scale > 0``);
    their first ``max_text_len + 1`` tokens replace the text prefix in the unconditional rows
    (the reference's ``resolution`` argument, which must equal ``max_text_len``). Returns the
    final sequences and ``image_codes`` [B, N] (the codes of the last step, every position
    filled).
    """
    x = np.asarray(input_ids, np.int32)
    t = model.config.tokens
    prefix = max_text_len + 1
    if x.ndim != 2 or x.shape[1] != prefix + num_image_tokens + 2:
        raise ValueError(f"input_ids must be [B, max_text_len + N + 3] = [B, {prefix + num_image_tokens + 2}], "
                         f"got {x.shape}")
    consts = {}
    if guidance_scale > 0:
        if uncond_input_ids is None:
            raise ValueError("guidance_scale > 0 needs uncond_input_ids")
        consts["uncond_prefix"] = np.asarray(uncond_input_ids, np.int32)[:, :prefix]
    exact = exact_default() if exact is None else exact
    caps = np.floor(np.float32(num_image_tokens) * mask_ratio_schedule(timesteps, schedule)).astype(np.float32)
    temps = temperature_schedule(temperature, timesteps, temperature_mode)
    static = _T2IStatic(prefix, num_image_tokens, float(guidance_scale), t.image_offset, t.codebook_size,
                        t.mask_id, exact, return_trajectory)
    xs = (np.arange(timesteps, dtype=np.int32), caps, temps)
    final, (sampled, traj) = run_scan(model, _t2i_step, static, x, xs, consts, as_randomness(seed, x.shape[0], tape), exact)
    return SamplerOutput(ids=np.asarray(final), image_codes=np.asarray(sampled[-1]),
                         trajectory=None if traj is None else np.asarray(traj))

"""Base MMaDA text-to-image: MaskGIT decoding (``t2i_generate``) as ONE jitted ``lax.scan``.

Each step draws a code at every image position from the guided distribution
``softmax((1 + w) * cond - w * uncond)`` over the codebook columns, keeps the codes already known,
and re-masks the ``mask_len`` least confident new ones (:func:`~mmada_jax.sampling.common.image_update`).
The reference's ``t2i_generate`` overwrites its temperature argument every step, so the
temperature compounds (``temperature_mode='compound'``, the default for parity); ``'anneal'`` is
MaskGIT's ``t0 * (1 - r)``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..sampling.common import (SamplerOutput, Static, as_randomness, exact_default, image_update,
                               mask_ratio_schedule)
from ..sampling.runner import run_scan
from ..settings import resolve, setting
from .layout import T2ILayout


@dataclasses.dataclass(frozen=True)
class T2ISettings:
    """MMaDA text-to-image (defaults: the reference ``inference_t2i.py``)."""

    steps: int = setting(15, "MaskGIT steps", aliases=["--timesteps"], minimum=1)
    guidance: float = setting(3.5, "classifier-free guidance (1 + w)*cond - w*uncond", aliases=["--guidance_scale"])
    temperature: float = setting(1.0, "remasking temperature")
    temperature_mode: str = setting("compound", "the reference's compounding temperature, or MaskGIT's anneal",
                                    choices=["compound", "anneal"])
    schedule: str = setting("cosine", "mask-ratio schedule (cosine, linear, powP)")


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


def _step(model, x, xs, consts, rnd, st: Static):
    s, cap, temp = xs
    b = x.shape[0]
    lay, t = st.layout, st.tokens
    n = lay.num_image_tokens
    pos = jnp.asarray(lay.image_positions())
    cols = (t.image_offset, t.image_offset + t.codebook_size)
    if st.settings.guidance > 0:
        uncond_rows = jnp.concatenate([consts["uncond_prefix"], x[:, lay.prefix_len:]], axis=1)
        both = model(jnp.concatenate([x, uncond_rows], axis=0), positions=pos, vocab_range=cols)
        cond, uncond = both[:b], both[b:]
    else:
        cond, uncond = model(x, positions=pos, vocab_range=cols), None
    u_cat = rnd.uniform("u_multinomial", s, (b, n), jnp.float64 if st.exact else jnp.float32)
    u_gum = rnd.uniform("u_gumbel", s, (b, n))
    region, sampled = image_update(cond, uncond, x[:, lay.image_start:lay.image_end], guidance=st.settings.guidance,
                                   mask_len_cap=cap, temperature=temp, offset=t.image_offset, mask_id=t.mask_id,
                                   u_categorical=u_cat, u_gumbel=u_gum, exact=st.exact)
    x = x.at[:, lay.image_start:lay.image_end].set(region)
    return x, (sampled, x if st.trajectory else None)


def generate_t2i(model, input_ids, uncond_input_ids=None, *, layout: T2ILayout, settings: T2ISettings | None = None,
                 seed=0, tape=None, exact: bool | None = None, return_trajectory: bool = False,
                 **overrides) -> SamplerOutput:
    """Text-to-image MaskGIT decoding of ``t2i_gen_prompt`` sequences [B, layout.total].

    ``uncond_input_ids``: the prompts built from empty texts (needed when guidance > 0); their text
    part replaces the text prefix in the unconditional rows (the reference's ``resolution``
    argument, which must equal ``max_text_len``). Returns the final sequences and ``image_codes``
    [B, N] (the codes of the last step, every position filled).
    """
    args = prepare(model, input_ids, uncond_input_ids, layout=layout, settings=settings, seed=seed, tape=tape,
                   exact=exact, return_trajectory=return_trajectory, **overrides)
    final, (sampled, traj) = run_scan(model, _step, *args)
    return SamplerOutput(ids=np.asarray(final), image_codes=np.asarray(sampled[-1]), layout=layout,
                         trajectory=None if traj is None else np.asarray(traj))


def prepare(model, input_ids, uncond_input_ids=None, *, layout: T2ILayout, settings: T2ISettings | None = None,
            seed=0, tape=None, exact: bool | None = None, return_trajectory: bool = False, **overrides):
    """The arguments of :func:`~mmada_jax.sampling.runner.run_scan` for one run: (static, initial
    carry, per-step inputs, constants, randomness, exact)."""
    s = resolve(T2ISettings, settings, **overrides)
    x = np.asarray(input_ids, np.int32)
    t = model.config.tokens
    if x.ndim != 2 or x.shape[1] != layout.total:
        raise ValueError(f"input_ids must be [B, max_text_len + N + 3] = [B, {layout.total}], got {x.shape}")
    consts = {}
    if s.guidance > 0:
        if uncond_input_ids is None:
            raise ValueError("guidance > 0 needs uncond_input_ids")
        consts["uncond_prefix"] = np.asarray(uncond_input_ids, np.int32)[:, :layout.prefix_len]
    exact = exact_default() if exact is None else exact
    caps = np.floor(np.float32(layout.num_image_tokens) * mask_ratio_schedule(s.steps, s.schedule)).astype(np.float32)
    temps = temperature_schedule(s.temperature, s.steps, s.temperature_mode)
    static = Static(s, layout, t, exact, return_trajectory)
    xs = (np.arange(s.steps, dtype=np.int32), caps, temps)
    return static, x, xs, consts, as_randomness(seed, x.shape[0], tape), exact

"""MMaDA-Parallel-A's joint sampler (the reference's ``generate_ti2ti``): thinking-aware image
editing, the masked reasoning text and the masked output image denoised together in ONE jitted
``lax.scan``.

The sequence is ``[cond input | <answer> <boi> grid <eoi> MASK*T </answer>]``
(:mod:`mmada_jax.parallel_a.layout`). Each of the ``S = text_steps`` steps runs one conditional
forward (no attention mask) and:

* text (no guidance): ``x0 = argmax(l + text_temperature * Gumbel)`` over the FULL vocabulary
  (as the reference; ``restrict_text`` limits it to text ids), confidence = the un-noised softmax
  probability of ``x0``; the ``k_s`` most confident masked positions receive ``x0``,
  ``k_s = rem - int(M (1 - (s+1)/S))`` (``M`` masked text tokens at the start);
* image, at the steps ``round(linspace(S//4, S-1, image_steps))``, from the SAME conditional
  logits (taken before the text update): two unconditional rows are made from the CURRENT
  sequence (after the text update) by overwriting its prefix with the uncond-text / uncond-image
  prefixes, and ``guided = cond + instruction_cfg (cond - uncond_text) + image_cfg (cond -
  uncond_img)`` over the codebook columns drives a MaskGIT update: a categorical draw (argmax at
  temperature 0), known codes kept, and the ``mask_len = clamp(floor(N cos(pi/2 (s+1)/S)), 1,
  #unknown - 1)`` lowest of ``log(p + 1e-10) + image_temperature (1 - (s+1)/S) * z`` (``z``
  Gaussian) re-masked.

After the loop image positions still MASK (always exactly one with the reference schedule, since
``mask_len >= 1``) get a uniform random code (``final_fill='random'``, the reference) or the last
step's draw at that position (``final_fill='sampled'``, which avoids a random token in the output
image). Spec: ``mmada_a.md`` §4.2; golden: ``samplers_a``.

Batches: :func:`generate` takes several prompts whose instructions (or input-image grids) differ
in length. Rows are left-padded; the pads are hard-masked out of attention and the RoPE positions
shifted, and each row's unconditional prefixes are written at its own offset (as full-length
overlays), so row b computes what it computes alone with ``keys[b]``. Unpadded batches run
without any attention mask, as the reference.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..sampling import recording, step_cache
from ..sampling.common import (F32_MAX, SamplerOutput, Static, as_randomness, categorical_from_uniform,
                               commit_text, exact_default, first_argmax, image_step_indices, left_padding,
                               mask_ratio_schedule, max_probability, text_decision, top_k_mask)
from ..sampling.recording import token_logp
from ..sampling.runner import run_scan
from ..settings import image_steps_within_text_steps, resolve, setting
from .layout import Layout


@dataclasses.dataclass(frozen=True)
class Settings(step_cache.CacheSettings):
    """MMaDA-Parallel-A sampling (defaults: the reference README command; the step cache off)."""

    text_len: int = setting(256, "reasoning-text budget in tokens", aliases=["--text_gen_length"], minimum=1)
    text_steps: int = setting(128, "denoising steps (one conditional forward each)", aliases=["--text_steps"],
                              minimum=1)
    image_steps: int = setting(64, "how many of the steps also update the image", aliases=["--timesteps"],
                               minimum=1)
    instruction_cfg: float = setting(0.0, "image guidance towards the instruction (against the <uncondition> "
                                          "turn; inference.py's argparse has 2.5)", aliases=["--cfg_scale", "--cfg-scale"])
    image_cfg: float = setting(4.0, "image guidance towards the input image (against the image-free turn)",
                               aliases=["--cfg_img"])
    image_temperature: float = setting(1.0, "image sampling temperature (0: argmax); scales the remasking noise",
                                       aliases=["--temperature"])
    text_temperature: float = setting(0.0, "Gumbel noise scale of the text argmax (0: greedy)",
                                      aliases=["--text_temperature"])
    remasking: str = setting("low_confidence", "which masked text slots are written each step",
                             choices=["low_confidence", "random"])
    schedule: str = setting("cosine", "image mask-ratio schedule (cosine, linear, powP)")
    restrict_text: bool = setting(False, "decode text over text ids only (the reference argmaxes the whole "
                                         "vocabulary)")
    final_fill: str = setting("random", "the image token still masked at the end: a uniform random code "
                                        "(reference) or the last step's draw", choices=["random", "sampled"])

    def check(self) -> None:
        image_steps_within_text_steps(self)
        self.check_cache()

    @property
    def run_uncond(self) -> bool:
        return self.instruction_cfg > 0 or self.image_cfg > 0


def _gumbel(u):
    """-A's text Gumbel noise: -log(-log(u + 1e-10) + 1e-10)."""
    return -jnp.log(-jnp.log(u + 1e-10) + 1e-10)


def _guided_image(model, hidden, x, consts, st: Static, cache=None):
    """The conditional image logits (from ``hidden``, the step's forward) and the guided ones
    (the unconditional rows made from ``x``, the sequence after the text update), over the
    codebook columns at the image positions: [B, N, K] each; and the step cache (None when off),
    whose unconditional slot serves the unconditional rows: a full forward on the first image step
    after each full step of the conditional rows, a cached one otherwise."""
    cfg, lay, t = st.settings, st.layout, st.tokens
    b = x.shape[0]
    pos = jnp.asarray(lay.image_positions())
    cols = (t.image_offset, t.image_offset + t.codebook_size)
    cond = model.head(hidden, positions=pos, vocab_range=cols).astype(jnp.float32)
    if not cfg.run_uncond:
        return cond, cond, cache
    # the current sequence with each prefix written over its start (per-row overlays)
    rows = jnp.concatenate([jnp.where(consts["uncon_text_on"], consts["uncon_text"], x),
                            jnp.where(consts["uncon_image_on"], consts["uncon_image"], x)], axis=0)
    twice = lambda a: None if a is None else jnp.concatenate([a, a], axis=0)
    mask, position_ids = twice(consts.get("attention_mask")), twice(consts.get("position_ids"))
    if cache is None:
        uncond, _ = model.encode(rows, mask, mask_mode="hard", position_ids=position_ids, inference=True)
    else:
        def full(cache):
            hidden, slot = step_cache.full(model, rows, mask, position_ids)
            return hidden, dict(cache, uncond_slot=slot, uncond_stale=jnp.asarray(False))

        def cached(cache):
            groups = step_cache.cache_groups(x, cache, st.layout, st.tokens.mask_id, st.settings, twins=2)
            hidden, slot, _ = step_cache.partial(model, rows, cache["uncond_slot"], groups, mask, position_ids)
            return hidden, dict(cache, uncond_slot=slot)
        uncond, cache = jax.lax.cond(cache["uncond_stale"], full, cached, cache)
    uncond = model.head(uncond, positions=pos, vocab_range=cols).astype(jnp.float32)
    guided = cond
    if cfg.instruction_cfg != 0:
        guided = guided + cfg.instruction_cfg * (cond - uncond[:b])
    if cfg.image_cfg != 0:
        guided = guided + cfg.image_cfg * (cond - uncond[b:])
    return cond, guided, cache


def _step(model, carry, xs, consts, rnd, st: Static):
    x, gumbel_index, j, last_sampled = carry[:4]
    before = x
    s, k, is_image_step, cap, temp, refresh = xs
    b = x.shape[0]
    cfg, lay, t = st.settings, st.layout, st.tokens
    n, kk, off = lay.num_image_tokens, t.codebook_size, t.image_offset
    pos = jnp.asarray(lay.image_positions())
    mask, position_ids = consts.get("attention_mask"), consts.get("position_ids")   # only when left-padded
    region = x[:, lay.text_start:lay.text_end]
    any_mask = jnp.any(region == t.mask_id)

    def decide(text_hidden, positions):
        """Text: no guidance, the full vocabulary (or text ids only), the head reduced chunk by chunk."""
        return text_decision(_text_chunks(model, text_hidden, st), model.config.vocab_size,
                             text_hidden.shape[:2] if positions is None else region.shape,
                             temperature=cfg.text_temperature, rnd=rnd, index=gumbel_index, exact=st.exact,
                             gumbel=_gumbel, gumbel_dtype=jnp.float32, want_cond_lse=bool(st.record),
                             positions=positions)

    hidden, decision, cache = step_cache.forward(model, x, x, carry[-1] if cfg.cached else None, refresh, decide,
                                                 layout=lay, mask_id=t.mask_id, settings=cfg, attention_mask=mask,
                                                 position_ids=position_ids)
    text_hidden = hidden[:, jnp.asarray(lay.text_positions())]
    region = commit_text(region, decision.x0, decision.confidence, k, mask_id=t.mask_id, remasking=cfg.remasking,
                         rnd=rnd, index=s)
    x = x.at[:, lay.text_start:lay.text_end].set(region)
    if cfg.text_temperature > 0:
        gumbel_index = gumbel_index + any_mask.astype(jnp.int32)

    def update_image(ops):
        x, j, _, cache = ops
        current = x[:, pos]
        unknown = current == t.mask_id
        prev = jnp.clip(current - off, 0, kk - 1)
        _, guided, cache = _guided_image(model, hidden, x, consts, st, cache)
        if cache is not None:      # the step cache ranks masked image positions by it
            cache = dict(cache, image_conf=max_probability(guided))
        probs = jax.nn.softmax(guided, axis=-1)
        if cfg.image_temperature == 0:
            sampled = first_argmax(probs)
        else:
            u = rnd.uniform("u_multinomial", j, (b, n), jnp.float64 if st.exact else jnp.float32)
            sampled = categorical_from_uniform(probs, u, st.exact)
        sampled = jnp.clip(jnp.where(unknown, sampled, prev), 0, kk - 1)
        selected = jnp.take_along_axis(probs, sampled[..., None], axis=-1)[..., 0]
        selected = jnp.where(unknown, selected, F32_MAX)
        n_unknown = unknown.sum(-1).astype(jnp.int32)
        mask_len = jnp.clip(jnp.maximum(1, jnp.minimum(n_unknown - 1, cap)), 0, n - 1)
        z = rnd.normal("randn_remask", j, (b, n))
        confidence = jnp.log(selected + 1e-10) + temp * z
        masking = top_k_mask(-confidence, mask_len)  # the mask_len lowest (stable ascending order)
        new = jnp.where(masking, t.mask_id, sampled + off).astype(jnp.int32)
        return x.at[:, pos].set(new), j + 1, sampled, cache

    x, j, last_sampled, cache = jax.lax.cond(is_image_step, update_image, lambda ops: ops,
                                             (x, j, last_sampled, cache))
    carry_out = (x, gumbel_index, j, last_sampled)
    if st.record:
        hit = consts["record_steps"] == s

        def write(buffers):
            return recording.write(buffers, hit, **_recorded(model, hidden, text_hidden, before, x, last_sampled,
                                                              is_image_step, decision, consts, st))

        carry_out += (jax.lax.cond(hit.any(), write, lambda buffers: buffers, carry[4]),)
    if cache is not None:
        carry_out += (cache,)
    return carry_out, (x if st.trajectory else None)


def _text_chunks(model, text_hidden, st: Static):
    """``(start, size) -> (logits, logits)`` of the text sampler's vocabulary: all of it (the
    reference), or text ids only with ``restrict_text`` (the reference lets image and mask ids win)."""
    t = st.tokens

    def chunk_logits(start, size):
        logits = model.head_columns(text_hidden, start, size).astype(jnp.float32)
        if st.settings.restrict_text:
            col = start + jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
            logits = jnp.where((col < t.image_offset) & (col != t.mask_id), logits, -jnp.inf)
        return logits, logits
    return chunk_logits


def _recorded(model, hidden, text_hidden, before, after, last_sampled, is_image_step, decision, consts,
              st: Static) -> dict:
    """What a recorded step keeps (:mod:`~mmada_jax.sampling.recording`): the states around it, the
    image and text predicted at it and the conditional log-probabilities of the tokens it decoded
    (text under the text sampler's vocabulary, image over the codebook)."""
    lay, t = st.layout, st.tokens
    pos = jnp.asarray(lay.image_positions())
    text_pos = jnp.asarray(lay.text_positions())
    known = before[:, pos]

    def guided_argmax(_):     # text-only step: the guided image prediction, known codes kept
        _, guided, _ = _guided_image(model, hidden, after, consts, st)
        return jnp.where(known != t.mask_id, known - t.image_offset, first_argmax(guided))

    predicted = jax.lax.cond(is_image_step, lambda _: last_sampled, guided_argmax, None)
    cond = model.head(hidden, positions=pos, vocab_range=(t.image_offset, t.image_offset + t.codebook_size))
    logp = jnp.zeros(after.shape, jnp.float32)
    logp = logp.at[:, pos].set(token_logp(cond, jnp.clip(after[:, pos] - t.image_offset, 0, t.codebook_size - 1)))
    text_after = after[:, text_pos]
    logp = logp.at[:, text_pos].set(model.head_at(text_hidden, text_after).astype(jnp.float32) - decision.cond_lse)
    decoded = (before == t.mask_id) & (after != t.mask_id)
    text = jnp.where(text_after != t.mask_id, text_after, decision.argmax)
    return {"before": before, "after": after, "image_codes": predicted, "text_ids": text,
            "logp": jnp.where(decoded, logp, 0.0)}


def generate_ids(model, input_ids, layout: Layout, *, uncon_text=None, uncon_image=None,
                 settings: Settings | None = None, seed=0, tape=None, exact: bool | None = None,
                 return_trajectory: bool = False, record_steps=None, **overrides) -> SamplerOutput:
    """Jointly generate the reasoning text and the edited image from full sequences.

    Args:
      input_ids: the full sequence(s) [L] or [B, L] (``EditPrompt.full_input_ids``) sharing
        ``layout`` (``layout.text_len`` must be the sequence's text budget).
      uncon_text, uncon_image: the prefixes [Lt] / [Li] (or one per row) written over the start of
        the current sequence to make the unconditional rows (None: no overwrite).
      settings: :class:`Settings` (``**overrides`` replace single fields).
      seed: int, PRNG key or one key per row; tape: recorded noise to replay (``u_text_gumbel``
        [draws, B, T, V], ``u_multinomial`` [S_img, B*N], ``randn_remask`` [S_img, B, N],
        ``randint_fill`` [#left masked]); exact: float64 sampling arithmetic (default: not on TPU).
      record_steps: [B, s] step indices per row to record for RL
        (:mod:`~mmada_jax.sampling.recording`; ``recording`` of the output).
    Returns ``ids`` (the final sequences; positions still masked stay MASK with ``random``),
    ``image_codes`` [B, N] (codes 0..K-1, every position filled), ``text_ids`` [B, T] (the text
    region; the reference returns its non-MASK entries) and, with ``return_trajectory``, the
    sequence after every step [S, B, L].
    """
    x = np.asarray(input_ids, np.int32)
    x = x[None] if x.ndim == 1 else x
    b, length = x.shape
    prefixes = {}
    for name, prefix in (("uncon_text", uncon_text), ("uncon_image", uncon_image)):
        p = np.zeros((b, 0), np.int32) if prefix is None else np.asarray(prefix, np.int32)
        p = np.broadcast_to(p[None] if p.ndim == 1 else p, (b, p.shape[-1]))
        if p.shape[1] > length:
            raise ValueError(f"{name} ({p.shape[1]} tokens) is longer than the sequence ({length})")
        prefixes[name] = list(p)
    return _generate(model, x, layout, _prefix_overlays(prefixes, np.zeros(b, np.int32), length), None,
                     resolve(Settings, settings, **overrides), seed, tape, exact, return_trajectory, record_steps)


def generate(model, prompts, *, settings: Settings | None = None, seed=0, tape=None, exact: bool | None = None,
             return_trajectory: bool = False, record_steps=None, **overrides) -> SamplerOutput:
    """:func:`generate_ids` on one :class:`~mmada_jax.parallel_a.prompts.EditPrompt` or a list of
    them (sequences, layout and unconditional prefixes taken from each). The prompts of a batch
    must share the answer (output grid, text budget); their instructions and input images may
    differ in length: rows are left-padded (see the module docstring). The returned ``ids`` (and
    trajectory) are the padded rows, ``layout`` their layout; ``pads`` [B] says how many leading
    pad tokens each has. ``settings.text_len`` is the prompts' text budget."""
    x, layout, overlays, pads = _batch(model, prompts)
    settings = resolve(Settings, settings, **overrides)
    out = _generate(model, x, layout, overlays, pads, settings, seed, tape, exact, return_trajectory, record_steps)
    return dataclasses.replace(out, pads=pads)


def _batch(model, prompts) -> tuple:
    """(rows [B, L] left-padded, their layout, the unconditional overlays, pads [B]) of edit
    prompts sharing the answer (output grid, text budget)."""
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
    if not prompts:
        raise ValueError("no prompts")
    answer = lambda p: (p.layout.grid, p.layout.text_len, p.layout.eoa_len)
    for p in prompts[1:]:
        if answer(p) != answer(prompts[0]):
            raise ValueError(f"the prompts of a batch must share the output grid and text budget; got "
                             f"(grid, T, eoa) {answer(prompts[0])} and {answer(p)}")
    length = max(len(p.full_input_ids) for p in prompts)
    pads = np.asarray([length - len(p.full_input_ids) for p in prompts], np.int32)
    x = np.full((len(prompts), length), model.config.tokens.pad_id, np.int32)
    for row, (p, pad) in enumerate(zip(prompts, pads)):
        x[row, pad:] = p.full_input_ids
    overlays = _prefix_overlays({"uncon_text": [p.uncon_input_text for p in prompts],
                                 "uncon_image": [p.uncon_input_image for p in prompts]}, pads, length)
    layout = dataclasses.replace(prompts[0].layout, prompt_len=length - prompts[0].layout.answer_len)
    return x, layout, overlays, pads


def prepare(model, prompts, *, settings: Settings | None = None, seed=0, tape=None, exact: bool | None = None,
            return_trajectory: bool = False, record_steps=None, **overrides):
    """The arguments of :func:`~mmada_jax.sampling.runner.run_scan` for :func:`generate`'s run on
    ``prompts``: (static, initial carry, per-step inputs, constants, randomness, exact), and the
    rows' left-padding [B] (as :func:`mmada_jax.parallel_m.sampler.prepare`). Only
    ``model.config`` is read, so an abstract model (AOT memory plans) serves."""
    x, layout, overlays, pads = _batch(model, prompts)
    return _prepare(model, x, layout, overlays, pads, resolve(Settings, settings, **overrides), seed, tape, exact,
                    return_trajectory, record_steps) + (pads,)


def _prefix_overlays(prefixes: dict, pads: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """Per-row overlays of the unconditional prefixes: ``name`` [B, L] holds row b's prefix at
    ``[pads[b], pads[b] + len)`` and ``name_on`` [B, L] marks those positions (the reference's
    in-place overwrite of the sequence's start, moved past each row's left padding)."""
    out = {}
    for name, rows in prefixes.items():
        out[name] = np.zeros((len(rows), length), np.int32)
        out[f"{name}_on"] = np.zeros((len(rows), length), bool)
        for row, (prefix, pad) in enumerate(zip(rows, pads)):
            out[name][row, pad:pad + len(prefix)] = prefix
            out[f"{name}_on"][row, pad:pad + len(prefix)] = True
    return out


def text_schedule(masked: int, steps: int) -> np.ndarray:
    """How many of ``masked`` text tokens each of ``steps`` steps decodes: ``k_s = rem - int(M (1 -
    (s+1)/S))`` (the reference's schedule) [steps]."""
    k, rem = np.zeros(steps, np.int32), masked
    for i in range(steps):
        k[i] = max(0, rem - int(masked * (1 - (i + 1) / steps)))
        rem -= k[i]
    return k


def max_text_per_step(settings: Settings) -> int:
    """The most text tokens one step decodes (the whole text budget starts masked)."""
    return int(text_schedule(settings.text_len, settings.text_steps).max())


def _prepare(model, x, layout: Layout, overlays, pads, settings: Settings, seed, tape, exact,
             return_trajectory, record_steps=None) -> tuple:
    """(static, initial carry, per-step inputs, constants, randomness, exact) of the sampler on
    rows ``x`` [B, L] sharing ``layout``, the unconditional rows given as overlays (``uncon_text``
    [B, L] written where ``uncon_text_on``, same for ``uncon_image``), ``pads`` [B] left-padding
    lengths (None: no padding, no attention mask)."""
    b, length = x.shape
    t = model.config.tokens
    mask = t.mask_id
    s = settings
    if layout.total != length:
        raise ValueError(f"the layout describes {layout.total} tokens but the sequences have {length}")
    if layout.text_len != s.text_len:
        raise ValueError(f"the prompts have a text budget of {layout.text_len} but text_len is {s.text_len}")
    positions = layout.image_positions()
    if np.any(x[:, positions] == t["newline"]):
        raise ValueError("the layout's image positions hold NEWLINE tokens: the sequences do not follow the layout")

    consts = dict(overlays)
    if pads is not None and np.any(pads):
        consts.update(left_padding(pads, length))

    # text schedule: k_s = rem - int(M (1 - (s+1)/S)), per row
    steps, n = s.text_steps, layout.num_image_tokens
    k = np.stack([text_schedule(int((row[layout.text_start:layout.text_end] == mask).sum()), steps) for row in x],
                 axis=1)
    is_image = np.isin(np.arange(steps), image_step_indices(steps, s.image_steps))
    caps = np.floor(np.float32(n) * mask_ratio_schedule(steps, s.schedule)).astype(np.int32)
    temps = np.asarray([s.image_temperature * (1.0 - (i + 1) / steps) for i in range(steps)], np.float32)

    exact = exact_default() if exact is None else exact
    init = (x, np.int32(0), np.int32(0), np.zeros((b, n), np.int32))
    record = 0
    if record_steps is not None:
        consts["record_steps"] = recording.check_steps(record_steps, b, steps)
        record = consts["record_steps"].shape[1]
        init += (recording.empty(b, record, length, n, layout.text_len),)
    cache = step_cache.CacheSpec(length, layout.text_len, n, 1, exact, bool(record), s.run_uncond) if s.cached else None
    static = Static(s, layout, t, exact, return_trajectory, record, cache)
    rnd = as_randomness(seed, b, tape)
    xs = (np.arange(steps, dtype=np.int32), k, is_image, caps, temps, step_cache.refresh_steps(steps, s))
    return static, init, xs, consts, rnd, exact


def _generate(model, x, layout: Layout, overlays, pads, settings: Settings, seed, tape, exact,
              return_trajectory, record_steps=None) -> SamplerOutput:
    """The sampler on rows ``x`` (see :func:`_prepare`), its final image completed."""
    static, init, xs, consts, rnd, exact = _prepare(model, x, layout, overlays, pads, settings, seed, tape, exact,
                                                    return_trajectory, record_steps)
    t = model.config.tokens
    mask, off, kk = t.mask_id, t.image_offset, t.codebook_size
    s, record = settings, static.record
    b, n = x.shape[0], layout.num_image_tokens
    positions = layout.image_positions()
    carry, traj = run_scan(model, _step, static, init, xs, consts, rnd, exact)
    final, last_sampled = carry[0], carry[3]
    final = np.array(final)

    # image codes; positions still masked get a fill code (position order, row-major)
    image = final[:, positions]
    left = image == mask
    codes = np.clip(image - off, 0, kk - 1).astype(np.int32)
    if left.any():
        if s.final_fill == "sampled":
            codes[left] = np.asarray(last_sampled)[left]
            final[:, positions] = np.where(left, codes + off, image)
        elif rnd.tape is not None and "randint_fill" in rnd.tape:
            recorded = np.asarray(rnd.tape["randint_fill"]).reshape(-1)
            if recorded.size < left.sum():
                raise ValueError(f"randint_fill holds {recorded.size} codes, {int(left.sum())} needed")
            codes[left] = recorded[:left.sum()]
        else:
            draws = np.asarray(rnd.integers("randint_fill", (b, n), kk))
            codes[left] = draws[left]
    recorded = recording.as_recording(consts["record_steps"], carry[4]) if record else None
    return SamplerOutput(ids=final, image_codes=codes, text_ids=final[:, layout.text_start:layout.text_end],
                         trajectory=None if traj is None else np.asarray(traj), layout=layout, recording=recorded)

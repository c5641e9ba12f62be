"""MMaDA-Parallel-M's joint sampler (``interleave_generate``): reasoning text and output image
denoised together, each step seeing the other, as ONE jitted ``lax.scan``.

Every text step runs one forward of the (cond; uncond) rows, where the unconditional row is the
null input followed by the CURRENT output, so both rows share the partial text and image. Text:
a fixed number of masked text positions per step (``num_transfer_tokens`` over all steps, no
blocks) get their most confident argmax. Image: at the steps
``round(linspace(S//4, S-1, image_steps))`` the same forward's logits drive one MaskGIT update
(:func:`~mmada_jax.sampling.common.image_update`) whose schedule uses the TEXT step index.

Guidance: the image uses ``(1 + image_cfg) * cond - image_cfg * uncond``. The reference's text
guidance is ``cond + text_cfg * (uncond - cond)`` (``text_guidance='reference'``, the default for
parity: with text_cfg > 0 it pushes TOWARDS the unconditional logits); ``'conventional'`` is the
usual ``cond + text_cfg * (cond - uncond)``.

Rows of a batch may have inputs of different lengths: they are left-padded, the pads hard-masked
out of attention and the RoPE positions shifted, so each row computes what it computes alone.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..sampling import recording, step_cache
from ..sampling.common import (SamplerOutput, Static, as_randomness, commit_text, exact_default, first_argmax,
                               image_step_indices, image_update, left_padding, mask_ratio_schedule, max_probability,
                               num_transfer_tokens, text_decision)
from ..sampling.recording import token_logp
from ..sampling.runner import run_scan
from ..sequences import pad_rows
from ..settings import image_steps_within_text_steps, resolve, setting
from .layout import Layout, output_init


@dataclasses.dataclass(frozen=True)
class Settings(step_cache.CacheSettings):
    """MMaDA-Parallel-M sampling (defaults: the reference ``inference.py``, image guidance 4.0; the
    step cache off)."""

    text_len: int = setting(256, "reasoning-text budget in tokens (BOS included)", aliases=["--text_gen_length"],
                            minimum=2)
    text_steps: int = setting(128, "denoising steps (one forward each)", aliases=["--text_steps"],
                              minimum=1)
    image_steps: int = setting(30, "how many of the steps also update the image", aliases=["--timesteps"],
                               minimum=1)
    text_cfg: float = setting(0.0, "text guidance (reference formula cond + s*(uncond - cond); inference.py "
                                   "used 2.5)")
    image_cfg: float = setting(4.0, "image guidance (1 + s)*cond - s*uncond", aliases=["--cfg_img"])
    text_guidance: str = setting("reference", "text guidance formula", choices=["reference", "conventional"])
    text_temperature: float = setting(0.0, "Gumbel noise scale of the text argmax (0: greedy)",
                                      aliases=["--text_temperature"])
    image_temperature: float = setting(1.0, "image sampling / remasking temperature", aliases=["--temperature"])
    remasking: str = setting("low_confidence", "which masked text slots are written each step",
                             choices=["low_confidence", "random"])
    schedule: str = setting("cosine", "image mask-ratio schedule (cosine, linear, powP)")

    def check(self) -> None:
        image_steps_within_text_steps(self)
        self.check_cache()


def max_text_per_step(settings: Settings) -> int:
    """The most text tokens one step decodes (``num_transfer_tokens`` of the text budget after BOS)."""
    return int(num_transfer_tokens(np.asarray([settings.text_len - 1]), settings.text_steps)[0].max())


def _step(model, carry, xs, consts, rnd, st: Static):
    x, last_sampled, j = carry[:3]
    before = x
    i, k, is_image_step, cap, temp, refresh = xs
    b = x.shape[0]
    s, lay = st.settings, st.layout
    t = st.tokens
    guided = s.text_cfg != 0 or s.image_cfg != 0
    rows = x
    mask = consts.get("attention_mask")            # present only when rows are left-padded
    position_ids = consts.get("position_ids")
    if guided:
        rows = jnp.concatenate([x, jnp.concatenate([consts["uncond"], x[:, lay.input_len:]], axis=1)], axis=0)
        if mask is not None:   # an unconditional row is as long as its conditional twin: same padding
            mask = jnp.concatenate([mask, mask], axis=0)
            position_ids = jnp.concatenate([position_ids, position_ids], axis=0)
    with_uncond = guided and s.text_cfg != 0      # text_cfg 0: the guided text logits are the conditional ones

    def decide(text_hidden, positions):
        """The text decision of the text positions in ``text_hidden`` [rows, T', d] (cond rows first;
        ``positions`` [B, T']: which of the text budget they are, None: the T' in order)."""
        if not with_uncond:
            text_hidden = text_hidden[:b]

        def chunk_logits(start, size):     # the head reduced chunk by chunk (vocab_chunks)
            logits = model.head_columns(text_hidden, start, size).astype(jnp.float32)
            cond = logits[:b]
            if not with_uncond:
                return cond, cond
            uncond = logits[b:]
            if s.text_guidance == "reference":
                return cond + s.text_cfg * (uncond - cond), cond
            return cond + s.text_cfg * (cond - uncond), cond
        return text_decision(chunk_logits, model.config.vocab_size, (b, s.text_len if positions is not None
                                                                     else text_hidden.shape[1]),
                             temperature=s.text_temperature, rnd=rnd, index=i, exact=st.exact,
                             want_cond_lse=bool(st.record), positions=positions)

    hidden, decision, cache = step_cache.forward(model, rows, x, carry[-1] if s.cached else None, refresh, decide,
                                                 layout=lay, mask_id=t.mask_id, settings=s, attention_mask=mask,
                                                 position_ids=position_ids)
    region = commit_text(x[:, lay.text_start:], decision.x0, decision.confidence, jnp.full((b,), k),
                         mask_id=t.mask_id, remasking=s.remasking, rnd=rnd, index=i)
    x = x.at[:, lay.text_start:].set(region)

    # image: a MaskGIT update on the image steps, from the same forward pass
    def update_image(operands):
        x, _, j, image_conf = operands
        n = lay.num_image_tokens
        logits = model.head(hidden, positions=jnp.asarray(lay.image_positions()),
                            vocab_range=(t.image_offset, t.image_offset + t.codebook_size)).astype(jnp.float32)
        cond, uncond = (logits[:b], logits[b:]) if guided else (logits, None)
        u_cat = rnd.uniform("u_multinomial", j, (b, n), jnp.float64 if st.exact else jnp.float32)
        u_gum = rnd.uniform("u_gumbel", j, (b, n))
        region, sampled = image_update(cond, uncond, x[:, lay.image_start:lay.image_end], guidance=s.image_cfg,
                                       mask_len_cap=cap, temperature=temp, offset=t.image_offset,
                                       mask_id=t.mask_id, u_categorical=u_cat, u_gumbel=u_gum, exact=st.exact)
        if image_conf is not None:     # the step cache ranks masked image positions by it
            image_conf = max_probability(cond if uncond is None else (1 + s.image_cfg) * cond - s.image_cfg * uncond)
        return x.at[:, lay.image_start:lay.image_end].set(region), sampled, j + 1, image_conf

    image_conf = None if cache is None else cache["image_conf"]
    x, last_sampled, j, image_conf = jax.lax.cond(is_image_step, update_image, lambda ops: ops,
                                                  (x, last_sampled, j, image_conf))
    out = (x, last_sampled, j)
    if st.record:
        hit = consts["record_steps"] == i

        def write(buffers):
            text_hidden = hidden[:b, jnp.asarray(lay.text_positions())]
            return recording.write(buffers, hit, **_recorded(model, hidden, text_hidden, before, x, last_sampled,
                                                              is_image_step, decision, st))

        out += (jax.lax.cond(hit.any(), write, lambda buffers: buffers, carry[3]),)
    if cache is not None:
        out += (dict(cache, image_conf=image_conf),)
    return out, (x if st.trajectory else None)


def _recorded(model, hidden, text_hidden, before, after, last_sampled, is_image_step, decision, st: Static) -> dict:
    """What a recorded step keeps (:mod:`~mmada_jax.sampling.recording`): the states around it, the
    image and text predicted at it and the conditional log-probabilities of the tokens it decoded."""
    s, lay, t = st.settings, st.layout, st.tokens
    b = before.shape[0]
    logits = model.head(hidden, positions=jnp.asarray(lay.image_positions()),
                        vocab_range=(t.image_offset, t.image_offset + t.codebook_size)).astype(jnp.float32)
    cond = logits[:b]
    guided = cond if logits.shape[0] == b else (1 + s.image_cfg) * cond - s.image_cfg * logits[b:]
    known = before[:, lay.image_start:lay.image_end]
    predicted = jnp.where(known != t.mask_id, known - t.image_offset, first_argmax(guided))
    predicted = jnp.where(is_image_step, last_sampled, predicted)
    image_after = after[:, lay.image_start:lay.image_end]
    logp = jnp.zeros(after.shape, jnp.float32)
    logp = logp.at[:, lay.image_start:lay.image_end].set(
        token_logp(cond, jnp.clip(image_after - t.image_offset, 0, t.codebook_size - 1)))
    text_after = after[:, lay.text_start:]
    logp = logp.at[:, lay.text_start:].set(model.head_at(text_hidden, text_after).astype(jnp.float32)
                                           - decision.cond_lse)
    decoded = (before == t.mask_id) & (after != t.mask_id)
    text = jnp.where(text_after != t.mask_id, text_after, decision.argmax)
    return {"before": before, "after": after, "image_codes": predicted, "text_ids": text,
            "logp": jnp.where(decoded, logp, 0.0)}


def generate(model, input_ids, uncond_input_ids, *, num_image_tokens: int, settings: Settings | None = None,
             seed=0, tape=None, exact: bool | None = None, return_trajectory: bool = False,
             record_steps=None, **overrides) -> SamplerOutput:
    """Jointly generate reasoning text and an output image (MMaDA-Parallel-M).

    Args:
      input_ids, uncond_input_ids: the conditional and null inputs
        (:func:`~mmada_jax.parallel_m.prompts.inference_prompt`): one row [Lc], or a list /
        [B, Lc] array of rows (rows of different lengths are left-padded and masked).
      num_image_tokens: N (1024 at 512 px).
      settings: :class:`Settings` (``**overrides`` replace single fields).
      seed: int, PRNG key, or one key per row; tape: recorded uniforms to replay
        (``u_multinomial`` [S_img, B*N], ``u_gumbel`` [S_img, B, N], ``u_text_gumbel``,
        ``u_text_random``); exact: float64 sampling arithmetic (default: not on TPU).
      record_steps: [B, s] step indices per row to record for RL
        (:mod:`~mmada_jax.sampling.recording`; ``recording`` of the output).
    Returns ``image_codes`` [B, N] (the last image step's draw, every position filled),
    ``text_ids`` [B, L] (BOS included), the final sequences (``ids``), their ``layout``, ``pads``
    and, with ``return_trajectory``, the sequence after every step [S, B, total].
    """
    args = prepare(model, input_ids, uncond_input_ids, num_image_tokens=num_image_tokens, settings=settings,
                   seed=seed, tape=tape, exact=exact, return_trajectory=return_trajectory,
                   record_steps=record_steps, **overrides)
    static, consts, pads = args[0], args[3], args[-1]
    carry, traj = run_scan(model, _step, *args[:-1])
    final, sampled = np.asarray(carry[0]), np.asarray(carry[1])
    recorded = recording.as_recording(consts["record_steps"], carry[3]) if static.record else None
    return SamplerOutput(ids=final, image_codes=sampled, text_ids=final[:, static.layout.text_start:],
                         trajectory=None if traj is None else np.asarray(traj), pads=pads, layout=static.layout,
                         recording=recorded)


def prepare(model, input_ids, uncond_input_ids, *, num_image_tokens: int, settings: Settings | None = None,
            seed=0, tape=None, exact: bool | None = None, return_trajectory: bool = False, record_steps=None,
            **overrides):
    """The arguments of :func:`~mmada_jax.sampling.runner.run_scan` for one run: (static, initial
    carry, per-step inputs, constants, randomness, exact), and the rows' left-padding [B]."""
    s = resolve(Settings, settings, **overrides)
    cond_rows = [np.asarray(r, np.int32) for r in (input_ids if _is_batch(input_ids) else [input_ids])]
    uncond_rows = [np.asarray(r, np.int32) for r in (uncond_input_ids if _is_batch(uncond_input_ids) else [uncond_input_ids])]
    if len(cond_rows) != len(uncond_rows):
        raise ValueError(f"{len(cond_rows)} conditional but {len(uncond_rows)} unconditional inputs")
    for c, u in zip(cond_rows, uncond_rows):
        if len(c) != len(u):
            raise ValueError(f"a conditional input of length {len(c)} has an unconditional twin of length {len(u)}")
    t = model.config.tokens
    cond = pad_rows(cond_rows, t.pad_id, side="left")
    uncond = pad_rows(uncond_rows, t.pad_id, side="left")
    b, lc = cond.shape
    layout = Layout(lc, num_image_tokens, s.text_len)
    x = np.concatenate([cond, np.tile(output_init(t, layout), (b, 1))], axis=1)
    pads = np.asarray([lc - len(r) for r in cond_rows], np.int32)
    consts = {"uncond": uncond}
    if pads.any():
        consts.update(left_padding(pads, layout.total))
    exact = exact_default() if exact is None else exact
    steps = s.text_steps
    k = num_transfer_tokens(np.asarray([s.text_len - 1]), steps)[0]
    is_image = np.isin(np.arange(steps), image_step_indices(steps, s.image_steps))
    caps = np.floor(np.float32(num_image_tokens) * mask_ratio_schedule(steps, s.schedule)).astype(np.float32)
    temps = np.asarray([s.image_temperature * (1.0 - (i + 1) / steps) for i in range(steps)], np.float32)
    init = (x, np.zeros((b, num_image_tokens), np.int32), np.int32(0))
    record = 0
    if record_steps is not None:
        consts["record_steps"] = recording.check_steps(record_steps, b, steps)
        record = consts["record_steps"].shape[1]
        init += (recording.empty(b, record, layout.total, num_image_tokens, s.text_len),)
    cache = step_cache.CacheSpec(layout.total, s.text_len, num_image_tokens, 2 if s.text_cfg or s.image_cfg else 1,
                                 exact, bool(record)) if s.cached else None
    static = Static(s, layout, t, exact, return_trajectory, record, cache)
    xs = (np.arange(steps, dtype=np.int32), k.astype(np.int32), is_image, caps, temps,
          step_cache.refresh_steps(steps, s))
    return static, init, xs, consts, as_randomness(seed, b, tape), exact, pads


def _is_batch(rows) -> bool:
    return isinstance(rows, (list, tuple)) and len(rows) > 0 and np.ndim(rows[0]) == 1 or np.ndim(rows) == 2

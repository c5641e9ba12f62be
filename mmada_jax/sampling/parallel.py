"""MMaDA-Parallel-M's joint sampler (``interleave_generate``): reasoning text and output image
denoised together, each step seeing the other.

The sequence is ``[input | <|soi|> MASK*N <|eoi|> BOS MASK*(L-1)]``. Every text step runs one
forward of the (cond; uncond) rows, where the unconditional row is the null input (image = id 0,
text = ``BOS EOS...``) followed by the CURRENT output region, so both rows share the partial text
and image. Text: a fixed number of masked text positions per step (``num_transfer_tokens`` over
all steps, no blocks) get their most confident argmax. Image: at the steps
``round(linspace(S//4, S-1, image_steps))`` the same forward's logits drive one MaskGIT update
(:func:`~mmada_jax.sampling.maskgit.image_update`) whose schedule uses the TEXT step index.

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

from .common import (as_randomness, exact_default, image_step_indices, left_padding, mask_ratio_schedule,
                     num_transfer_tokens, unmask_by_confidence)
from .maskgit import image_update
from .runner import SamplerOutput, run_scan
from ..prompting import interleave_output_init, pad_rows


@dataclasses.dataclass(frozen=True)
class _Static:
    input_len: int
    num_image_tokens: int
    text_len: int
    text_cfg: float
    image_cfg: float
    text_guidance: str
    text_temperature: float
    remasking: str
    offset: int
    codebook_size: int
    mask_id: int
    padded: bool
    exact: bool
    trajectory: bool


def _step(model, carry, xs, consts, rnd, st: _Static):
    x, last_sampled, j = carry
    i, k, is_image_step, cap, temp = xs
    b, length = x.shape
    n, m = st.num_image_tokens, st.text_len
    guided = st.text_cfg != 0 or st.image_cfg != 0
    rows = x
    mask = consts.get("attention_mask")            # present only when rows are left-padded
    position_ids = consts.get("position_ids")
    if guided:
        rows = jnp.concatenate([x, jnp.concatenate([consts["uncond"], x[:, st.input_len:]], axis=1)], axis=0)
        if st.padded:   # an unconditional row is as long as its conditional twin: same padding
            mask = jnp.concatenate([mask, mask], axis=0)
            position_ids = jnp.concatenate([position_ids, position_ids], axis=0)
    hidden, _ = model.encode(rows, mask, mask_mode="hard", position_ids=position_ids)

    # text: confidence-ordered unmasking of a fixed count per step
    text_pos = length - m + jnp.arange(m, dtype=jnp.int32)
    text_logits = model.head(hidden, positions=text_pos).astype(jnp.float32)
    if guided:
        cond, uncond = text_logits[:b], text_logits[b:]
        if st.text_guidance == "reference":
            text_logits = cond + st.text_cfg * (uncond - cond)
        else:
            text_logits = cond + st.text_cfg * (cond - uncond)
    region = unmask_by_confidence(text_logits, x[:, length - m:], jnp.full((b,), k), mask_id=st.mask_id,
                                  temperature=st.text_temperature, remasking=st.remasking, rnd=rnd, index=i,
                                  exact=st.exact)
    x = x.at[:, length - m:].set(region)

    # image: a MaskGIT update on the image steps, from the same forward pass
    def update_image(operands):
        x, _, j = operands
        image_pos = st.input_len + 1 + jnp.arange(n, dtype=jnp.int32)
        logits = model.head(hidden, positions=image_pos,
                            vocab_range=(st.offset, st.offset + st.codebook_size)).astype(jnp.float32)
        cond, uncond = (logits[:b], logits[b:]) if guided else (logits, None)
        region = x[:, st.input_len + 1:st.input_len + 1 + n]
        u_cat = rnd.uniform("u_multinomial", j, (b, n), jnp.float64 if st.exact else jnp.float32)
        u_gum = rnd.uniform("u_gumbel", j, (b, n))
        region, sampled = image_update(cond, uncond, region, guidance=st.image_cfg, mask_len_cap=cap,
                                       temperature=temp, offset=st.offset, mask_id=st.mask_id,
                                       u_categorical=u_cat, u_gumbel=u_gum, exact=st.exact)
        return x.at[:, st.input_len + 1:st.input_len + 1 + n].set(region), sampled, j + 1

    x, last_sampled, j = jax.lax.cond(is_image_step, update_image, lambda ops: ops, (x, last_sampled, j))
    return (x, last_sampled, j), (x if st.trajectory else None)


def parallel_generate(model, input_ids, uncond_input_ids, **settings) -> SamplerOutput:
    """Jointly generate reasoning text and an output image (MMaDA-Parallel-M).

    Args:
      input_ids, uncond_input_ids: the conditional and null inputs
        (:func:`~mmada_jax.prompting.interleave_inference_prompt`): one row [Lc], or a list /
        [B, Lc] array of rows (rows of different lengths are left-padded and masked).
      num_image_tokens: N (1024 at 512 px); text_len: L, the output text budget (the
        reference's ``max_seq_length``).
      text_steps, image_steps: text steps (one forward each) and how many of them also update
        the image.
      text_cfg, image_cfg, text_guidance: see the module docstring.
      text_temperature, image_temperature, remasking, schedule: as the reference.
      seed: int, PRNG key, or one key per row; tape: recorded uniforms to replay
        (``u_multinomial`` [S_img, B*N], ``u_gumbel`` [S_img, B, N], ``u_text_gumbel``,
        ``u_text_random``); exact: float64 sampling arithmetic (default: not on TPU).
    Returns ``image_codes`` [B, N] (the last image step's draw, every position filled),
    ``text_ids`` [B, L] (BOS included), the final sequences (``ids``) and, with
    ``return_trajectory``, the sequence after every step [S, B, total].
    """
    args = prepare(model, input_ids, uncond_input_ids, **settings)
    static, init = args[0], args[1]
    (final, sampled, _), traj = run_scan(model, _step, *args)
    final = np.asarray(final)
    total = init[0].shape[1]
    return SamplerOutput(ids=final, image_codes=np.asarray(sampled),
                         text_ids=final[:, total - static.text_len:],
                         trajectory=None if traj is None else np.asarray(traj))


def prepare(model, input_ids, uncond_input_ids, *, num_image_tokens: int, text_len: int,
                      text_steps: int = 128, image_steps: int = 30, text_cfg: float = 0.0,
                      image_cfg: float = 3.5, text_guidance: str = "reference",
                      text_temperature: float = 0.0, image_temperature: float = 1.0,
                      remasking: str = "low_confidence", schedule: str = "cosine", seed=0, tape=None,
                      exact: bool | None = None, return_trajectory: bool = False):
    """The arguments of :func:`~mmada_jax.sampling.runner.run_scan` for one parallel run:
    (static settings, initial carry, per-step inputs, constants, randomness, exact)."""
    cond_rows = [np.asarray(r, np.int32) for r in (input_ids if _is_batch(input_ids) else [input_ids])]
    uncond_rows = [np.asarray(r, np.int32) for r in (uncond_input_ids if _is_batch(uncond_input_ids) else [uncond_input_ids])]
    if len(cond_rows) != len(uncond_rows):
        raise ValueError(f"{len(cond_rows)} conditional but {len(uncond_rows)} unconditional inputs")
    for c, u in zip(cond_rows, uncond_rows):
        if len(c) != len(u):
            raise ValueError(f"a conditional input of length {len(c)} has an unconditional twin of length {len(u)}")
    if text_guidance not in ("reference", "conventional"):
        raise ValueError(f"text_guidance must be 'reference' or 'conventional', got {text_guidance!r}")
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    if text_len < 2:
        raise ValueError(f"text_len must be at least 2 (BOS plus one token), got {text_len}")
    t = model.config.tokens
    padded = len({len(r) for r in cond_rows}) > 1
    cond = pad_rows(cond_rows, t.pad_id, side="left")
    uncond = pad_rows(uncond_rows, t.pad_id, side="left")
    b, lc = cond.shape
    out = np.tile(interleave_output_init(t, num_image_tokens, text_len), (b, 1))
    x = np.concatenate([cond, out], axis=1)
    total = x.shape[1]
    if total > model.config.max_sequence_length:
        raise ValueError(f"sequence of {total} tokens exceeds max_sequence_length "
                         f"{model.config.max_sequence_length}")
    consts = {"uncond": uncond}
    if padded:
        consts.update(left_padding([lc - len(r) for r in cond_rows], total))
    exact = exact_default() if exact is None else exact
    k = num_transfer_tokens(np.asarray([text_len - 1]), text_steps)[0]
    is_image = np.isin(np.arange(text_steps), image_step_indices(text_steps, image_steps))
    caps = np.floor(np.float32(num_image_tokens) * mask_ratio_schedule(text_steps, schedule)).astype(np.float32)
    temps = np.asarray([image_temperature * (1.0 - (i + 1) / text_steps) for i in range(text_steps)], np.float32)
    static = _Static(lc, num_image_tokens, text_len, float(text_cfg), float(image_cfg), text_guidance,
                     float(text_temperature), remasking, t.image_offset, t.codebook_size, t.mask_id, padded,
                     exact, return_trajectory)
    xs = (np.arange(text_steps, dtype=np.int32), k.astype(np.int32), is_image, caps, temps)
    init = (x, np.zeros((b, num_image_tokens), np.int32), np.int32(0))
    return static, init, xs, consts, as_randomness(seed, b, tape), exact


def _is_batch(rows) -> bool:
    return isinstance(rows, (list, tuple)) and len(rows) > 0 and np.ndim(rows[0]) == 1 or np.ndim(rows) == 2

"""MMaDA-Parallel-M parallel SFT (``train_interleave.py``), exactly as the reference computes it
(spec ``mmada_m.md`` §5).

One mask ratio per row shared by text and image, ``m = cos(pi/2 * max(cos(pi/2 * t), eps))`` (a
double cosine, increasing in t) with ``t = u * (1 - eps) + eps``; the output image gets exactly
``max(1, round(N * m))`` masked codes, the output text slots are masked independently with
probability ``m`` (BOS never, EOS padding yes); condition dropout replaces the instruction by
``BOS EOS`` and the input image by literal id 0. The model sees the 0/1 attention mask as an
ADDITIVE bias (``mask_mode='additive'``). Losses: ``text = sum_b sum_j CE[b, j] / t_b / L`` over
the L text slots (weight 1/t with the raw t, normalised by L, not by the batch or the masked
count) and ``image = mean CE`` over the B x (N + 2) slots ``soi, image, eoi`` (no 1/t);
``loss = text_coeff * text + image_coeff * image``.

Option (not in the reference): ``changed_image_weight`` w weighs the image CE of the output codes
that differ from the input image's code at the same grid position by w (every other slot by 1,
still divided by B x (N + 2)); w = 1 is the reference's loss exactly. In an edit most output codes
are copies of the input, so the few that carry the edit are a small share of the image loss.

Every random decision enters as an explicit uniform array (``rand``), drawn from a PRNG key in
training and replayed from the golden data in the parity tests.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from ..config import TokenIds
from ..losses import cross_entropy
from ..sequences import targets
from .layout import Layout, input_part, output_part


class SFTInputs(NamedTuple):
    input_ids: jax.Array        # [B, T]
    labels: jax.Array           # [B, T], -100 where not a target
    attention_mask: jax.Array   # [B, T], 0 on the EOS padding of either text
    t: jax.Array                # [B] diffusion time (1/t weights the text loss)
    mask_prob: jax.Array        # [B]
    image_masked: jax.Array     # [B, N]
    text_masked: jax.Array      # [B, L]
    image_changed: jax.Array    # [B, N] output code != input code at the same position


def mask_ratio(t: jax.Array, eps: float) -> jax.Array:
    """The reference's double cosine: cos(pi/2 * max(cos(pi/2 * t), eps)), in float32."""
    half_pi = jnp.float32(math.pi * 0.5)
    return jnp.cos(jnp.maximum(jnp.cos(t * half_pi), jnp.float32(eps)) * half_pi)


def random_draws(key: jax.Array, batch: int, num_image_tokens: int, text_len: int) -> dict[str, jax.Array]:
    """The five uniform draws of one parallel-SFT batch (names as in the golden data)."""
    keys = jax.random.split(key, 5)
    u = lambda k, shape: jax.random.uniform(k, shape, jnp.float32)
    return {"rand_t": u(keys[0], (batch,)), "rand_image_perm": u(keys[1], (batch, num_image_tokens)),
            "rand_text_mask": u(keys[2], (batch, text_len)), "rand_dropout_text": u(keys[3], (batch,)),
            "rand_dropout_image": u(keys[4], (batch,))}


def sft_inputs(tokens: TokenIds, batch: Mapping[str, jax.Array], rand: Mapping[str, jax.Array], *,
               eps: float = 1e-3, cond_dropout_prob: float = 0.1) -> SFTInputs:
    """Noised sequences, labels and masks of a parallel-SFT batch (:mod:`.layout`).

    ``batch``: ``input_image_codes``, ``output_image_codes`` [B, N] raw codes; ``input_text``,
    ``output_text`` [B, L] (BOS text EOS, EOS-padded) and their unpadded lengths
    ``input_text_len``, ``output_text_len`` [B].
    """
    in_codes = jnp.asarray(batch["input_image_codes"], jnp.int32)
    out_codes = jnp.asarray(batch["output_image_codes"], jnp.int32)
    in_text = jnp.asarray(batch["input_text"], jnp.int32)
    out_text = jnp.asarray(batch["output_text"], jnp.int32)
    b, n = out_codes.shape
    length = out_text.shape[1]
    layout = Layout(3 + in_codes.shape[1] + in_text.shape[1], n, length)
    in_len = jnp.asarray(batch["input_text_len"], jnp.int32)
    out_len = jnp.asarray(batch["output_text_len"], jnp.int32)
    off, mask_id = tokens.image_offset, tokens.mask_id

    t = rand["rand_t"].astype(jnp.float32) * jnp.float32(1 - eps) + jnp.float32(eps)
    m = mask_ratio(t, eps)
    n_masked = jnp.maximum(1, jnp.round(n * m)).astype(jnp.int32)
    # as the reference: position p is masked iff argsort(u)[p] < n_masked (a random n-subset)
    image_masked = jnp.argsort(rand["rand_image_perm"], axis=-1) < n_masked[:, None]
    text_masked = (rand["rand_text_mask"] < m[:, None]) & (jnp.arange(length) > 0)

    drop_text = rand["rand_dropout_text"] < cond_dropout_prob
    drop_image = rand["rand_dropout_image"] < cond_dropout_prob
    null_text = jnp.full_like(in_text, tokens.eos_id).at[:, 0].set(tokens.bos_id)
    in_text = jnp.where(drop_text[:, None], null_text, in_text)
    in_len = jnp.where(drop_text, 2, in_len)
    inputs = input_part(tokens, jnp.where(drop_image[:, None], 0, in_codes + off), in_text, xp=jnp)

    out_image = out_codes + off
    clean = output_part(tokens, out_image, out_text, xp=jnp)
    noised = output_part(tokens, jnp.where(image_masked, mask_id, out_image),
                         jnp.where(text_masked, mask_id, out_text), xp=jnp)
    input_ids = jnp.concatenate([inputs, noised], axis=1)
    labels = targets(input_ids, jnp.concatenate([inputs, clean], axis=1), mask_id, xp=jnp)
    # attention: 0 on the EOS padding of the instruction and of the reasoning text
    pos = jnp.arange(layout.total)[None]
    in_text_start = layout.input_len - in_text.shape[1]
    padding = (((pos >= in_text_start + in_len[:, None]) & (pos < layout.input_len))
               | (pos >= layout.text_start + out_len[:, None]))
    return SFTInputs(input_ids, labels, (~padding).astype(jnp.int32), t, m, image_masked, text_masked,
                     out_codes != in_codes)


def sft_loss(logits_out: jax.Array, labels_out: jax.Array, t: jax.Array, *, num_image_tokens: int,
             text_coeff: float = 1.0, image_coeff: float = 1.0, image_weight: jax.Array | None = None
             ) -> dict[str, jax.Array]:
    """Loss parts from the logits of the OUTPUT part only ([B, N + 2 + L, V]: soi, image, eoi,
    text; every other position has label -100 and contributes nothing). ``image_weight`` [B, N]:
    per-code weights of the image CE (None: all 1, the reference)."""
    ce = cross_entropy(logits_out, labels_out)
    image_ce = ce[:, :num_image_tokens + 2]
    text_ce = ce[:, num_image_tokens + 2:]
    text_loss = jnp.sum(text_ce / t[:, None]) / text_ce.shape[1]
    if image_weight is not None:
        image_ce = image_ce.at[:, 1:num_image_tokens + 1].multiply(image_weight.astype(image_ce.dtype))
    image_loss = jnp.mean(image_ce)
    return {"loss": text_coeff * text_loss + image_coeff * image_loss, "text_loss": text_loss,
            "image_loss": image_loss}


def sft_forward(model, inputs: SFTInputs, *, num_image_tokens: int, text_len: int, text_coeff: float = 1.0,
                image_coeff: float = 1.0, padding_bias: bool = True, changed_image_weight: float = 1.0
                ) -> dict[str, jax.Array]:
    """Model forward and the SFT loss; the head runs only on the output part.

    ``padding_bias``: the additive 0/1 attention bias of the reference (0 on the EOS padding of
    both texts). It tells the model where the reasoning ends, which sampling does not know (the
    sampler attends every position of an unpadded row alike); ``False`` trains without it, on
    sequences seen exactly as the sampler sees them. ``changed_image_weight``: see the module docstring.
    """
    total = inputs.input_ids.shape[1]
    layout = Layout(total - (num_image_tokens + 2 + text_len), num_image_tokens, text_len)
    out_positions = jnp.arange(layout.input_len, layout.total)
    mask = inputs.attention_mask if padding_bias else None
    logits = model(inputs.input_ids, mask, mask_mode="additive", positions=out_positions)
    weight = (None if changed_image_weight == 1.0 else
              jnp.where(inputs.image_changed, jnp.float32(changed_image_weight), jnp.float32(1.0)))
    return sft_loss(logits, inputs.labels[:, layout.input_len:], inputs.t, num_image_tokens=num_image_tokens,
                    text_coeff=text_coeff, image_coeff=image_coeff, image_weight=weight)

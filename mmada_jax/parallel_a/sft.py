"""MMaDA-Parallel-A (Lumina-DiMOO) SFT, exactly as the reference computes it (spec ``mmada_a.md``
§5): the -A sequence built inside the jitted step from the same records and grain batches as -M,
independent cosine mask ratios for the output image and the reasoning text, condition dropout of
the instruction and the input image together, token-mean CE over image and text pooled. The
reference attends its 0-padding (``attend_padding=True``); the head runs only on each row's
answer window.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from ..config import TokenIds
from ..losses import cross_entropy
from ..sequences import IGNORE, join, targets
from .layout import Layout, answer, image_segment, turn_head


def _first(condition: jax.Array, default: jax.Array) -> jax.Array:
    """Index of the first True along the last axis, ``default`` where there is none."""
    index = jnp.argmax(condition, axis=-1)
    return jnp.where(jnp.any(condition, axis=-1), index, default)


def sft_loss(logits: jax.Array, input_ids: jax.Array, labels: jax.Array, tokens: TokenIds) -> dict[str, jax.Array]:
    """MMaDA-Parallel-A (Lumina-DiMOO) SFT loss, as ``modeling_xllmx_dimoo.py`` computes it.

    ``loss`` = mean CE over every labelled position of the (0-padded) batch, image and text pooled,
    no 1/t: the only optimised quantity. For logging, per row: BOA = first ``<answer>``, EOA = the
    first ``</answer>`` after it (else the row end), BOI/EOI = the first image begin/end inside the
    answer; ``image_loss`` = mean CE over every non-newline position strictly between BOI and EOI
    (unmasked image tokens included, with CE 0); ``text_loss`` = mean CE over the labelled
    positions strictly between EOI and EOA.
    """
    ce = cross_entropy(logits, labels)
    labelled = labels != IGNORE
    loss = jnp.sum(ce) / jnp.maximum(jnp.sum(labelled), 1)
    length = input_ids.shape[-1]
    pos = jnp.arange(length)
    row_end = jnp.full(input_ids.shape[:-1], length)
    boa = _first(input_ids == tokens["boa"], row_end)
    eoa = _first((input_ids == tokens["eoa"]) & (pos > boa[:, None]), row_end)
    in_answer = (pos >= boa[:, None]) & (pos < eoa[:, None])
    boi = _first((input_ids == tokens["boi"]) & in_answer, row_end)
    eoi = _first((input_ids == tokens["eoi"]) & (pos > boi[:, None]), row_end)
    image_positions = (pos > boi[:, None]) & (pos < eoi[:, None]) & (input_ids != tokens["newline"])
    text_positions = (pos > eoi[:, None]) & (pos < eoa[:, None]) & labelled
    mean_over = lambda where: jnp.sum(jnp.where(where, ce, 0.0)) / jnp.maximum(jnp.sum(where), 1)
    return {"loss": loss, "image_loss": mean_over(image_positions), "text_loss": mean_over(text_positions),
            "image_positions": image_positions, "text_positions": text_positions}


class SFTInputs(NamedTuple):
    input_ids: jax.Array        # [B, W] the sequences, right-padded with 0 (the reference's pad)
    labels: jax.Array           # [B, W] -100 except at masked image / text positions
    valid: jax.Array            # [B, W] False on the padding
    answer_start: jax.Array     # [B] position of <answer> (BOA): the loss lives at [start, start + P)
    answer_len: int             # P, static: every position a label can sit at is in the window


def random_draws(key: jax.Array, batch: int, num_image_tokens: int, text_len: int) -> dict[str, jax.Array]:
    """The uniform draws of one -A SFT batch: condition dropout, and per row an independent
    mask-ratio draw and a random order for the output image and for the answer text."""
    keys = jax.random.split(key, 5)
    u = lambda k, shape: jax.random.uniform(k, shape, jnp.float32)
    return {"rand_dropout": u(keys[0], (batch,)), "rand_image_r": u(keys[1], (batch,)),
            "rand_image_order": u(keys[2], (batch, num_image_tokens)), "rand_text_r": u(keys[3], (batch,)),
            "rand_text_order": u(keys[4], (batch, text_len))}


def _mask_codes(r: jax.Array, order: jax.Array, length: jax.Array) -> jax.Array:
    """The reference's ``mask_codes`` on each row's first ``length`` slots: ratio = cos(pi/2 r)
    (1 when the list has at most 5 tokens), ``max(1, int(length * ratio))`` positions masked, the
    ones with the smallest ``order`` values (a uniformly random subset)."""
    ratio = jnp.where(length <= 5, 1.0, jnp.cos(r.astype(jnp.float32) * jnp.float32(math.pi / 2)))
    count = jnp.maximum(1, jnp.floor(length.astype(jnp.float32) * ratio)).astype(jnp.int32)
    inside = jnp.arange(order.shape[-1]) < length[:, None]
    rank = jnp.argsort(jnp.argsort(jnp.where(inside, order, 2.0), axis=-1, stable=True), axis=-1, stable=True)
    return inside & (rank < count[:, None])


def sft_inputs(tokens: TokenIds, batch: Mapping[str, jax.Array], rand: Mapping[str, jax.Array], *,
               system_ids, input_grid_w: int, output_grid_w: int, cond_dropout_prob: float = 0.1,
               bos: bool = True) -> SFTInputs:
    """Noised -A SFT sequences and labels of a batch (``ItemProcessor.process_item``, case 3).

    ``batch`` as the grain pipeline gives it: ``input_text`` / ``output_text`` [B, L] (BOS ids
    EOS, EOS-padded) with their lengths, ``input_image_codes`` [B, Ni], ``output_image_codes``
    [B, N] (raw codes, row-major grids ``input_grid_w`` / ``output_grid_w`` wide),
    ``has_input_image`` [B]. Each row is the layout's (:mod:`.layout`) turn with the input image
    and the answer with the output image and ``BOS reasoning`` (its BOS included, its EOS not);
    with probability ``cond_dropout_prob`` the instruction becomes ``<uncondition>`` and the input
    image is dropped. The output codes and the answer text are masked independently
    (:func:`_mask_codes`); labels are the original ids at masked positions. Rows are packed to the
    left and padded with id 0 (label -100) to a fixed width, so the shapes do not depend on the data.
    """
    b = batch["output_image_codes"].shape[0]
    in_text = jnp.asarray(batch["input_text"], jnp.int32)
    out_text = jnp.asarray(batch["output_text"], jnp.int32)
    length = in_text.shape[1]
    in_len = jnp.asarray(batch["input_text_len"], jnp.int32)
    out_len = jnp.asarray(batch["output_text_len"], jnp.int32)
    has_image = jnp.asarray(batch.get("has_input_image", jnp.ones((b,), bool)), bool)
    off, mask_id = tokens.image_offset, tokens.mask_id
    drop = rand["rand_dropout"] < cond_dropout_prob
    yes = jnp.ones((b,), bool)

    # the turn: each segment with the rows where it is present (instruction OR <uncondition>)
    head = join(*turn_head(tokens, system_ids, bos), xp=jnp)
    image = image_segment(tokens, jnp.asarray(batch["input_image_codes"], jnp.int32) + off, input_grid_w, xp=jnp)
    turn = [(head, yes), (in_text[:, 1:length - 1], (jnp.arange(length - 2) < (in_len - 2)[:, None]) & ~drop[:, None]),
            (jnp.asarray([tokens["uncondition"]]), drop), (image, has_image & ~drop),
            (jnp.asarray([tokens["end_user"]]), yes)]
    prefix = join(*[ids for ids, _ in turn], xp=jnp)
    prefix_valid = jnp.concatenate([jnp.broadcast_to(v[:, None] if v.ndim == 1 else v, (b, ids.shape[-1]))
                                    for ids, v in turn], axis=1)

    # the answer: output image then the reasoning text, each masked at its own ratio
    out_codes = jnp.asarray(batch["output_image_codes"], jnp.int32) + off
    n = out_codes.shape[1]
    image_masked = _mask_codes(rand["rand_image_r"], rand["rand_image_order"], jnp.full((b,), n))
    text = out_text[:, :length - 1]                  # BOS + reasoning (the EOS is not part of it)
    text_len = out_len - 1
    text_masked = _mask_codes(rand["rand_text_r"], rand["rand_text_order"][:, :length - 1], text_len)
    clean = answer(tokens, out_codes, text, output_grid_w, xp=jnp)
    noised = answer(tokens, jnp.where(image_masked, mask_id, out_codes), jnp.where(text_masked, mask_id, text),
                    output_grid_w, xp=jnp)
    lay = Layout(0, (n // output_grid_w, output_grid_w), length - 1)
    slot = jnp.arange(lay.total)[None]
    answer_valid = ~((slot >= lay.text_start + text_len[:, None]) & (slot < lay.text_end))

    ids = jnp.concatenate([prefix, noised], axis=1)
    labels = targets(ids, jnp.concatenate([prefix, clean], axis=1), mask_id, xp=jnp)
    valid = jnp.concatenate([prefix_valid, answer_valid], axis=1)
    answer_start = jnp.sum(prefix_valid, axis=-1)          # real tokens before <answer>
    order = jnp.argsort(~valid, axis=-1, stable=True)        # pack the valid tokens to the left
    take = lambda a: jnp.take_along_axis(a, order, axis=-1)
    ids, labels, valid = take(ids), take(labels), take(valid)
    return SFTInputs(jnp.where(valid, ids, 0), jnp.where(valid, labels, IGNORE), valid,
                     answer_start.astype(jnp.int32), lay.total)


def sft_forward(model, inputs: SFTInputs, tokens: TokenIds, *, attend_padding: bool = True
                      ) -> dict[str, jax.Array]:
    """Model forward and :func:`sft_loss`, the head run only on each row's answer window
    (the instruction and input image carry no labels). ``attend_padding=True`` is the reference
    (no attention mask: the 0-padding is attended); False masks it out of attention."""
    window = inputs.answer_start[:, None] + jnp.arange(inputs.answer_len)
    mask = None if attend_padding else inputs.valid.astype(jnp.int32)
    logits = model(inputs.input_ids, mask, mask_mode="hard", positions=window)
    pick = lambda a: jnp.take_along_axis(a, window, axis=-1)
    parts = sft_loss(logits, pick(inputs.input_ids), pick(inputs.labels), tokens)
    return {k: parts[k] for k in ("loss", "text_loss", "image_loss")}

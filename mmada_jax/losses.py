"""Training objectives of MMaDA-Parallel-M (parallel SFT), base MMaDA (t2i / lm / mmu) and
MMaDA-Parallel-A (Lumina-DiMOO SFT), exactly as the references compute them (spec mmada_m.md §5,
mmada_a.md §5).

Parallel SFT (``train_interleave.py``): one mask ratio per row shared by text and image,
``m = cos(pi/2 * max(cos(pi/2 * t), eps))`` (a double cosine, increasing in t) with
``t = u * (1 - eps) + eps``; the output image gets exactly ``max(1, round(N * m))`` masked codes, the
output text slots are masked independently with probability ``m`` (BOS never, EOS padding yes);
condition dropout replaces the instruction by ``BOS EOS`` and the input image by literal id 0.
The model sees the 0/1 attention mask as an ADDITIVE bias (``mask_mode='additive'``). Losses:
``text = sum_b sum_j CE[b, j] / t_b / L`` over the L text slots (weight 1/t with the raw t,
normalised by L, not by the batch or the masked count) and ``image = mean CE`` over the B x (N + 2)
slots ``soi, image, eoi`` (no 1/t); ``loss = text_coeff * text + image_coeff * image``.

Every random decision enters as an explicit uniform array (``rand``), drawn from a PRNG key in
training and replayed from the golden data in the parity tests.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from .config import TokenIds

IGNORE = -100


class SFTInputs(NamedTuple):
    input_ids: jax.Array        # [B, T]
    labels: jax.Array           # [B, T], -100 where not a target
    attention_mask: jax.Array   # [B, T], 0 on the EOS padding of either text
    t: jax.Array                # [B] diffusion time (1/t weights the text loss)
    mask_prob: jax.Array        # [B]
    image_masked: jax.Array     # [B, N]
    text_masked: jax.Array      # [B, L]


def parallel_mask_ratio(t: jax.Array, eps: float) -> jax.Array:
    """The reference's double cosine: cos(pi/2 * max(cos(pi/2 * t), eps)), in float32."""
    half_pi = jnp.float32(math.pi * 0.5)
    return jnp.cos(jnp.maximum(jnp.cos(t * half_pi), jnp.float32(eps)) * half_pi)


def sft_random_draws(key: jax.Array, batch: int, num_image_tokens: int, text_len: int) -> dict[str, jax.Array]:
    """The five uniform draws of one parallel-SFT batch (names as in the golden data)."""
    keys = jax.random.split(key, 5)
    u = lambda k, shape: jax.random.uniform(k, shape, jnp.float32)
    return {"rand_t": u(keys[0], (batch,)), "rand_image_perm": u(keys[1], (batch, num_image_tokens)),
            "rand_text_mask": u(keys[2], (batch, text_len)), "rand_dropout_text": u(keys[3], (batch,)),
            "rand_dropout_image": u(keys[4], (batch,))}


def parallel_sft_inputs(tokens: TokenIds, batch: Mapping[str, jax.Array], rand: Mapping[str, jax.Array], *,
                        eps: float = 1e-3, cond_dropout_prob: float = 0.1) -> SFTInputs:
    """Noised sequences, labels and masks of a parallel-SFT batch.

    ``batch``: ``input_image_codes``, ``output_image_codes`` [B, N] raw codes; ``input_text``,
    ``output_text`` [B, L] (BOS text EOS, EOS-padded) and their unpadded lengths
    ``input_text_len``, ``output_text_len`` [B]. Layout:
    ``<|interleave|> <|soi|> in_img <|eoi|> in_text | <|soi|> out_img <|eoi|> out_text``.
    """
    in_codes = jnp.asarray(batch["input_image_codes"], jnp.int32)
    out_codes = jnp.asarray(batch["output_image_codes"], jnp.int32)
    in_text = jnp.asarray(batch["input_text"], jnp.int32)
    out_text = jnp.asarray(batch["output_text"], jnp.int32)
    b, n = out_codes.shape
    length = out_text.shape[1]
    in_len = jnp.asarray(batch["input_text_len"], jnp.int32)
    out_len = jnp.asarray(batch["output_text_len"], jnp.int32)
    off, mask_id = tokens.image_offset, tokens.mask_id

    t = rand["rand_t"].astype(jnp.float32) * jnp.float32(1 - eps) + jnp.float32(eps)
    m = parallel_mask_ratio(t, eps)
    n_masked = jnp.maximum(1, jnp.round(n * m)).astype(jnp.int32)
    # as the reference: position p is masked iff argsort(u)[p] < n_masked (a random n-subset)
    image_masked = jnp.argsort(rand["rand_image_perm"], axis=-1) < n_masked[:, None]
    text_masked = (rand["rand_text_mask"] < m[:, None]) & (jnp.arange(length) > 0)

    drop_text = rand["rand_dropout_text"] < cond_dropout_prob
    drop_image = rand["rand_dropout_image"] < cond_dropout_prob
    null_text = jnp.full_like(in_text, tokens.eos_id).at[:, 0].set(tokens.bos_id)
    in_text = jnp.where(drop_text[:, None], null_text, in_text)
    in_len = jnp.where(drop_text, 2, in_len)
    in_image = jnp.where(drop_image[:, None], 0, in_codes + off)

    out_image = out_codes + off
    col = lambda value: jnp.full((b, 1), value, jnp.int32)
    input_ids = jnp.concatenate([
        col(tokens["interleave"]), col(tokens["soi"]), in_image, col(tokens["eoi"]), in_text,
        col(tokens["soi"]), jnp.where(image_masked, mask_id, out_image), col(tokens["eoi"]),
        jnp.where(text_masked, mask_id, out_text)], axis=1)
    ignore = lambda width: jnp.full((b, width), IGNORE, jnp.int32)
    labels = jnp.concatenate([
        ignore(3 + n + length), ignore(1), jnp.where(image_masked, out_image, IGNORE), ignore(1),
        jnp.where(text_masked, out_text, IGNORE)], axis=1)
    pos = jnp.arange(length)
    attention_mask = jnp.concatenate([
        jnp.ones((b, 3 + n), jnp.int32), (pos[None] < in_len[:, None]).astype(jnp.int32),
        jnp.ones((b, 2 + n), jnp.int32), (pos[None] < out_len[:, None]).astype(jnp.int32)], axis=1)
    return SFTInputs(input_ids, labels, attention_mask, t, m, image_masked, text_masked)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-token CE in float32, 0 where ``labels == -100`` (torch ``reduction='none'``)."""
    logits = logits.astype(jnp.float32)
    valid = labels != IGNORE
    safe = jnp.where(valid, labels, 0)
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    return jnp.where(valid, jax.nn.logsumexp(logits, axis=-1) - picked, 0.0)


def parallel_sft_loss(logits_out: jax.Array, labels_out: jax.Array, t: jax.Array, *, num_image_tokens: int,
                      text_coeff: float = 1.0, image_coeff: float = 1.0) -> dict[str, jax.Array]:
    """Loss parts from the logits of the OUTPUT part only ([B, N + 2 + L, V]: soi, image, eoi,
    text; every other position has label -100 and contributes nothing)."""
    ce = cross_entropy(logits_out, labels_out)
    image_ce = ce[:, :num_image_tokens + 2]
    text_ce = ce[:, num_image_tokens + 2:]
    text_loss = jnp.sum(text_ce / t[:, None]) / text_ce.shape[1]
    image_loss = jnp.mean(image_ce)
    return {"loss": text_coeff * text_loss + image_coeff * image_loss, "text_loss": text_loss,
            "image_loss": image_loss}


def parallel_sft_forward(model, inputs: SFTInputs, *, num_image_tokens: int, text_len: int,
                         text_coeff: float = 1.0, image_coeff: float = 1.0) -> dict[str, jax.Array]:
    """Model forward (additive 0/1 attention bias, as MMaDA-Parallel-M trains) and the SFT loss;
    the head runs only on the output part."""
    total = inputs.input_ids.shape[1]
    out_positions = jnp.arange(total - (num_image_tokens + 2 + text_len), total)
    logits = model(inputs.input_ids, inputs.attention_mask, mask_mode="additive", positions=out_positions)
    return parallel_sft_loss(logits, inputs.labels[:, total - out_positions.shape[0]:], inputs.t,
                             num_image_tokens=num_image_tokens, text_coeff=text_coeff, image_coeff=image_coeff)


def mmada_pretrain_losses(logits: jax.Array, input_ids: jax.Array, labels: jax.Array, *, batch_sizes,
                          max_seq_length: int, mask_id: int, p_mask_lm: jax.Array, p_mask_mmu: jax.Array,
                          answer_lengths: jax.Array) -> dict[str, jax.Array]:
    """Base MMaDA ``forward_process`` on a batch [t2i | lm | mmu] (spec mmada_m.md §5.2).

    t2i: mean CE over the labelled positions from ``max_seq_length + 1`` on (soi, image, eoi);
    lm: sum of CE / p_mask over masked positions, divided by B_lm * L; mmu: sum of
    CE / p_mask / answer_length over masked positions, divided by B_mmu.
    """
    n_t2i, n_lm, n_mmu = (int(x) for x in batch_sizes)
    ce = cross_entropy(logits, labels)
    t2i_ce = ce[:n_t2i, max_seq_length + 1:]
    t2i_valid = labels[:n_t2i, max_seq_length + 1:] != IGNORE
    loss_t2i = jnp.sum(t2i_ce) / jnp.maximum(jnp.sum(t2i_valid), 1)
    lm_rows = slice(n_t2i, n_t2i + n_lm)
    lm_masked = input_ids[lm_rows] == mask_id
    loss_lm = jnp.sum(jnp.where(lm_masked, ce[lm_rows] / p_mask_lm, 0.0)) / (n_lm * logits.shape[1])
    mmu_rows = slice(n_t2i + n_lm, n_t2i + n_lm + n_mmu)
    mmu_masked = input_ids[mmu_rows] == mask_id
    loss_mmu = jnp.sum(jnp.where(mmu_masked, ce[mmu_rows] / p_mask_mmu / answer_lengths, 0.0)) / n_mmu
    return {"loss_t2i": loss_t2i, "loss_lm": loss_lm, "loss_mmu": loss_mmu}


def _first(condition: jax.Array, default: jax.Array) -> jax.Array:
    """Index of the first True along the last axis, ``default`` where there is none."""
    index = jnp.argmax(condition, axis=-1)
    return jnp.where(jnp.any(condition, axis=-1), index, default)


def dimoo_sft_loss(logits: jax.Array, input_ids: jax.Array, labels: jax.Array, tokens: TokenIds) -> dict[str, jax.Array]:
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


# ----------------------------------------------------------------------------- MMaDA-Parallel-A


class DimooSFTInputs(NamedTuple):
    input_ids: jax.Array        # [B, W] the sequences, right-padded with 0 (the reference's pad)
    labels: jax.Array           # [B, W] -100 except at masked image / text positions
    valid: jax.Array            # [B, W] False on the padding
    answer_start: jax.Array     # [B] position of <answer> (BOA): the loss lives at [start, start + P)
    answer_len: int             # P, static: every position a label can sit at is in the window


def dimoo_sft_random_draws(key: jax.Array, batch: int, num_image_tokens: int, text_len: int) -> dict[str, jax.Array]:
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


def _with_newlines(codes: jax.Array, grid_w: int, newline: int) -> jax.Array:
    """[B, h * w] -> [B, h * (w + 1)]: NEWLINE after every row (the last one too)."""
    b, n = codes.shape
    rows = codes.reshape(b, n // grid_w, grid_w)
    return jnp.concatenate([rows, jnp.full((b, n // grid_w, 1), newline, codes.dtype)], -1).reshape(b, -1)


def dimoo_sft_inputs(tokens: TokenIds, batch: Mapping[str, jax.Array], rand: Mapping[str, jax.Array], *,
                     system_ids, input_grid_w: int, output_grid_w: int, cond_dropout_prob: float = 0.1,
                     bos: bool = True) -> DimooSFTInputs:
    """Noised -A SFT sequences and labels of a batch (``ItemProcessor.process_item``, case 3).

    ``batch`` as the grain pipeline gives it: ``input_text`` / ``output_text`` [B, L] (BOS ids
    EOS, EOS-padded) with their lengths, ``input_image_codes`` [B, Ni], ``output_image_codes``
    [B, N] (raw codes, row-major grids ``input_grid_w`` / ``output_grid_w`` wide),
    ``has_input_image`` [B]. Each row is::

        BOS <system> S </system> <user> I <boi> in_rows <eoi> </user> <answer> <boi> out_rows <eoi> T </answer>

    with a NEWLINE after every image row; with probability ``cond_dropout_prob`` the instruction
    becomes ``<uncondition>`` and the input image is dropped. The output codes and the answer
    text ``BOS reasoning`` (its BOS included) are masked independently (:func:`_mask_codes`);
    labels are the original ids at masked positions. Rows are packed to the left and padded with
    id 0 (label -100) to a fixed width, so the shapes do not depend on the data.
    """
    b = batch["output_image_codes"].shape[0]
    in_text = jnp.asarray(batch["input_text"], jnp.int32)
    out_text = jnp.asarray(batch["output_text"], jnp.int32)
    length = in_text.shape[1]
    in_len = jnp.asarray(batch["input_text_len"], jnp.int32)
    out_len = jnp.asarray(batch["output_text_len"], jnp.int32)
    has_image = jnp.asarray(batch.get("has_input_image", jnp.ones((b,), bool)), bool)
    off, mask_id, newline = tokens.image_offset, tokens.mask_id, tokens["newline"]
    drop = rand["rand_dropout"] < cond_dropout_prob
    yes = jnp.ones((b,), bool)
    segments = []   # (ids [B, w], labels [B, w], valid [B, w])

    def add(ids, valid, labels=None):
        ids = jnp.broadcast_to(jnp.asarray(ids, jnp.int32), (b, jnp.shape(ids)[-1]))
        valid = jnp.broadcast_to(valid[:, None] if valid.ndim == 1 else valid, ids.shape)
        segments.append((ids, jnp.full(ids.shape, IGNORE, jnp.int32) if labels is None else labels, valid))

    head = ([tokens.bos_id] if bos else []) + [tokens["system"], *[int(i) for i in system_ids],
                                               tokens["end_system"], tokens["user"]]
    add(head, yes)
    add(in_text[:, 1:length - 1], (jnp.arange(length - 2) < (in_len - 2)[:, None]) & ~drop[:, None])
    add([tokens["uncondition"]], drop)
    in_image = _with_newlines(jnp.asarray(batch["input_image_codes"], jnp.int32) + off, input_grid_w, newline)
    add(jnp.concatenate([jnp.full((b, 1), tokens["boi"]), in_image, jnp.full((b, 1), tokens["eoi"])], 1),
        has_image & ~drop)
    add([tokens["end_user"]], yes)
    prefix_width = sum(ids.shape[1] for ids, _, _ in segments)

    add([tokens["boa"], tokens["boi"]], yes)
    out_codes = jnp.asarray(batch["output_image_codes"], jnp.int32) + off
    n = out_codes.shape[1]
    image_masked = _mask_codes(rand["rand_image_r"], rand["rand_image_order"], jnp.full((b,), n))
    add(_with_newlines(jnp.where(image_masked, mask_id, out_codes), output_grid_w, newline), yes,
        _with_newlines(jnp.where(image_masked, out_codes, IGNORE), output_grid_w, IGNORE))
    add([tokens["eoi"]], yes)
    text = out_text[:, :length - 1]                  # BOS + reasoning (the EOS is not part of it)
    text_len = out_len - 1
    text_masked = _mask_codes(rand["rand_text_r"], rand["rand_text_order"][:, :length - 1], text_len)
    add(jnp.where(text_masked, mask_id, text), jnp.arange(length - 1) < text_len[:, None],
        jnp.where(text_masked, text, IGNORE))
    add([tokens["eoa"]], yes)

    ids, labels, valid = (jnp.concatenate([seg[i] for seg in segments], axis=1) for i in range(3))
    answer_start = jnp.sum(valid[:, :prefix_width], axis=-1)   # real tokens before <answer>
    order = jnp.argsort(~valid, axis=-1, stable=True)        # pack the valid tokens to the left
    take = lambda a: jnp.take_along_axis(a, order, axis=-1)
    ids, labels, valid = take(ids), take(labels), take(valid)
    return DimooSFTInputs(jnp.where(valid, ids, 0), jnp.where(valid, labels, IGNORE), valid,
                          answer_start.astype(jnp.int32), ids.shape[1] - prefix_width)


def dimoo_sft_forward(model, inputs: DimooSFTInputs, tokens: TokenIds, *, attend_padding: bool = True
                      ) -> dict[str, jax.Array]:
    """Model forward and :func:`dimoo_sft_loss`, the head run only on each row's answer window
    (the instruction and input image carry no labels). ``attend_padding=True`` is the reference
    (no attention mask: the 0-padding is attended); False masks it out of attention."""
    window = inputs.answer_start[:, None] + jnp.arange(inputs.answer_len)
    mask = None if attend_padding else inputs.valid.astype(jnp.int32)
    logits = model(inputs.input_ids, mask, mask_mode="hard", positions=window)
    pick = lambda a: jnp.take_along_axis(a, window, axis=-1)
    parts = dimoo_sft_loss(logits, pick(inputs.input_ids), pick(inputs.labels), tokens)
    return {k: parts[k] for k in ("loss", "text_loss", "image_loss")}

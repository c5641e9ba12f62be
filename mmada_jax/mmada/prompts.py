"""Base MMaDA's prompts (t2i, mmu, lm), id for id as the reference ``UniversalPrompting`` builds them
(layouts: :mod:`mmada_jax.mmada.layout`).

All functions take token ids (lists of ints from a tokenizer, without BOS/EOS unless the caller
put them there) and the checkpoint's :class:`~mmada_jax.config.TokenIds`, and return numpy int32
arrays. ``max_text_len`` is the reference's ``UniversalPrompting(max_text_len=M)`` argument; the
reference then uses a text part of ``M + 1`` tokens for t2i (it counts the task token) and ``M``
for mmu. Spec: ``shared/spec/mmada_m.md`` §3.2; golden: ``shared/golden/prompting``.

Layouts:
  t2i       ``[iPAD]*p <|t2i|> BOS text EOS <|soi|> image*N <|eoi|>`` (left-padded to M+1)
  mmu       ``<|mmu|> <|soi|> image*N <|eoi|> BOS text EOS EOS...`` (right-padded with EOS to M)
  lm        ``BOS text EOS EOS...`` (right-padded with EOS)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import TokenIds
from ..sequences import IGNORE as IGNORE_ID
from ..sequences import join
from .layout import T2ILayout, image_part, mmu_head


def with_bos(tokens: TokenIds, ids: Sequence[int]) -> list[int]:
    """The reference prepends BOS unless the text already starts with it; empty text -> [BOS]."""
    ids = [int(i) for i in ids]
    if not ids:
        return [tokens.bos_id]
    return ids if ids[0] == tokens.bos_id else [tokens.bos_id] + ids


def _last_index(ids: Sequence[int], value: int) -> int:
    for pos in range(len(ids) - 1, -1, -1):
        if ids[pos] == value:
            return pos
    return -1


def t2i_prompt(tokens: TokenIds, texts: Sequence[Sequence[int]], image_ids: np.ndarray, max_text_len: int,
               labels: np.ndarray | None = None, drop_condition: Sequence[bool] | None = None):
    """Text-to-image sequences: (input_ids, attention_mask, label_ids or None), each [B, M+2+N+1].

    ``image_ids`` [B, N] are image tokens (ids, or MASK at generation). ``labels`` [B, N] are the
    image labels of training (true token where masked, -100 elsewhere). ``drop_condition[i]``
    replaces text i by ``<|t2i|> BOS EOS`` (classifier-free-guidance dropout).
    """
    image_ids = np.asarray(image_ids)
    part = T2ILayout(max_text_len, image_ids.shape[-1]).prefix_len
    n = image_ids.shape[-1]
    rows, masks, label_rows = [], [], []
    for i, text in enumerate(texts):
        ids = [tokens["t2i"]] + with_bos(tokens, text) + [tokens.eos_id]
        if drop_condition is not None and drop_condition[i]:
            ids = [tokens["t2i"], tokens.bos_id, tokens.eos_id]
        if len(ids) <= part:
            pad = part - len(ids)
            ids = [tokens["ipad"]] * pad + ids
            mask = [0] * pad + [1] * (part - pad + n + 2)
        else:
            ids = ids[: part - 1] + [tokens.eos_id]
            mask = [1] * (part + n + 2)
        rows.append(ids + image_part(tokens, image_ids[i]).tolist())
        masks.append(mask)
        if labels is not None:
            lab = ids + image_part(tokens, np.asarray(labels[i])).tolist()
            label_rows.append([IGNORE_ID if t == tokens["ipad"] else t for t in lab])
    out_labels = np.asarray(label_rows, np.int32) if labels is not None else None
    return np.asarray(rows, np.int32), np.asarray(masks, np.int32), out_labels


def t2i_gen_prompt(tokens: TokenIds, texts: Sequence[Sequence[int]], num_image_tokens: int, max_text_len: int):
    """Generation input (all image slots MASK) and its unconditional twin (empty texts).

    Returns (input_ids, attention_mask, uncond_input_ids, uncond_attention_mask).
    """
    masks = np.full((len(texts), num_image_tokens), tokens.mask_id, np.int32)
    ids, att, _ = t2i_prompt(tokens, texts, masks, max_text_len)
    uids, uatt, _ = t2i_prompt(tokens, [[] for _ in texts], masks, max_text_len)
    return ids, att, uids, uatt


def lm_prompt(tokens: TokenIds, texts: Sequence[Sequence[int]], max_seq_len: int):
    """Language modelling: (input_ids, attention_mask, label_ids) [B, max_seq_len].

    ``BOS text EOS`` right-padded with EOS; over-long texts are cut to ``max_seq_len`` with no EOS.
    As in the reference the attention mask is computed after padding, so it is all ones.
    """
    rows = []
    for text in texts:
        ids = with_bos(tokens, text) + [tokens.eos_id]
        ids = ids + [tokens.eos_id] * (max_seq_len - len(ids)) if len(ids) <= max_seq_len else ids[:max_seq_len]
        rows.append(ids)
    ids = np.asarray(rows, np.int32)
    return ids, np.ones_like(ids), ids.copy()


def lm_chat_prompt(tokens: TokenIds, texts: Sequence[Sequence[int]], max_seq_len: int):
    """Chat LM: (input_ids, prompt_mask, label_ids); prompt = through the last <|end_header_id|>."""
    ids, _, labels = lm_prompt(tokens, texts, max_seq_len)
    prompt = np.zeros_like(ids)
    for i, row in enumerate(ids.tolist()):
        prompt[i, : _last_index(row, tokens["end_header"]) + 1] = 1
    return ids, prompt, labels


def mmu_prompt(tokens: TokenIds, image_ids: np.ndarray, texts: Sequence[Sequence[int]], max_text_len: int):
    """Image understanding (training): (input_ids, prompt_mask, label_ids) [B, N+3+M].

    ``<|mmu|> <|soi|> image <|eoi|>`` then ``BOS text EOS`` right-padded with EOS to M (or cut to
    M-1 plus EOS). The prompt is the image part plus the text through its last
    ``<|end_header_id|>``; labels are -100 on the image part.
    """
    image_ids = np.asarray(image_ids)
    rows, prompts, label_rows = [], [], []
    for i, text in enumerate(texts):
        ids = padded_text(tokens, text, max_text_len)
        head = mmu_head(tokens, image_ids[i]).tolist()
        rows.append(head + ids)
        prompt = len(head) + _last_index(ids, tokens["end_header"]) + 1
        prompts.append([1] * prompt + [0] * (len(head) + len(ids) - prompt))
        label_rows.append([IGNORE_ID] * len(head) + [IGNORE_ID if t == tokens["ipad"] else t for t in ids])
    return (np.asarray(rows, np.int32), np.asarray(prompts, np.int32), np.asarray(label_rows, np.int32))


def padded_text(tokens: TokenIds, text: Sequence[int], length: int) -> list[int]:
    """``BOS text EOS`` right-padded with EOS to ``length``, or cut to length-1 plus EOS."""
    ids = with_bos(tokens, text) + [tokens.eos_id]
    if len(ids) <= length:
        return ids + [tokens.eos_id] * (length - len(ids))
    return ids[: length - 1] + [tokens.eos_id]


def mmu_gen_prompt(tokens: TokenIds, image_ids: np.ndarray, text: Sequence[int], max_text_len: int):
    """One MMU validation prompt: (input_ids [1, N+3+M], prompt_mask).

    Reference quirk (kept for parity): its prompt mask has ``max(prompt_length, M)`` entries, i.e.
    it is shorter than the sequence; batching two prompts of different prompt lengths fails there.
    """
    ids = padded_text(tokens, text, max_text_len)
    head = mmu_head(tokens, np.asarray(image_ids).reshape(-1)).tolist()
    prompt = len(head) + _last_index(ids, tokens["end_header"]) + 1
    predict = len(ids) - prompt
    mask = [1] * prompt + [0] * max(predict, 0)
    return np.asarray([head + ids], np.int32), np.asarray([mask], np.int32)


def mmu_question(tokens: TokenIds, image_ids: np.ndarray, chat_ids: Sequence[int]) -> np.ndarray:
    """An understanding prompt: ``<|mmu|> <|soi|> image <|eoi|> chat`` [P] (``chat_ids``: the
    chat-templated question with the generation prompt, no padding)."""
    return join(mmu_head(tokens, np.asarray(image_ids).reshape(-1)), np.asarray(chat_ids, np.int32).reshape(-1))


def mmu_inference_prompt(tokens: TokenIds, image_ids: np.ndarray, chat_ids: Sequence[int], gen_len: int) -> np.ndarray:
    """MMU inference (``inference_mmu.py``): :func:`mmu_question` + MASK*gen_len, [1, P + gen_len]."""
    return join(mmu_question(tokens, image_ids, chat_ids), np.full(gen_len, tokens.mask_id, np.int32))[None]

"""Base MMaDA's text-to-image and understanding tasks as extra rows of a parallel SFT batch, with
base MMaDA's stage losses (spec ``mmada_m.md`` §5.2), so one model learns the parallel task and
the two base tasks its UniGRPO stage trains (``pararl.md`` §3).

Every record of data pretokenized with ``--base-tasks`` gives one row of each task about its
OUTPUT image (texts from :mod:`mmada_jax.data.pipeline`, text part ``M`` = ``base_text_len``):

* t2i (:class:`~.layout.T2ILayout` ``(M, N)``, as :func:`~.prompts.t2i_prompt` lays it out):
  ``[iPAD]*p <|t2i|> BOS request EOS <|soi|> image <|eoi|>``; with t ~ U(0, 1), exactly
  ``max(1, round(N m))`` random codes are masked, ``m = max(cos(pi/2 t), min_masking_rate)``;
  condition dropout replaces the request by ``BOS EOS`` (the guidance's unconditional prompt).
  Loss: the mean CE over soi, the masked codes and eoi (no 1/t).
* mmu (:func:`~.prompts.mmu_prompt`'s layout): ``<|mmu|> <|soi|> image <|eoi|> question answer
  EOS...`` (N + 3 + M tokens); every answer slot (the answer and its EOS padding; the question,
  chat template included, never) is masked with probability ``p = (1 - eps) t + eps``. Loss:
  ``sum CE / p / answer_length`` over the masked slots, mean over rows (LLaDA's SFT loss).

The rows are seen as the samplers see them, without an attention mask (the reference's
``forward_process`` adds a +1 bias on the non-padding pairs of t2i rows; its ``t2i_generate`` and
``mmu_generate`` attend every position). Every random decision enters as an explicit uniform
array (:func:`random_draws`), drawn from the train step's key.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from ..config import TokenIds
from ..losses import cross_entropy
from ..sequences import IGNORE
from .layout import T2ILayout
from .losses import masked_answer_loss, t2i_loss


class BaseRows(NamedTuple):
    input_ids: jax.Array      # [B, T]
    labels: jax.Array         # [B, P] at the loss positions (``head_start`` on), IGNORE where not a target
    head_start: int           # first position that reaches the LM head
    p_mask: jax.Array         # [B] (mmu; ones for t2i)
    answer_len: jax.Array     # [B] (mmu; ones for t2i)


def random_draws(key: jax.Array, batch: int, num_image_tokens: int, text_len: int) -> dict[str, jax.Array]:
    """The uniform draws of one batch's base-task rows."""
    keys = jax.random.split(key, 5)
    u = lambda k, shape: jax.random.uniform(k, shape, jnp.float32)
    return {"rand_t2i_t": u(keys[0], (batch,)), "rand_t2i_perm": u(keys[1], (batch, num_image_tokens)),
            "rand_t2i_dropout": u(keys[2], (batch,)), "rand_mmu_t": u(keys[3], (batch,)),
            "rand_mmu_mask": u(keys[4], (batch, text_len))}


def t2i_mask_ratio(t: jax.Array, min_masking_rate: float) -> jax.Array:
    """MaskGIT's cosine ratio as base MMaDA trains it: ``max(cos(pi/2 t), min_masking_rate)``."""
    return jnp.maximum(jnp.cos(t * jnp.float32(math.pi * 0.5)), jnp.float32(min_masking_rate))


def t2i_rows(tokens: TokenIds, batch: Mapping[str, jax.Array], rand: Mapping[str, jax.Array], *,
             min_masking_rate: float = 1e-3, cond_dropout_prob: float = 0.1) -> BaseRows:
    """Noised text-to-image rows of ``t2i_text`` [B, M] (BOS request EOS, EOS-padded; lengths
    ``t2i_text_len``) and ``output_image_codes`` [B, N] (raw codes)."""
    text = jnp.asarray(batch["t2i_text"], jnp.int32)
    length = jnp.asarray(batch["t2i_text_len"], jnp.int32)
    codes = jnp.asarray(batch["output_image_codes"], jnp.int32) + tokens.image_offset
    b, m = text.shape
    n = codes.shape[1]
    layout = T2ILayout(m, n)
    drop = rand["rand_t2i_dropout"] < cond_dropout_prob
    text = jnp.where(drop[:, None], jnp.full_like(text, tokens.eos_id).at[:, 0].set(tokens.bos_id), text)
    length = jnp.where(drop, 2, length)
    # the prefix [iPAD]*p <|t2i|> text[:length], p = M - length: slot j reads text[j - p - 1]
    k = jnp.arange(layout.prefix_len)[None] - (m - length)[:, None]
    prefix = jnp.where(k < 0, tokens["ipad"], jnp.where(k == 0, tokens["t2i"],
                                                       jnp.take_along_axis(text, jnp.clip(k - 1, 0, m - 1), axis=1)))
    ratio = t2i_mask_ratio(rand["rand_t2i_t"].astype(jnp.float32), min_masking_rate)
    n_masked = jnp.maximum(1, jnp.round(n * ratio)).astype(jnp.int32)
    masked = jnp.argsort(rand["rand_t2i_perm"], axis=-1) < n_masked[:, None]
    col = lambda token: jnp.full((b, 1), token, jnp.int32)  # noqa: E731
    input_ids = jnp.concatenate([prefix, col(tokens["soi"]), jnp.where(masked, tokens.mask_id, codes),
                                 col(tokens["eoi"])], axis=1)
    labels = jnp.concatenate([col(tokens["soi"]), jnp.where(masked, codes, IGNORE), col(tokens["eoi"])], axis=1)
    ones = jnp.ones((b,), jnp.float32)
    return BaseRows(input_ids, labels, layout.prefix_len, ones, ones)


def mmu_rows(tokens: TokenIds, batch: Mapping[str, jax.Array], rand: Mapping[str, jax.Array], *,
             eps: float = 1e-3) -> BaseRows:
    """Noised understanding rows of ``mmu_text`` [B, M] (question, answer, EOS padding; the first
    ``mmu_prompt_len`` never masked) about ``output_image_codes`` [B, N]."""
    text = jnp.asarray(batch["mmu_text"], jnp.int32)
    prompt_len = jnp.asarray(batch["mmu_prompt_len"], jnp.int32)
    codes = jnp.asarray(batch["output_image_codes"], jnp.int32) + tokens.image_offset
    b, m = text.shape
    p = jnp.float32(1 - eps) * rand["rand_mmu_t"].astype(jnp.float32) + jnp.float32(eps)
    answer = jnp.arange(m)[None] >= prompt_len[:, None]
    masked = answer & (rand["rand_mmu_mask"] < p[:, None])
    col = lambda token: jnp.full((b, 1), token, jnp.int32)  # noqa: E731
    head = jnp.concatenate([col(tokens["mmu"]), col(tokens["soi"]), codes, col(tokens["eoi"])], axis=1)
    input_ids = jnp.concatenate([head, jnp.where(masked, tokens.mask_id, text)], axis=1)
    return BaseRows(input_ids, jnp.where(masked, text, IGNORE), head.shape[1], p, (m - prompt_len).astype(jnp.float32))


def base_task_losses(model, tokens: TokenIds, batch: Mapping[str, jax.Array], key: jax.Array, *,
                     min_masking_rate: float = 1e-3, cond_dropout_prob: float = 0.1) -> dict[str, jax.Array]:
    """``{t2i_loss, mmu_loss}`` of a batch's base-task rows (one forward per task; the LM head
    runs on the image part of t2i rows and the text part of mmu rows only)."""
    b, n = batch["output_image_codes"].shape
    rand = random_draws(key, b, n, batch["mmu_text"].shape[1])

    def ce(rows: BaseRows) -> jax.Array:
        logits = model(rows.input_ids, positions=jnp.arange(rows.head_start, rows.input_ids.shape[1]))
        return cross_entropy(logits, rows.labels)

    t2i = t2i_rows(tokens, batch, rand, min_masking_rate=min_masking_rate, cond_dropout_prob=cond_dropout_prob)
    mmu = mmu_rows(tokens, batch, rand, eps=min_masking_rate)
    return {"t2i_loss": t2i_loss(ce(t2i), t2i.labels),
            "mmu_loss": masked_answer_loss(ce(mmu), mmu.labels != IGNORE, mmu.p_mask[:, None],
                                           mmu.answer_len[:, None])}

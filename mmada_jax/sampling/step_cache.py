"""The step cache of the joint samplers: most denoising steps recompute only a few positions.

Between two steps of a masked-diffusion sampler only a handful of tokens change (the text
positions just decoded, the image codes of an image update), yet every step runs the whole
sequence (prompt, input image, output) through the model. The cache keeps, from a full forward,
every block's keys and values and the final hidden state of every position (a :class:`Slot`), and
on the steps in between recomputes a FIXED number of positions per group (the output text, the
output image): first those whose token changed since their states were computed (the newly
decoded), then the masked ones the sampler is least sure of (lowest confidence of their last
prediction). Each block runs its projections and MLP on those positions only, writes their keys
and values into the cached ones and lets their queries attend over all keys
(:meth:`~mmada_jax.model.LLaDAModel.encode_at`); the heads read the final hidden states of all
positions, stale where not recomputed. Counts are static, so a cached step is one more branch of
the same jitted ``lax.scan`` step.

It is an approximation: under bidirectional attention every position's states depend on every
changed token, so the prompt's, the input image's and the unselected positions' states go stale
until the next full forward. This is the family of Lumina-DiMOO's ML-Cache (a fixed ~10% of
positions between refreshes, spec ``mmada_a.md`` §6) and dLLM-Cache (long-interval prompt refresh,
a fixed share of the response recomputed), with dKV-Cache's rule that a decoded token's states are
recomputed after it changes. No published method was evaluated on joint text+image decoding, so
its cost in quality is measured here, on the demo world (README, "Step cache").

Settings (:class:`CacheSettings`, shared by the -M and -A samplers): ``cache_interval`` k (0: off,
every step a full forward, the default and the reference's behaviour), ``cache_fraction`` (share
of each group recomputed on a cached step) and ``cache_warmup`` (share of the first steps that are
all full forwards, as ML-Cache's warm-up). Step s is a full forward when ``s < warmup steps`` or
``(s - warmup steps) % k == 0``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..model import KV
from ..settings import setting
from ..sharding import constrain
from .common import on_masked
from .vocab_chunks import TextDecision


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """The step cache's settings (module docstring); a sampler's settings inherit them."""

    cache_interval: int = setting(0, "step cache: a full forward every k steps, in between only a share of the "
                                     "output positions is recomputed (0: off, every step a full forward)", minimum=0)
    cache_fraction: float = setting(0.25, "step cache: share of the output text and of the output image "
                                          "recomputed on a cached step", minimum=0.0)
    cache_warmup: float = setting(0.0, "step cache: share of the first steps that are all full forwards",
                                  minimum=0.0)

    def check_cache(self) -> None:
        for name in ("cache_fraction", "cache_warmup"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be at most 1, got {getattr(self, name)!r}")

    @property
    def cached(self) -> bool:
        return self.cache_interval > 0


def refresh_steps(steps: int, settings: CacheSettings) -> np.ndarray:
    """bool [steps]: which steps run a full forward (all of them when the cache is off)."""
    s = np.arange(steps)
    if not settings.cached:
        return np.ones(steps, bool)
    warmup = int(steps * settings.cache_warmup)
    return (s < warmup) | ((s - warmup) % settings.cache_interval == 0)


def budget(n: int, settings: CacheSettings) -> int:
    """How many of a group's ``n`` positions a cached step recomputes (at least one)."""
    return max(1, min(n, math.ceil(n * settings.cache_fraction)))


class Slot(NamedTuple):
    """What the cache keeps for a batch of rows: every block's keys and values (:class:`KV`), the
    final hidden states [rows, L, d] and the token ids each position's states were computed from
    (``seen`` [rows, L]; a position whose current token differs is stale)."""

    kv: KV
    hidden: jax.Array
    seen: jax.Array


def empty_slot(model, rows: int, length: int) -> Slot:
    """Zeros of a slot's shapes (the first step is always a full forward that fills it), split
    over the mesh as the forward's activations are."""
    c = model.config
    dt = jnp.dtype(c.dtype)
    shape = (c.n_layers, rows, length, c.n_kv_heads, c.head_dim)
    kv_names = (None, "batch", "length", "act_heads", None)
    return Slot(KV(constrain(jnp.zeros(shape, dt), kv_names), constrain(jnp.zeros(shape, dt), kv_names)),
                constrain(jnp.zeros((rows, length, c.d_model), dt), ("batch", "length", "act_embed")),
                jnp.full((rows, length), -1, jnp.int32))


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """The step cache's part of a joint sampler's scan carry, built inside the jitted program
    (:attr:`~mmada_jax.sampling.common.Static.scan_state`): a slot for the forward's rows
    (``twins`` per sequence: 2 with a guidance twin), for -A a second one for its two
    unconditional rows, the last text decision of every text position and the image confidences."""

    length: int
    text_len: int
    image_tokens: int
    twins: int
    exact: bool
    record: bool
    uncond_slot: bool = False

    def __call__(self, model, batch: int) -> dict:
        text = (batch, self.text_len)
        decision = TextDecision(jnp.zeros(text, jnp.int32), jnp.zeros(text, jnp.float64 if self.exact else jnp.float32),
                                jnp.zeros(text, jnp.int32), jnp.zeros(text, jnp.float32) if self.record else None)
        cache = {"slot": empty_slot(model, self.twins * batch, self.length), "decision": decision,
                 "image_conf": jnp.zeros((batch, self.image_tokens), jnp.float32)}
        if self.uncond_slot:
            cache.update(uncond_slot=empty_slot(model, 2 * batch, self.length), uncond_stale=jnp.asarray(True))
        return cache


def full(model, rows, attention_mask=None, position_ids=None) -> tuple[jax.Array, Slot]:
    """A full forward of ``rows`` [R, L]: (hidden [R, L, d], the slot it fills)."""
    hidden, _, kv = model.encode(rows, attention_mask, mask_mode="hard", position_ids=position_ids, return_kv=True,
                                 inference=True)
    return hidden, Slot(kv, hidden, jnp.asarray(rows, jnp.int32))


class Group(NamedTuple):
    """Positions that compete for one recompute budget: ``positions`` (static absolute indices
    [n]), ``priority`` [rows, n] (higher first; in [-1, 1], e.g. ``1 - confidence`` of masked
    positions and -1 of decoded ones) and the ``count`` recomputed (static)."""

    positions: np.ndarray
    priority: jax.Array
    count: int


def output_groups(x, mask_id: int, settings: CacheSettings, twins: int = 1,
                  **regions: tuple[np.ndarray, jax.Array]) -> list[Group]:
    """One :class:`Group` per output region (``name=(positions [n], confidence [B, n])``) of the
    sequences ``x`` [B, L]: masked positions ranked by ``1 - confidence`` of their last prediction,
    decoded ones last; ``twins`` copies of each row's priorities (unconditional rows made from the
    same output share its picks)."""
    groups = []
    for positions, confidence in regions.values():
        masked = x[:, positions] == mask_id
        priority = jnp.where(masked, 1.0 - confidence.astype(jnp.float32), -1.0)
        groups.append(Group(positions, jnp.tile(priority, (twins, 1)), budget(len(positions), settings)))
    return groups


def cache_groups(x, cache: dict, layout, mask_id: int, settings: CacheSettings, twins: int = 1) -> list[Group]:
    """The joint samplers' groups (:func:`output_groups`): the text region ranked by the last text
    decision's confidence, then the output image by the last image update's."""
    return output_groups(x, mask_id, settings, twins, text=(layout.text_positions(), cache["decision"].confidence),
                         image=(layout.image_positions(), cache["image_conf"]))


def pick(rows, slot: Slot, group: Group) -> jax.Array:
    """Indices into ``group.positions`` [rows, count]: the positions whose token changed since
    their states were computed first, then by priority (ties: lower index first)."""
    pos = jnp.asarray(group.positions)
    stale = rows[:, pos] != slot.seen[:, pos]
    score = jnp.where(stale, 2.0, 0.0) + group.priority.astype(jnp.float32)
    return jax.lax.top_k(score, group.count)[1].astype(jnp.int32)


def partial(model, rows, slot: Slot, groups: Sequence[Group], attention_mask=None,
            position_ids=None) -> tuple[jax.Array, Slot, list[jax.Array]]:
    """A cached step: recompute each group's picked positions (:func:`pick`) of ``rows``, the rest
    from ``slot``. Returns (hidden [R, L, d], the updated slot, each group's picks [R, count])."""
    picks = [pick(rows, slot, g) for g in groups]
    positions = jnp.concatenate([jnp.asarray(g.positions)[p] for g, p in zip(groups, picks)], axis=1)
    hidden, kv = model.encode_at(rows, positions, slot.kv, slot.hidden, attention_mask, mask_mode="hard",
                                 position_ids=position_ids)
    index = jnp.arange(rows.shape[0])[:, None]
    seen = slot.seen.at[index, positions].set(jnp.take_along_axis(rows, positions, axis=1))
    return hidden, Slot(kv, hidden, seen), picks


def forward(model, rows, x, cache: dict | None, refresh, decide, *, layout, mask_id: int, settings: CacheSettings,
            attention_mask=None, position_ids=None) -> tuple[jax.Array, TextDecision, dict | None]:
    """One step's forward of a joint sampler and its text decision: (hidden, decision, cache).

    ``rows`` [R, L] are the forward's rows (the sequences ``x`` [B, L] first, then their
    guidance twins); ``decide(text_hidden [R, T', d], positions) -> TextDecision`` [B, T'] is the
    text decision (``positions`` [B, T']: which of the text budget's positions the T' are; None:
    the T' given, in their order); ``layout`` gives ``text_positions()`` and ``image_positions()``.
    A full forward decides on the text positions still masked in ``x`` only
    (:func:`~mmada_jax.sampling.common.on_masked`). Without a cache (None): the plain forward.
    With one (the carry :class:`CacheSpec` builds): a full forward that refills the slot when
    ``refresh`` (traced bool), else a cached one (:func:`partial` over the text and output-image
    groups, the twins sharing their row's picks) whose decision runs on the recomputed text
    positions only and is merged into the last one."""
    text_positions = jnp.asarray(layout.text_positions())
    decide_full = lambda hidden: on_masked(decide, hidden[:, text_positions], x[:, text_positions] == mask_id)  # noqa: E731
    if cache is None:
        hidden, _ = model.encode(rows, attention_mask, mask_mode="hard", position_ids=position_ids, inference=True)
        return hidden, decide_full(hidden), None
    b = x.shape[0]

    def full_step(cache):
        hidden, slot = full(model, rows, attention_mask, position_ids)
        cache = dict(cache, slot=slot, decision=decide_full(hidden))
        if "uncond_stale" in cache:       # -A: its unconditional slot is refilled on the next image step
            cache["uncond_stale"] = jnp.asarray(True)
        return hidden, cache

    def cached_step(cache):
        groups = cache_groups(x, cache, layout, mask_id, settings, rows.shape[0] // b)
        hidden, slot, (picks, _) = partial(model, rows, cache["slot"], groups, attention_mask, position_ids)
        fresh = decide(jnp.take_along_axis(hidden, text_positions[picks][..., None], axis=1), None)
        return hidden, dict(cache, slot=slot, decision=scatter(cache["decision"], picks[:b], fresh))

    hidden, cache = jax.lax.cond(refresh, full_step, cached_step, cache)
    return hidden, cache["decision"], cache


def scatter(previous, picks: jax.Array, new):
    """Each leaf of ``previous`` [B, n, ...] with the rows' ``picks`` [B, count] replaced by ``new``
    [B, count, ...] (a cached step's decisions merged into the last full ones)."""
    index = jnp.arange(picks.shape[0])[:, None]
    return jax.tree.map(lambda old, fresh: old.at[index, picks].set(fresh.astype(old.dtype)), previous, new)

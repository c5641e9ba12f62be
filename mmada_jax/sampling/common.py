"""Building blocks shared by the masked-diffusion samplers.

Schedules are computed statically in numpy with the reference's float32 arithmetic (a cosine of
0.49999997 instead of 0.5 changes how many image tokens stay masked). Random numbers enter as
uniforms, either drawn from a PRNG key inside the jitted loop or replayed from a recorded tape
(``shared/golden/samplers``), and go through the same code: Gumbel noise from uniforms, categorical
draws by inverse CDF over a float64 cumulative sum, selection of the k best positions per row by
rank.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..config import TokenIds

F32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass
class SamplerOutput:
    """``ids``: final sequences [B, L]; ``trajectory``: the sequences after every step [S, B, L]
    (when asked); ``image_codes`` [B, N] and ``text_ids`` [B, T] for samplers that produce them;
    ``pads`` [B]: leading pad tokens of each row, for samplers that left-pad; ``layout``: the
    sequence layout of the (padded) batch, which says where each segment of ``ids`` is;
    ``recording``: the chosen steps RL keeps (:class:`~mmada_jax.sampling.recording.Recording`),
    when asked."""

    ids: np.ndarray
    trajectory: np.ndarray | None = None
    image_codes: np.ndarray | None = None
    text_ids: np.ndarray | None = None
    pads: np.ndarray | None = None
    layout: Any = None
    recording: Any = None


@dataclasses.dataclass(frozen=True)
class Static:
    """The compile-time side of one sampler run, handed to its step function: the sampler's
    frozen ``settings``, the sequence ``layout`` of the batch, the checkpoint's token ids, float64
    sampling arithmetic (``exact``), whether every step's sequence is kept (``trajectory``) and
    how many chosen steps per row are recorded for RL (``record``, 0: none;
    :mod:`~mmada_jax.sampling.recording`) and the state only the scan carries (``scan_state``,
    e.g. :class:`~mmada_jax.sampling.step_cache.CacheSpec`: ``scan_state(model, batch)`` builds
    it inside the program, appended to the carry, and it is left out of the returned carry, so it
    never crosses to or from the host)."""

    settings: Any
    layout: Any
    tokens: TokenIds
    exact: bool
    trajectory: bool
    record: int = 0
    scan_state: Any = None


# ----------------------------------------------------------------------------- schedules

def num_transfer_tokens(n_masked, steps: int):
    """Tokens to unmask at each of ``steps`` steps: n // steps each, the first n % steps get +1.

    ``n_masked``: int array [B] -> [B, steps] (works on numpy and jax arrays).
    """
    xp = jnp if isinstance(n_masked, jax.Array) else np
    n = xp.asarray(n_masked)[..., None]
    i = xp.arange(steps)
    return (n // steps + (i < n % steps)).astype(xp.int32)


def cosine_mask_ratio(step: int, total: int) -> np.float32:
    """cos(r * pi * 0.5), r = (step + 1) / total, with the reference's float32 argument.

    The argument is rounded to float32 at each operation as torch does (so r = 2/3 gives
    0.49999997, not 0.5); the cosine itself is correctly rounded, which may differ from torch's
    float32 cosine in the last bit, but floor(N * ratio) agrees for every N <= 4096 and every
    step count < 400 (checked against torch in tests/test_sampling_common.py).
    """
    r = np.float32((step + 1) / total)
    return np.float32(math.cos(float(np.float32(np.float32(r * np.float32(math.pi)) * np.float32(0.5)))))


def mask_ratio_schedule(total: int, schedule: str = "cosine") -> np.ndarray:
    """Fraction of tokens left masked after each step, [total] float32."""
    if schedule == "cosine":
        return np.asarray([cosine_mask_ratio(s, total) for s in range(total)], np.float32)
    r = (np.arange(total, dtype=np.float32) + 1) / np.float32(total)
    if schedule == "linear":
        return np.clip(1 - r, 1e-6, 1.0).astype(np.float32)
    if schedule.startswith("pow"):
        return (1 - r ** float(schedule[3:] or 2)).astype(np.float32)
    raise ValueError(f"unknown mask schedule {schedule!r}; use cosine, linear or powP")


def image_step_indices(text_steps: int, image_steps: int) -> np.ndarray:
    """The text steps at which the parallel sampler also updates the image.

    round(linspace(text_steps // 4, text_steps - 1, image_steps)) with torch's float32 linspace
    (computed from both ends) and round-half-to-even.
    """
    start, end = np.float32(text_steps // 4), np.float32(text_steps - 1)
    if image_steps == 1:
        values = np.asarray([start], np.float32)
    else:
        step = np.float32((end - start) / np.float32(image_steps - 1))
        i = np.arange(image_steps)
        half = image_steps // 2
        values = np.where(i < half, start + step * i.astype(np.float32),
                          end - step * (image_steps - 1 - i).astype(np.float32)).astype(np.float32)
    return np.unique(np.round(values).astype(np.int64))


def left_padding(pads, length: int) -> dict[str, np.ndarray]:
    """Sampler constants for rows left-padded by ``pads`` [R] to ``length``: the hard
    ``attention_mask`` [R, L] of the real tokens and RoPE ``position_ids`` counting from each
    row's first real token, so a padded row computes what it computes alone."""
    real = (np.arange(length)[None] >= np.asarray(pads)[:, None]).astype(np.int32)
    return {"attention_mask": real, "position_ids": np.maximum(np.cumsum(real, 1) - 1, 0).astype(np.int32)}


# ----------------------------------------------------------------------------- noise

def gumbel_from_uniform(u: jax.Array) -> jax.Array:
    """-log(-log(u)) with both logs clamped at 1e-20, as the reference's ``gumbel_noise``."""
    tiny = jnp.asarray(1e-20, u.dtype)
    return -jnp.log(jnp.maximum(-jnp.log(jnp.maximum(u, tiny)), tiny))


def categorical_from_uniform(probs: jax.Array, u: jax.Array, exact: bool = True) -> jax.Array:
    """Inverse-CDF draw per row: the first k with cumsum(p)[k] > u * sum(p), clamped to K-1.

    ``probs`` [..., K], ``u`` [...]. With ``exact`` the cumulative sum is float64 (as the
    reference's ``torch.multinomial`` replacement; needs ``jax.enable_x64``), else float32.
    """
    dtype = jnp.float64 if exact else jnp.float32
    c = jnp.cumsum(probs.astype(dtype), axis=-1)
    target = u.astype(dtype)[..., None] * c[..., -1:]
    k = jnp.sum(c <= target, axis=-1)
    return jnp.minimum(k, probs.shape[-1] - 1).astype(jnp.int32)


def mask_by_random_topk(mask_len: jax.Array, probs: jax.Array, temperature: jax.Array,
                        u_gumbel: jax.Array) -> jax.Array:
    """True at the ``mask_len`` (per row) lowest-confidence positions: confidence =
    log(max(p, 1e-20)) + temperature * Gumbel(u); cut = sorted(confidence)[mask_len]."""
    confidence = jnp.log(jnp.maximum(probs, 1e-20)) + temperature * gumbel_from_uniform(u_gumbel)
    index = jnp.broadcast_to(mask_len, confidence.shape[:-1] + (1,)).astype(jnp.int32)
    cut = jnp.take_along_axis(jnp.sort(confidence, axis=-1), index, axis=-1)
    return confidence < cut


def top_k_mask(confidence: jax.Array, k: jax.Array) -> jax.Array:
    """True at the k[b] highest entries of each row (ties: lower index first)."""
    order = jnp.argsort(-confidence, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1, stable=True)
    return ranks < k[..., None]


def first_argmax(x: jax.Array) -> jax.Array:
    """Index of the first maximum along the last axis (as torch/numpy argmax), int32.

    Two plain reductions (max, then min of matching indices); XLA:CPU runs them several times
    faster than its variadic argmax over a 134k vocabulary.
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.min(jnp.where(x == top, iota, x.shape[-1]), axis=-1)


def max_probability(logits: jax.Array) -> jax.Array:
    """The largest softmax probability along the last axis, float32 (a prediction's confidence)."""
    logits = logits.astype(jnp.float32)
    return jnp.exp(jnp.max(logits, axis=-1) - jax.nn.logsumexp(logits, axis=-1))


def commit_text(current: jax.Array, x0: jax.Array, confidence: jax.Array, k: jax.Array, *, mask_id: int,
                remasking: str, rnd: "Randomness", index) -> jax.Array:
    """Write the prediction ``x0`` at the ``k`` [B] masked positions of ``current`` [B, T] ranked
    highest by ``remasking`` (``low_confidence``: ``confidence``, the softmax probability of the
    un-noised logits; ``random``: uniform noise)."""
    is_mask = current == mask_id
    conf = confidence if remasking == "low_confidence" else rnd.uniform("u_text_random", index, x0.shape)
    transfer = top_k_mask(jnp.where(is_mask, conf, -jnp.inf), k) & is_mask
    return jnp.where(transfer, x0, current)


def text_decision(chunk_logits, vocab: int, shape, *, temperature: float, rnd: "Randomness", index, exact: bool,
                  gumbel=gumbel_from_uniform, gumbel_dtype=None, want_cond_lse: bool = False, positions=None):
    """The :class:`~mmada_jax.sampling.vocab_chunks.TextDecision` of text positions of ``shape``
    [B, T]: the argmax (with Gumbel noise when ``temperature > 0``) and its confidence.

    The logits are never held whole: ``chunk_logits(start, size) -> (guided, cond)`` gives a
    chunk of vocabulary columns (:func:`~mmada_jax.sampling.vocab_chunks.reduce_vocab`). The Gumbel
    noise is ``gumbel(u)`` of the ``u_text_gumbel`` uniforms at ``index``, drawn in
    ``gumbel_dtype`` (default float64 when ``exact``) chunk by chunk
    (:meth:`Randomness.uniform_columns`): samplers whose reference computes it differently (-A:
    float32, ``-log(-log(u + 1e-10) + 1e-10)``, counted only over the steps that draw it) pass their own.
    ``positions`` [B, C]: ``chunk_logits`` gives only these of the ``shape`` positions (their noise
    is taken from the whole draw, so the decision is the one of all positions, at these).
    """
    from .vocab_chunks import reduce_vocab
    dtype = gumbel_dtype or (jnp.float64 if exact else jnp.float32)
    full = tuple(shape) + (vocab,)

    def noise(start, size):
        u = rnd.uniform_columns("u_text_gumbel", index, full, start, size, dtype)
        return gumbel(u if positions is None else jnp.take_along_axis(u, positions[..., None], axis=1))
    return reduce_vocab(chunk_logits, vocab, exact=exact, temperature=temperature,
                        noise=noise if temperature > 0 else None,
                        want_cond_lse=want_cond_lse)


#: run the text decision on the still-masked positions only (:func:`on_masked`); False: on every
#: text position, as before it existed (``bench/sampler.py``'s baseline sets it; same decisions)
MASKED_ONLY = True


def decision_widths(t: int, parts: int = 4) -> list[int]:
    """The widths :func:`on_masked` compiles the text decision at, ascending, ``t`` last."""
    return sorted({-(-t * q // parts) for q in range(1, parts)} - {t}) + [t]


def on_masked(decide, text_hidden: jax.Array, is_mask: jax.Array, parts: int = 4):
    """``decide`` run on the still-masked text positions only: the same decision where it is read.

    ``decide(hidden [R, C, d], positions [B, C] | None) -> TextDecision [B, C]`` (its type:
    :class:`~mmada_jax.sampling.vocab_chunks.TextDecision`); ``text_hidden``
    [R, T, d] holds the B rows' text hidden states (R = B, or 2B with guidance twins after them);
    ``is_mask`` [B, T]. A sampler only commits masked positions, and their number falls step by
    step, so the text head (most of a small model's step over a real vocabulary) need not see the
    decided ones. Shapes must stay static inside the scan: the decision is compiled at ``parts``
    widths (:func:`decision_widths`: T/parts, 2T/parts, ..., T; on average ~5/8 of T over a run
    for 4), and each step takes the smallest that holds every row's masked positions
    (``lax.switch``). Positions left out get x0 = argmax = 0 and confidence -inf (``commit_text``
    never reads them)."""
    b, t = is_mask.shape
    if not MASKED_ONLY:
        return decide(text_hidden, None)
    widths = decision_widths(t, parts)
    need = jnp.max(jnp.sum(is_mask, axis=1))
    branch = jnp.sum(need > jnp.asarray(widths[:-1], jnp.int32)).astype(jnp.int32)
    order = jnp.argsort(~is_mask, axis=1, stable=True)       # masked positions first, in order
    twins = text_hidden.shape[0] // b

    def width(c):
        def run(_):
            if c == t:
                return decide(text_hidden, None)
            positions = order[:, :c]
            picked = jnp.take_along_axis(text_hidden, jnp.tile(positions, (twins, 1))[..., None], axis=1)
            part = decide(picked, positions)
            rows = jnp.arange(b)[:, None]

            def place(value, fill):
                return None if value is None else jnp.full((b, t), fill, value.dtype).at[rows, positions].set(value)
            return type(part)(place(part.x0, 0), place(part.confidence, -jnp.inf), place(part.argmax, 0),
                              place(part.cond_lse, 0.0))
        return run
    return jax.lax.switch(branch, [width(c) for c in widths], None)


# ----------------------------------------------------------------------------- MaskGIT

def image_update(cond, uncond, region, *, guidance: float, mask_len_cap, temperature, offset: int,
                 mask_id: int, u_categorical, u_gumbel, exact: bool):
    """One MaskGIT update of an image region.

    Args:
      cond, uncond: logits [B, N, K] at the image positions over the codebook columns (uncond
        None without guidance).
      region: current image tokens [B, N] (image ids or MASK).
      mask_len_cap: float32 floor(N * mask_ratio) for this step (scalar).
      temperature: float32 scalar.
    Returns (new region [B, N], sampled codes [B, N] with known codes kept).
    """
    logits = cond if uncond is None else (1 + guidance) * cond - guidance * uncond
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    sampled = categorical_from_uniform(probs, u_categorical, exact)
    unknown = region == mask_id
    sampled = jnp.where(unknown, sampled, region - offset)
    selected = jnp.take_along_axis(probs, sampled[..., None], axis=-1)[..., 0]
    selected = jnp.where(unknown, selected, F32_MAX)
    n_unknown = unknown.sum(-1, keepdims=True).astype(jnp.float32)
    mask_len = jnp.maximum(1.0, jnp.minimum(n_unknown - 1, mask_len_cap))
    masking = mask_by_random_topk(mask_len, selected, temperature, u_gumbel)
    return jnp.where(masking, mask_id, sampled + offset).astype(jnp.int32), sampled


# ----------------------------------------------------------------------------- randomness

@dataclasses.dataclass(frozen=True)
class Randomness:
    """Where a sampler's uniforms come from: per-row PRNG keys, or a recorded tape to replay.

    ``keys`` holds one key per batch row, so row b of a batch draws exactly what a single run
    with ``keys[b]`` draws. Tape arrays are indexed by step (``u_text_gumbel`` [S, B, L, V],
    ``u_text_random`` [S, B, L]) or by image step (``u_multinomial`` [S_img, B*N], ``u_gumbel``
    [S_img, B, N], Gaussian ``randn_remask`` [S_img, B, N]); ``randint_fill`` (integer codes for
    image positions still masked at the end) is a flat list consumed in order. A stream not on
    the tape is drawn from the keys.
    """

    keys: jax.Array | None = None
    tape: Mapping[str, np.ndarray] | None = None

    STREAMS = ("u_text_gumbel", "u_text_random", "u_multinomial", "u_gumbel", "randn_remask", "randint_fill",
               "u_remask_gumbel")

    def _draw(self, stream: str, index, shape, dtype, sample) -> jax.Array:
        """The recorded ``stream`` at ``index``, else ``sample(key, shape[1:], dtype)`` per row
        with the row's key folded with the stream and the index."""
        if self.tape is not None and stream in self.tape:
            recorded = jnp.asarray(self.tape[stream])
            return jax.lax.dynamic_index_in_dim(recorded, index, keepdims=False).reshape(shape).astype(dtype)
        if self.keys is None:
            raise ValueError(f"no PRNG key and no recorded {stream!r} to replay")
        stream_id = self.STREAMS.index(stream)
        return jax.vmap(lambda key: sample(jax.random.fold_in(jax.random.fold_in(key, stream_id), index),
                                           shape[1:], dtype))(self.keys)

    def uniform(self, stream: str, index, shape, dtype=jnp.float32) -> jax.Array:
        """Uniforms in (0, 1) of ``shape`` (leading axis = batch) for step/image-step ``index``."""
        def sample(key, shape, dtype):
            return jax.random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
        return self._draw(stream, index, shape, dtype, sample)

    def uniform_columns(self, stream: str, index, shape, start, size: int, dtype=jnp.float32) -> jax.Array:
        """Columns ``start .. start + size`` of the last axis of the uniforms ``uniform(stream, index,
        shape)`` would give: sliced from a recorded tape (so a replay is exact), or drawn from the
        keys for those columns alone (the key folded with ``start`` too), so a vocabulary-sized draw
        is never held whole."""
        if self.tape is not None and stream in self.tape:
            full = self._draw(stream, index, shape, dtype, None)
            return jax.lax.dynamic_slice_in_dim(full, start, size, axis=-1)

        def sample(key, shape, dtype):
            return jax.random.uniform(jax.random.fold_in(key, start), shape[:-1] + (size,), dtype,
                                      minval=jnp.finfo(dtype).tiny, maxval=1.0)
        return self._draw(stream, index, shape, dtype, sample)

    def normal(self, stream: str, index, shape, dtype=jnp.float32) -> jax.Array:
        """Standard normal draws of ``shape`` (leading axis = batch) for step/image-step ``index``."""
        return self._draw(stream, index, shape, dtype, jax.random.normal)

    def integers(self, stream: str, shape, maxval: int) -> jax.Array:
        """Uniform integers in [0, maxval) of ``shape`` (leading axis = batch), drawn once per run
        from the keys. (A recorded tape of this stream is consumed by the caller in order.)"""
        if self.keys is None:
            raise ValueError(f"no PRNG key to draw {stream!r}")
        stream_id = self.STREAMS.index(stream)
        return jax.vmap(lambda key: jax.random.randint(jax.random.fold_in(key, stream_id), shape[1:], 0, maxval))(
            self.keys)


def as_randomness(seed=None, batch: int = 1, tape: Mapping[str, np.ndarray] | None = None) -> Randomness:
    """Per-row keys from an int seed (split into ``batch`` keys), a single PRNG key (split), or an
    array of ``batch`` keys (used as given); plus an optional tape to replay."""
    keys = None
    if isinstance(seed, (int, np.integer)):
        keys = jax.random.split(jax.random.key(int(seed)), batch)
    elif seed is not None:
        seed = jnp.asarray(seed) if not isinstance(seed, jax.Array) else seed
        if not jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
            seed = jax.random.wrap_key_data(seed)
        keys = seed if seed.ndim == 1 else jax.random.split(seed, batch)
        if keys.shape[0] != batch:
            raise ValueError(f"{keys.shape[0]} PRNG keys for a batch of {batch}")
    if tape is not None:
        tape = {k: np.asarray(v) for k, v in tape.items() if k in Randomness.STREAMS}
    return Randomness(keys=keys, tape=tape)


def exact_default() -> bool:
    """float64 sampling arithmetic (bit-parity with the reference) except on TPU, where float64
    is emulated and slow."""
    return jax.default_backend() != "tpu"

"""MMaDA-Parallel-A's joint sampler (``generate_ti2ti``): thinking-aware image editing, the masked
reasoning text and the masked output image denoised together in one ``lax.scan``.

The sequence is the layout of :mod:`mmada_jax.prompting_a`: ``[cond input | <boa> <boi> grid
<eoi> MASK*T <eoa>]``, the output grid being ``grid_h`` rows of ``grid_w`` MASK tokens and a
NEWLINE. Each of the ``S`` text steps runs one conditional forward (no attention mask) and:

* text (no guidance): ``x0 = argmax(l + text_temperature * Gumbel)`` over the FULL vocabulary
  (as the reference; ``restrict_text_to_text_ids`` limits it to text ids), confidence = the
  un-noised softmax probability of ``x0``; the ``k_s`` most confident masked positions receive
  ``x0``, ``k_s = rem - int(M (1 - (s+1)/S))`` (``M`` masked text tokens at the start);
* image, at the steps ``round(linspace(S//4, S-1, timesteps))``, from the SAME conditional logits
  (taken before the text update): two unconditional rows are made from the CURRENT sequence (after
  the text update) by overwriting its prefix with the uncond-text / uncond-image prefixes, and
  ``guided = cond + cfg_scale (cond - uncond_text) + cfg_img (cond - uncond_img)`` over the
  codebook columns drives a MaskGIT update: a categorical draw (argmax at temperature 0), known
  codes kept, and the ``mask_len = clamp(floor(N cos(pi/2 (s+1)/S)), 1, #unknown - 1)`` lowest of
  ``log(p + 1e-10) + temperature (1 - (s+1)/S) * z`` (``z`` Gaussian) re-masked.

After the loop image positions still MASK (always exactly one with the reference schedule, since
``mask_len >= 1``) get a uniform random code (``final_fill='random'``, the reference) or the
last step's draw at that position (``final_fill='sampled'``, which avoids a random token in the
output image). Spec: ``shared/spec/mmada_a.md`` §4.2; golden: ``shared/golden/samplers_a``.

Batches: :func:`generate_from_prompt` takes several prompts whose instructions (or input-image
grids) differ in length. Rows are left-padded; the pads are hard-masked out of attention and the
RoPE positions shifted, and each row's unconditional prefixes are written at its own offset (as
full-length overlays), so row b computes what it computes alone with ``keys[b]``. Unpadded
batches run without any attention mask, as the reference.
"""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from .common import (F32_MAX, as_randomness, categorical_from_uniform, exact_default, first_argmax,
                     image_step_indices, left_padding, mask_ratio_schedule, top_k_mask, unmask_by_confidence)
from .runner import SamplerOutput, run_scan


@dataclasses.dataclass(frozen=True)
class _Static:
    text_start: int
    text_end: int
    num_image_tokens: int
    cfg_scale: float
    cfg_img: float
    temperature: float
    text_temperature: float
    remasking: str
    restrict_text: bool
    offset: int
    codebook_size: int
    mask_id: int
    exact: bool
    trajectory: bool

    @property
    def run_uncond(self) -> bool:
        return self.cfg_scale > 0 or self.cfg_img > 0


def _gumbel(u):
    """-A's text Gumbel noise: -log(-log(u + 1e-10) + 1e-10)."""
    return -jnp.log(-jnp.log(u + 1e-10) + 1e-10)


def _step(model, carry, xs, consts, rnd, st: _Static):
    x, gumbel_index, j, last_sampled = carry
    s, k, is_image_step, cap, temp = xs
    b = x.shape[0]
    n, kk, off = st.num_image_tokens, st.codebook_size, st.offset
    pos = consts["image_positions"]
    cols = (off, off + kk)
    mask = consts.get("attention_mask")            # present only when rows are left-padded
    position_ids = consts.get("position_ids")
    hidden, _ = model.encode(x, mask, mask_mode="hard", position_ids=position_ids)

    # text: no guidance, full vocabulary
    text_logits = model.head(hidden, positions=jnp.arange(st.text_start, st.text_end)).astype(jnp.float32)
    region = x[:, st.text_start:st.text_end]
    any_mask = jnp.any(region == st.mask_id)
    if st.restrict_text:   # option: text ids only (the reference lets image and mask ids win)
        col = jnp.arange(text_logits.shape[-1])
        text_logits = jnp.where((col < st.offset) & (col != st.mask_id), text_logits, -jnp.inf)
    region = unmask_by_confidence(text_logits, region, k, mask_id=st.mask_id, temperature=st.text_temperature,
                                  remasking=st.remasking, rnd=rnd, index=s, exact=st.exact, gumbel=_gumbel,
                                  gumbel_index=gumbel_index, gumbel_dtype=jnp.float32)
    x = x.at[:, st.text_start:st.text_end].set(region)
    if st.text_temperature > 0:
        gumbel_index = gumbel_index + any_mask.astype(jnp.int32)

    def update_image(ops):
        x, j, _ = ops
        cond = model.head(hidden, positions=pos, vocab_range=cols).astype(jnp.float32)
        current = x[:, pos]
        unknown = current == st.mask_id
        prev = jnp.clip(current - off, 0, kk - 1)
        if st.run_uncond:
            # the current sequence with each prefix written over its start (per-row overlays)
            rows = jnp.concatenate([jnp.where(consts["uncon_text_on"], consts["uncon_text"], x),
                                    jnp.where(consts["uncon_image_on"], consts["uncon_image"], x)], axis=0)
            twice = lambda a: None if a is None else jnp.concatenate([a, a], axis=0)
            uncond, _ = model.encode(rows, twice(mask), mask_mode="hard", position_ids=twice(position_ids))
            uncond = model.head(uncond, positions=pos, vocab_range=cols).astype(jnp.float32)
            uncond_text, uncond_img = uncond[:b], uncond[b:]
        else:
            uncond_text = uncond_img = jnp.zeros_like(cond)
        guided = cond
        if st.cfg_scale != 0:
            guided = guided + st.cfg_scale * (cond - uncond_text)
        if st.cfg_img != 0:
            guided = guided + st.cfg_img * (cond - uncond_img)
        probs = jax.nn.softmax(guided, axis=-1)
        if st.temperature == 0:
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
        new = jnp.where(masking, st.mask_id, sampled + off).astype(jnp.int32)
        return x.at[:, pos].set(new), j + 1, sampled

    x, j, last_sampled = jax.lax.cond(is_image_step, update_image, lambda ops: ops, (x, j, last_sampled))
    return (x, gumbel_index, j, last_sampled), (x if st.trajectory else None)


def generate_ti2ti(model, input_ids, *, text_start: int, text_end: int, image_start: int, seq_len: int,
                   newline_every: int, text_steps: int = 100, timesteps: int = 100, temperature: float = 1.0,
                   text_temperature: float = 0.7, cfg_scale: float = 0.0, cfg_img: float = 4.0,
                   uncon_text=None, uncon_image=None, remasking: str = "low_confidence",
                   schedule: str = "cosine", restrict_text_to_text_ids: bool = False,
                   final_fill: str = "random", seed=0, tape=None, exact: bool | None = None,
                   return_trajectory: bool = False) -> SamplerOutput:
    """Jointly generate the reasoning text and the edited image (MMaDA-Parallel-A).

    Args:
      input_ids: the full sequence(s) [L] or [B, L] (``TI2TIPrompt.full_input_ids``); every row
        shares the layout.
      text_start, text_end, image_start, seq_len, newline_every: the layout
        (``TI2TIPrompt.indices``); the image region is ``[image_start, image_start + N + N //
        newline_every)``, its non-NEWLINE positions the N codes.
      text_steps: S (one conditional forward each); timesteps: how many of them update the image.
      temperature: image sampling temperature (0: argmax); it scales the remasking noise, it
        never divides the logits. text_temperature: Gumbel scale of the text argmax (0: greedy).
      cfg_scale, cfg_img: text- and image-condition guidance of the image; the unconditional rows
        (two extra forwards per image step) run when either is > 0.
      uncon_text, uncon_image: the prefixes [Lt] / [Li] (or one per row) written over the start of
        the current sequence to make the unconditional rows (None: no overwrite).
      remasking: ``low_confidence`` or ``random`` (text); schedule: image mask-ratio schedule.
      restrict_text_to_text_ids: argmax the text over text ids only (not image ids, not MASK).
      final_fill: ``random`` (reference) or ``sampled`` for the image positions still masked.
      seed: int, PRNG key or one key per row; tape: recorded noise to replay (``u_text_gumbel``
        [draws, B, T, V], ``u_multinomial`` [S_img, B*N], ``randn_remask`` [S_img, B, N],
        ``randint_fill`` [#left masked]); exact: float64 sampling arithmetic (default: not on TPU).
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
    return _generate(model, x, _prefix_overlays(prefixes, np.zeros(b, np.int32), length), None, text_start=text_start, text_end=text_end, image_start=image_start,
                     seq_len=seq_len, newline_every=newline_every, text_steps=text_steps, timesteps=timesteps,
                     temperature=temperature, text_temperature=text_temperature, cfg_scale=cfg_scale,
                     cfg_img=cfg_img, remasking=remasking, schedule=schedule,
                     restrict_text_to_text_ids=restrict_text_to_text_ids, final_fill=final_fill, seed=seed,
                     tape=tape, exact=exact, return_trajectory=return_trajectory)


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


def _generate(model, x, overlays, pads, *, text_start, text_end, image_start, seq_len, newline_every, text_steps,
              timesteps, temperature, text_temperature, cfg_scale, cfg_img, remasking, schedule,
              restrict_text_to_text_ids, final_fill, seed, tape, exact, return_trajectory) -> SamplerOutput:
    """:func:`generate_ti2ti` on rows ``x`` [B, L] sharing one layout, the unconditional rows given
    as overlays (``uncon_text`` [B, L] written where ``uncon_text_on``, same for ``uncon_image``),
    ``pads`` [B] left-padding lengths (None: no padding, no attention mask)."""
    b, length = x.shape
    t = model.config.tokens
    mask, newline, off, kk = t.mask_id, t["newline"], t.image_offset, t.codebook_size
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    if final_fill not in ("random", "sampled"):
        raise ValueError(f"final_fill must be 'random' or 'sampled', got {final_fill!r}")
    if not 0 <= text_start < text_end <= length:
        raise ValueError(f"text region [{text_start}, {text_end}) outside a sequence of {length}")
    image_end = image_start + seq_len + seq_len // newline_every
    if image_end > length:
        raise ValueError(f"image region [{image_start}, {image_end}) outside a sequence of {length}")
    positions = image_start + np.flatnonzero(x[0, image_start:image_end] != newline)
    if len(positions) != seq_len:
        raise ValueError(f"expected {seq_len} image positions in [{image_start}, {image_end}), got {len(positions)}")
    if length > model.config.max_sequence_length:
        raise ValueError(f"sequence of {length} tokens exceeds max_sequence_length {model.config.max_sequence_length}")

    consts = dict(overlays, image_positions=positions.astype(np.int32))
    if pads is not None and np.any(pads):
        consts.update(left_padding(pads, length))

    # text schedule: k_s = rem - int(M (1 - (s+1)/S)), per row
    k = np.zeros((text_steps, b), np.int32)
    for row in range(b):
        total = int((x[row, text_start:text_end] == mask).sum())
        rem = total
        for s in range(text_steps):
            take = max(0, rem - int(total * (1 - (s + 1) / text_steps)))
            k[s, row] = take
            rem -= take
    is_image = np.isin(np.arange(text_steps), image_step_indices(text_steps, timesteps))
    caps = np.floor(np.float32(seq_len) * mask_ratio_schedule(text_steps, schedule)).astype(np.int32)
    temps = np.asarray([temperature * (1.0 - (s + 1) / text_steps) for s in range(text_steps)], np.float32)

    exact = exact_default() if exact is None else exact
    static = _Static(text_start, text_end, seq_len, float(cfg_scale), float(cfg_img), float(temperature),
                     float(text_temperature), remasking, restrict_text_to_text_ids, off, kk, mask, exact,
                     return_trajectory)
    rnd = as_randomness(seed, b, tape)
    xs = (np.arange(text_steps, dtype=np.int32), k, is_image, caps, temps)
    init = (x, np.int32(0), np.int32(0), np.zeros((b, seq_len), np.int32))
    (final, _, _, last_sampled), traj = run_scan(model, _step, static, init, xs, consts, rnd, exact)
    final = np.array(final)

    # image codes; positions still masked get a fill code (position order, row-major)
    image = final[:, positions]
    left = image == mask
    codes = np.clip(image - off, 0, kk - 1).astype(np.int32)
    if left.any():
        if final_fill == "sampled":
            codes[left] = np.asarray(last_sampled)[left]
            final[:, positions] = np.where(left, codes + off, image)
        elif rnd.tape is not None and "randint_fill" in rnd.tape:
            recorded = np.asarray(rnd.tape["randint_fill"]).reshape(-1)
            if recorded.size < left.sum():
                raise ValueError(f"randint_fill holds {recorded.size} codes, {int(left.sum())} needed")
            codes[left] = recorded[:left.sum()]
        else:
            draws = np.asarray(rnd.integers("randint_fill", (b, seq_len), kk))
            codes[left] = draws[left]
    return SamplerOutput(ids=final, image_codes=codes, text_ids=final[:, text_start:text_end],
                         trajectory=None if traj is None else np.asarray(traj))


# generate_from_prompt's defaults are generate_ti2ti's
_DEFAULTS = {name: p.default for name, p in inspect.signature(generate_ti2ti).parameters.items()
             if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and name not in ("uncon_text", "uncon_image")}


def generate_from_prompt(model, prompts, **settings) -> SamplerOutput:
    """:func:`generate_ti2ti` on one :class:`~mmada_jax.prompting_a.TI2TIPrompt` or a list of them
    (layout and unconditional prefixes taken from each). The prompts of a batch must share the
    answer (output grid, text budget); their instructions and input images may differ in length:
    rows are left-padded (see the module docstring). The returned ``ids`` (and trajectory) are
    the padded rows; ``pads`` [B] says how many leading pad tokens each has."""
    from ..prompting_a import TI2TIPrompt
    prompts = [prompts] if isinstance(prompts, TI2TIPrompt) else list(prompts)
    if not prompts:
        raise ValueError("no prompts")
    answer = lambda p: (len(p.full_input_ids) - p.indices.code_start, p.indices.grid_h, p.indices.grid_w,
                        p.indices.text_end - p.indices.text_start)
    for p in prompts[1:]:
        if answer(p) != answer(prompts[0]):
            raise ValueError(f"the prompts of a batch must share the output grid and text budget; got "
                             f"(answer length, grid_h, grid_w, T) {answer(prompts[0])} and {answer(p)}")
    for name in ("uncon_text", "uncon_image"):
        if name in settings:
            raise ValueError(f"{name} comes from the prompts here; call generate_ti2ti to give your own")
    length = max(len(p.full_input_ids) for p in prompts)
    pads = np.asarray([length - len(p.full_input_ids) for p in prompts], np.int32)
    pad_id = model.config.tokens.pad_id
    x = np.full((len(prompts), length), pad_id, np.int32)
    for row, (p, pad) in enumerate(zip(prompts, pads)):
        x[row, pad:] = p.full_input_ids
    overlays = _prefix_overlays({"uncon_text": [p.uncon_input_text for p in prompts],
                                 "uncon_image": [p.uncon_input_image for p in prompts]}, pads, length)
    i = prompts[int(np.argmin(pads))].indices     # a row without padding: its indices are the batch's
    settings = {**_DEFAULTS, **settings}
    out = _generate(model, x, overlays, pads, text_start=i.text_start, text_end=i.text_end, image_start=i.image_start,
                    seq_len=i.seq_len, newline_every=i.newline_every, **settings)
    return dataclasses.replace(out, pads=pads)

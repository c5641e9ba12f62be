"""Base MMaDA / LLaDA text generation (``generate.py`` / ``mmu_generate``): block semi-autoregressive
unmasking, as ONE jitted ``lax.scan``.

The generated region (after the prompt) is split into blocks decoded left to right; within a
block, each step predicts every masked position and writes the most confident ``k`` of them,
``k`` spreading the block's masks over its steps (``num_transfer_tokens``). Attention is full and
bidirectional throughout. Classifier-free guidance runs cond and uncond (prompt positions set to
MASK) as one 2B forward: ``un + (cfg + 1) * (cond - un)``. Temperature adds Gumbel noise to the
argmax (not to the confidence); remasking ``low_confidence`` ranks by softmax probability
(float64 as the reference), ``random`` by uniform noise. Logits are computed only for the current
block, a chunk of the vocabulary at a time (:mod:`~mmada_jax.sampling.vocab_chunks`). MMU (image
understanding) is the same sampler on an MMU prompt.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..sampling.common import (SamplerOutput, Static, as_randomness, commit_text, exact_default, num_transfer_tokens,
                               on_masked, text_decision)
from ..sampling.runner import run_scan
from ..settings import resolve, setting


@dataclasses.dataclass(frozen=True)
class TextSettings:
    """LLaDA text generation (defaults: one block of 128 tokens in 128 steps, greedy)."""

    gen_length: int = setting(128, "tokens to generate", aliases=["--gen_length"], minimum=1)
    block_length: int | None = setting(None, "semi-autoregressive block length (default: gen_length, one "
                                             "block)", aliases=["--block_length"], minimum=1)
    steps: int | None = setting(None, "denoising steps, a multiple of the number of blocks (default: "
                                      "gen_length)", minimum=1)
    temperature: float = setting(0.0, "Gumbel noise scale of the argmax (0: greedy)")
    cfg: float = setting(0.0, "classifier-free guidance un + (cfg + 1)*(cond - un)", aliases=["--cfg_scale"])
    remasking: str = setting("low_confidence", "which masked slots are written each step",
                             choices=["low_confidence", "random"])

    def resolved(self) -> "TextSettings":
        """block_length and steps filled in from gen_length."""
        return dataclasses.replace(self, block_length=self.block_length or self.gen_length,
                                   steps=self.steps or self.gen_length)


@dataclasses.dataclass(frozen=True)
class TextLayout:
    """``prompt_len`` prompt tokens, then ``gen_length`` generated ones in blocks of ``block_length``."""

    prompt_len: int
    gen_length: int

    num_image_tokens = 0

    @property
    def total(self) -> int:
        return self.prompt_len + self.gen_length

    # the response's positions, as the joint layouts name them (RL estimators read these)
    def text_positions(self) -> np.ndarray:
        return np.arange(self.prompt_len, self.total, dtype=np.int32)

    generated_text_positions = text_positions

    def image_positions(self) -> np.ndarray:
        return np.zeros(0, np.int32)


def _step(model, x, xs, consts, rnd, st: Static):
    s, k = xs
    b = x.shape[0]
    cfg, t = st.settings, st.tokens
    steps_per_block = cfg.steps // (cfg.gen_length // cfg.block_length)
    start = st.layout.prompt_len + (s // steps_per_block) * cfg.block_length
    pos = start + jnp.arange(cfg.block_length, dtype=jnp.int32)
    x_block = jax.lax.dynamic_slice_in_dim(x, start, cfg.block_length, axis=1)
    if cfg.cfg > 0:
        prompt = jnp.arange(x.shape[1]) < st.layout.prompt_len
        rows = jnp.concatenate([x, jnp.where(prompt, t.mask_id, x)], axis=0)
    else:
        rows = x
    hidden, _ = model.encode(rows)
    block_hidden = hidden[:, pos]

    def decide(h, positions):            # the decision of the block positions in h (cond rows, then uncond)
        def chunk_logits(start, size):   # their logits, a chunk of the vocabulary at a time
            logits = model.head_columns(h, start, size).astype(jnp.float32)
            if cfg.cfg > 0:
                cond, uncond = logits[:b], logits[b:]
                return uncond + (cfg.cfg + 1) * (cond - uncond), cond
            return logits, logits
        return text_decision(chunk_logits, model.config.vocab_size, x_block.shape, temperature=cfg.temperature,
                             rnd=rnd, index=s, exact=st.exact, positions=positions)

    decision = on_masked(decide, block_hidden, x_block == t.mask_id)     # the head on masked positions only
    x_block = commit_text(x_block, decision.x0, decision.confidence, k, mask_id=t.mask_id,
                          remasking=cfg.remasking, rnd=rnd, index=s)
    x = jax.lax.dynamic_update_slice_in_dim(x, x_block, start, axis=1)
    return x, (x if st.trajectory else None)


def generate_text(model, prompt_ids, *, settings: TextSettings | None = None, seed=0, tape=None,
                  exact: bool | None = None, return_trajectory: bool = False, **overrides) -> SamplerOutput:
    """Generate ``gen_length`` tokens after ``prompt_ids`` [B, P] (equal-length rows).

    ``steps`` must be a multiple of the number of blocks (``gen_length / block_length``). ``seed``
    is an int or a PRNG key; ``tape`` replays recorded uniforms (``u_text_gumbel`` [S, B, bl, V],
    ``u_text_random`` [S, B, bl]). Returns the full sequences [B, P + gen_length] and, with
    ``return_trajectory``, the sequence after every step.
    """
    args = prepare(model, prompt_ids, settings=settings, seed=seed, tape=tape, exact=exact,
                   return_trajectory=return_trajectory, **overrides)
    final, traj = run_scan(model, _step, *args)
    p = args[0].layout.prompt_len
    return SamplerOutput(ids=np.asarray(final), trajectory=None if traj is None else np.asarray(traj),
                         text_ids=np.asarray(final)[:, p:], layout=args[0].layout)


def prepare(model, prompt_ids, *, settings: TextSettings | None = None, seed=0, tape=None, exact: bool | None = None,
            return_trajectory: bool = False, **overrides):
    """The arguments of :func:`~mmada_jax.sampling.runner.run_scan` for one run: (static, initial
    carry, per-step inputs, constants, randomness, exact)."""
    s = resolve(TextSettings, settings, **overrides).resolved()
    gen_length, block_length, steps = s.gen_length, s.block_length, s.steps
    prompt_ids = np.asarray(prompt_ids, np.int32)
    if prompt_ids.ndim != 2:
        raise ValueError(f"prompt_ids must be [B, P], got shape {prompt_ids.shape}")
    mask_id = model.config.tokens.mask_id
    if (prompt_ids == mask_id).any():
        raise ValueError(f"the prompt contains the mask token {mask_id}; only the generated part is masked")
    if gen_length % block_length:
        raise ValueError(f"gen_length {gen_length} is not a multiple of block_length {block_length}")
    blocks = gen_length // block_length
    if steps % blocks:
        raise ValueError(f"steps {steps} must be a multiple of the number of blocks {blocks}")
    exact = exact_default() if exact is None else exact
    b, p = prompt_ids.shape
    x = np.concatenate([prompt_ids, np.full((b, gen_length), mask_id, np.int32)], axis=1)
    spb = steps // blocks
    # each block's masks are spread over its steps (counted at the block's start, which no
    # earlier step can change)
    per_block = (x[:, p:].reshape(b, blocks, block_length) == mask_id).sum(-1)
    k = np.concatenate([num_transfer_tokens(per_block[:, j], spb) for j in range(blocks)], axis=1)
    static = Static(s, TextLayout(p, gen_length), model.config.tokens, exact, return_trajectory)
    xs = (np.arange(steps, dtype=np.int32), k.T.astype(np.int32))
    return static, x, xs, {}, as_randomness(seed, x.shape[0], tape), exact



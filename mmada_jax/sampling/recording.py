"""What RL keeps of a rollout: the sampler's state at a few chosen steps, not the whole trajectory.

Trajectory-level RL (ParaRL, ``pararl.md`` §1.2; TraceRL's estimator) scores the tokens a rollout
decoded at step t given the sequence just before t, and rewards the text and image "at" t. So for
each row and each of its ``s`` chosen step indices (data, [B, s]; a group of rollouts shares them)
the jitted sampler writes, when it passes that step:

* ``before`` [B, s, L]: the whole sequence before the step (the state the policy saw);
* ``after`` [B, s, L]: the sequence after it (tokens decoded at t = masked before, not after;
  the text decoded so far is the text region of ``after``);
* ``image_codes`` [B, s, N]: the image predicted at t: known codes, plus the step's draws at the
  still-masked positions (on steps that update the image) or the argmax of the guided image logits
  (on text-only steps);
* ``text_ids`` [B, s, T]: the text predicted at t (x0): the decoded tokens, and at the positions
  still masked after t the argmax of the logits the text sampler ranks with (guided, no noise);
* ``logp`` [B, s, L]: the sampler's own log-probability of each token decoded at t under the
  CONDITIONAL logits at temperature 1 (text over the sampler's text vocabulary, image over the
  codebook), 0 elsewhere: what the learner recomputes from ``before``, and the gap between the two
  is a metric.

Memory grows with ``s``, not with the number of steps: the buffers live in the scan's carry and a
step writes them only where it is one of the row's chosen steps.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Recording:
    """The recorded steps of a batch of rollouts (numpy arrays; see the module docstring)."""

    steps: np.ndarray
    before: np.ndarray
    after: np.ndarray
    image_codes: np.ndarray
    text_ids: np.ndarray
    logp: np.ndarray

    def decoded(self, mask_id: int) -> np.ndarray:
        """[B, s, L] bool: the positions decoded at each recorded step."""
        return (self.before == mask_id) & (self.after != mask_id)


def check_steps(steps, batch: int, num_steps: int) -> np.ndarray:
    """``steps`` as int32 [B, s], or a clear error: distinct indices in [0, num_steps) per row."""
    steps = np.asarray(steps)
    if steps.ndim != 2 or steps.shape[0] != batch or steps.shape[1] == 0:
        raise ValueError(f"record_steps must be [B={batch}, s>=1] step indices, got shape {steps.shape}")
    if not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"record_steps must be integers, got {steps.dtype}")
    if steps.min() < 0 or steps.max() >= num_steps:
        raise ValueError(f"record_steps must lie in [0, {num_steps}), got {steps.min()}..{steps.max()}")
    if any(len(set(row.tolist())) != len(row) for row in steps):
        raise ValueError("record_steps repeats a step index within a row")
    return steps.astype(np.int32)


def empty(batch: int, s: int, length: int, num_image_tokens: int, text_len: int) -> dict[str, np.ndarray]:
    """The carry's recording buffers before the first step."""
    return {"before": np.zeros((batch, s, length), np.int32), "after": np.zeros((batch, s, length), np.int32),
            "image_codes": np.zeros((batch, s, num_image_tokens), np.int32),
            "text_ids": np.zeros((batch, s, text_len), np.int32),
            "logp": np.zeros((batch, s, length), np.float32)}


def write(buffers: dict, hit: jax.Array, **rows: jax.Array) -> dict:
    """Write this step's per-row arrays (``before``, ``after`` [B, L], ``image_codes`` [B, N],
    ``text_ids`` [B, T], ``logp`` [B, L]) into the slots where ``hit`` [B, s] is true."""
    return {name: jnp.where(hit[:, :, None], rows[name][:, None, :].astype(buf.dtype), buf)
            for name, buf in buffers.items()}


def token_logp(logits: jax.Array, ids: jax.Array) -> jax.Array:
    """log softmax(logits)[ids] in float32: logits [..., V], ids [...]."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, ids[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def as_recording(steps: np.ndarray, buffers: dict) -> Recording:
    return Recording(steps=np.asarray(steps), **{k: np.asarray(v) for k, v in buffers.items()})

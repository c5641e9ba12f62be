"""Which denoising steps of a rollout are optimised.

ParaRL (``pararl.md`` §1.4) draws s distinct step indices uniformly per group of G rollouts of one
prompt, shares them across the group (so a step's rewards compare like with like) and redraws
them for every rollout batch; ``final`` (output-level RL, the paper's Table 4 ablation) keeps only
the last step. The indices are data to the sampler, so one compiled program serves every draw.
"""

from __future__ import annotations

import numpy as np

MODES = ("sampled", "final")


def draw_steps(rng: np.random.Generator, num_groups: int, group_size: int, s: int, num_steps: int,
               mode: str = "sampled") -> np.ndarray:
    """[num_groups * group_size, s'] int32 step indices, rows grouped (group g = rows g*G..g*G+G-1),
    sorted within a row; s' = s for ``sampled`` and 1 for ``final``."""
    if mode not in MODES:
        raise ValueError(f"steps mode {mode!r}; known: {MODES}")
    if mode == "final":
        return np.full((num_groups * group_size, 1), num_steps - 1, np.int32)
    if not 1 <= s <= num_steps:
        raise ValueError(f"cannot draw s={s} distinct steps out of {num_steps}")
    per_group = np.stack([np.sort(rng.choice(num_steps, size=s, replace=False)) for _ in range(num_groups)])
    return np.repeat(per_group, group_size, axis=0).astype(np.int32)

"""Assembling token sequences from segments, the same way in numpy (prompt builders) and in jax
(training builders inside the jitted step), so each model family writes its layout once.

A segment is a single id (an ``int``, broadcast over the batch) or an id array ``[..., w]``;
:func:`join` concatenates segments along the last axis, broadcasting them to one batch shape.
"""

from __future__ import annotations

import numpy as np

IGNORE = -100   # the label of a position that is not a target (torch's ignore_index)


def join(*segments, xp=np):
    """The segments concatenated along the last axis, as int32 (``xp``: numpy or jax.numpy)."""
    lead = np.broadcast_shapes(*[np.shape(s)[:-1] for s in segments if not isinstance(s, (int, np.integer))])

    def piece(s):
        if isinstance(s, (int, np.integer)):
            return xp.full(lead + (1,), int(s), xp.int32)
        s = xp.asarray(s).astype(xp.int32)
        return xp.broadcast_to(s, lead + s.shape[-1:])

    return xp.concatenate([piece(s) for s in segments], axis=-1)


def targets(noised, clean, mask_id: int, xp=np):
    """Training labels: the clean id where the noised sequence holds MASK, else IGNORE (clean
    sequences never contain MASK, so the masked positions are exactly the targets)."""
    return xp.where(noised == mask_id, clean, IGNORE).astype(xp.int32)


def pad_rows(rows, value: int, side: str = "right") -> np.ndarray:
    """Stack 1-D id arrays of different lengths into [B, max_len], padding with ``value``."""
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, np.int32)
    for i, r in enumerate(rows):
        if side == "right":
            out[i, : len(r)] = r
        else:
            out[i, width - len(r):] = r
    return out

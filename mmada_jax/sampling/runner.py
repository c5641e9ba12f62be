"""Running a sampler: one jitted ``lax.scan`` over denoising steps, model weights as arguments.

A sampler is a module-level step function ``step(model, carry, x, consts, rnd, static) ->
(carry, y)`` plus a frozen ``static`` settings object. :func:`run_scan` splits the NNX model into
graph and state and jits one function of (state, initial carry, per-step inputs, constants,
randomness) whose body is a ``lax.scan`` of the step: one dispatch per trajectory, and a compile
time that does not grow with the number of steps. With ``exact`` the trace runs under
``jax.enable_x64`` so that the reference's float64 steps (text-confidence softmax, inverse-CDF
categorical draws) are float64 here too; every other array is explicitly 32-bit.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from .common import Randomness


@dataclasses.dataclass
class SamplerOutput:
    """``ids``: final sequences [B, L]; ``trajectory``: the sequences after every step [S, B, L]
    (when asked); ``image_codes`` [B, N] and ``text_ids`` [B, T] for samplers that produce them;
    ``pads`` [B]: leading pad tokens of each row, for samplers that left-pad."""

    ids: np.ndarray
    trajectory: np.ndarray | None = None
    image_codes: np.ndarray | None = None
    text_ids: np.ndarray | None = None
    pads: np.ndarray | None = None


def _program(graphdef, step_fn: Callable, static) -> Callable:
    def run(state, init_carry, steps_xs, consts, keys, tape):
        model = nnx.merge(graphdef, state)
        rnd = Randomness(keys=keys, tape=tape)
        return jax.lax.scan(lambda c, x: step_fn(model, c, x, consts, rnd, static), init_carry, steps_xs)
    return run


_COMPILED: dict[Any, Any] = {}
_ON_COMPILE: contextvars.ContextVar[Callable[[float], None] | None] = contextvars.ContextVar("on_compile", default=None)


@contextlib.contextmanager
def report_compiles(callback: Callable[[float], None]):
    """Within the block, ``callback(seconds)`` is called whenever a sampler program is compiled."""
    token = _ON_COMPILE.set(callback)
    try:
        yield
    finally:
        _ON_COMPILE.reset(token)


def _signature(tree):
    def one(a):
        if isinstance(a, jax.Array):
            return (a.shape, str(a.dtype), a.sharding)
        a = np.asarray(a)
        return (a.shape, a.dtype.str)
    return jax.tree.structure(tree), tuple(one(a) for a in jax.tree.leaves(tree))


def _arguments(model, init_carry, steps_xs, consts, randomness: Randomness):
    """(graphdef, the jitted program's arguments) of one sampler run."""
    graphdef, state = nnx.split(model)
    tape = dict(randomness.tape) if randomness.tape is not None else None
    return graphdef, (state, init_carry, steps_xs, consts, randomness.keys, tape)


def run_scan(model, step_fn: Callable, static, init_carry, steps_xs, consts, randomness: Randomness,
             exact: bool):
    """(final carry, stacked per-step outputs), as numpy arrays. Programs are compiled ahead of
    time once per (step function, settings, input shapes) and reused."""
    graphdef, args = _arguments(model, init_carry, steps_xs, consts, randomness)
    with jax.enable_x64(exact):
        key = (graphdef, step_fn, static, exact, _signature(args))
        if key not in _COMPILED:
            start = time.perf_counter()
            _COMPILED[key] = jax.jit(_program(graphdef, step_fn, static)).lower(*args).compile()
            callback = _ON_COMPILE.get()
            if callback is not None:
                callback(time.perf_counter() - start)
        return jax.device_get(_COMPILED[key](*args))


def lower_scan(model, step_fn: Callable, static, init_carry, steps_xs, consts, randomness: Randomness,
               exact: bool):
    """The lowered program of a sampler run (for compile-size checks and AOT compilation)."""
    graphdef, args = _arguments(model, init_carry, steps_xs, consts, randomness)
    with jax.enable_x64(exact):
        return jax.jit(_program(graphdef, step_fn, static)).lower(*args)

"""Running a sampler: one jitted ``lax.scan`` over denoising steps, model weights as arguments.

A sampler is a module-level step function ``step(model, carry, x, consts, rnd, static) ->
(carry, y)`` plus a frozen ``static`` settings object. :func:`run_scan` splits the NNX model into
graph and state and jits one function of (state, initial carry, per-step inputs, constants,
randomness) whose body is a ``lax.scan`` of the step: one dispatch per trajectory, and a compile
time that does not grow with the number of steps. With ``exact`` the trace runs under
``jax.enable_x64`` so that the reference's float64 steps (text-confidence softmax, inverse-CDF
categorical draws) are float64 here too; every other array is explicitly 32-bit.

Sharding. The mesh is the model's: that of its parameters' ``NamedSharding`` (the first one
whose mesh has more than one device; :func:`model_mesh`). A model without one (single device,
unsharded) runs exactly as before: numpy inputs, no mesh in context. A model on a mesh is
compiled and run under ``jax.set_mesh(mesh)`` (so the model's :func:`~mmada_jax.sharding.constrain`
calls apply) and every input is placed on that mesh before the call:

* the parameters keep their logical-rule shardings (an off-mesh state leaf is replicated);
* per-row arrays are split along their batch axis by the ``batch`` logical rule, i.e.
  :func:`~mmada_jax.sharding.logical_to_spec` of ``('batch',)`` at that axis, the spec the model's
  own activation constraints use: ``P(('data', 'fsdp'))`` when the batch size B is divisible by
  the product of those mesh axes; otherwise only the axes that divide it, in rule order (B = 3 on
  ``data=8``: replicated). Nothing fails for an awkward B;
* which arrays are per-row, and along which axis: the PRNG ``keys`` [B] (axis 0); each leaf of
  ``init_carry`` and of ``consts`` whose LEADING dimension is B (axis 0), unless the caller says
  otherwise with ``carry_batch_axes`` / ``batch_axes`` (an explicit axis, or ``None`` for "not
  per-row"). Scalars are never per-row;
* everything else (``steps_xs``, the recorded ``tape``, per-row-free constants, scalars) is
  replicated.

B is ``batch_size`` when given, else the number of PRNG keys, else the leading dimension of the
first array of ``init_carry``. Splitting the batch does not change a row's arithmetic (each row
is computed whole on its devices), so it gives the ids of a replicated run; splitting the weights
(``fsdp``/``tensor``) reorders the sums of the split contractions, which the tests check leaves
the tiny model's ids bit-identical to a single-device run. Outputs come back to the host as numpy
(:func:`to_host`). Compiled programs are cached per (step function, settings, mesh, input
shapes, dtypes and shardings), so sharded and unsharded runs of the same shapes do not share a
program; :func:`compile_scan` returns the cached program itself (e.g. to inspect its
``input_shardings``).

Multi-process meshes (``jax.distributed``; the mesh spans several processes' devices): every
process calls the sampler with the same inputs; each is placed as a global array whose slices
each process fills from its own copy (:func:`_put_global`: numpy values, and local jax arrays such
as the PRNG keys, which ``jax.device_put`` refuses there), and the outputs, split over processes,
are gathered so that every process gets the whole result (:func:`to_host`, a collective).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..sharding import logical_to_spec
from .common import Randomness


def _program(graphdef, step_fn: Callable, static) -> Callable:
    extra = getattr(static, "scan_state", None)     # built here, carried, not returned (the step cache)

    def run(state, init_carry, steps_xs, consts, keys, tape):
        model = nnx.merge(graphdef, state)
        rnd = Randomness(keys=keys, tape=tape)
        if extra is not None:
            init_carry = tuple(init_carry) + (extra(model, np.shape(jax.tree.leaves(init_carry)[0])[0]),)
        carry, ys = jax.lax.scan(lambda c, x: step_fn(model, c, x, consts, rnd, static), init_carry, steps_xs)
        return (carry[:-1] if extra is not None else carry), ys
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


# ----------------------------------------------------------------------------- placement

def model_mesh(model) -> Mesh | None:
    """The mesh the model's parameters live on: the first ``NamedSharding`` mesh of more than one
    device among its state's arrays; None for a single-device or unsharded model."""
    for leaf in jax.tree.leaves(nnx.state(model)):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
            return sharding.mesh
    return None


def _batch_size(init_carry, randomness: Randomness, batch_size: int | None) -> int | None:
    if batch_size is not None:
        return int(batch_size)
    if randomness.keys is not None:
        return int(randomness.keys.shape[0])
    for leaf in jax.tree.leaves(init_carry):
        if np.ndim(leaf) >= 1:
            return int(np.shape(leaf)[0])
    return None


_DEFAULT = object()     # no batch axes declared: axis 0 where the leading dimension is B


def _default_axis(leaf, b: int | None) -> int | None:
    shape = np.shape(leaf)
    return 0 if b is not None and len(shape) >= 1 and shape[0] == b else None


def _flat_axes(axes, n: int, what: str) -> list:
    """Leaves of an explicit batch-axes pytree (ints and Nones), one per array leaf."""
    flat = jax.tree.leaves(axes, is_leaf=lambda v: v is None)
    if len(flat) == 1 and n != 1:      # one axis for every leaf
        flat = flat * n
    if len(flat) != n:
        raise ValueError(f"{what}: {len(flat)} batch axes for {n} arrays")
    return flat


class _Placer:
    """Puts sampler inputs on ``mesh``: batch axis by the ``batch`` rule, the rest replicated.
    Without a mesh it only checks the declared batch axes and leaves the inputs as they are."""

    def __init__(self, mesh: Mesh | None, b: int | None):
        self.mesh, self.b = mesh, b

    def sharding(self, shape, axis: int | None) -> NamedSharding | None:
        if axis is not None and self.b is not None:
            if not -len(shape) <= axis < len(shape) or shape[axis] != self.b:
                raise ValueError(f"batch axis {axis} of an input of shape {tuple(shape)} is not the "
                                 f"batch (size {self.b})")
        if self.mesh is None:
            return None
        if axis is None or self.b is None:
            return NamedSharding(self.mesh, P())
        names = [None] * len(shape)
        names[axis] = "batch"
        return NamedSharding(self.mesh, logical_to_spec(names, self.mesh, shape))

    def put(self, leaf, axis: int | None):
        sharding = self.sharding(np.shape(leaf), axis)
        if sharding is None:
            return leaf
        if not sharding.is_fully_addressable:       # a mesh over several processes
            return _put_global(leaf, sharding)
        return jax.device_put(leaf if isinstance(leaf, jax.Array) else np.asarray(leaf), sharding)

    def tree(self, tree, axes=_DEFAULT, what: str = ""):
        """Place ``tree``; ``axes``: its batch axes (see :func:`_flat_axes`), default by shape."""
        leaves, treedef = jax.tree.flatten(tree)
        flat = ([_default_axis(x, self.b) for x in leaves] if axes is _DEFAULT
                else _flat_axes(axes, len(leaves), what))
        return jax.tree.unflatten(treedef, [self.put(x, a) for x, a in zip(leaves, flat)])

    def replicate(self, tree):
        return jax.tree.map(lambda x: self.put(x, None), tree)

    def state(self, state):
        """Parameters stay where they are (their rules' shardings); an off-mesh leaf is replicated."""
        def one(a):
            if isinstance(a, jax.Array) and isinstance(a.sharding, NamedSharding) and a.sharding.mesh == self.mesh:
                return a
            return self.put(a, None)
        return state if self.mesh is None else jax.tree.map(one, state)


def _is_key(a) -> bool:
    return isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def _put_global(leaf, sharding: NamedSharding) -> jax.Array:
    """``leaf`` (the same host value in every process, or a local jax array) as a global array
    on a mesh that spans processes: each process fills its own devices' slices
    (``jax.device_put`` refuses a committed local array there, and compares a numpy value
    across processes first, an all-gather per input)."""
    if _is_key(leaf):     # PRNG keys: place their raw data, then wrap it again
        return jax.random.wrap_key_data(_put_global(jax.random.key_data(leaf), sharding),
                                        impl=jax.random.key_impl(leaf))
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)      # already global: a reshard on the same devices
    host = np.asarray(jax.device_get(leaf) if isinstance(leaf, jax.Array) else leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: np.asarray(host[index]))


def to_host(tree):
    """``tree``'s arrays as numpy on this process (``jax.device_get``); an array spread over
    several processes is gathered first (a collective: every process must call this with the
    same tree), one fully replicated over them is read from a local copy."""
    def gather(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return a
        if _is_key(a):
            return jax.random.wrap_key_data(gather(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        from jax.experimental import multihost_utils
        return multihost_utils.process_allgather(a, tiled=True)
    return jax.device_get(jax.tree.map(gather, tree))


class _AbstractPlacer(_Placer):
    """As :class:`_Placer`, but every input becomes a ShapeDtypeStruct with the sharding it would
    be placed with: nothing is put on a device (AOT memory plans)."""

    def put(self, leaf, axis: int | None):
        sharding = self.sharding(np.shape(leaf), axis)
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        return jax.ShapeDtypeStruct(np.shape(leaf), dtype, sharding=sharding)


def _inputs(place: _Placer, init_carry, steps_xs, consts, randomness: Randomness, batch_axes, carry_batch_axes):
    """The program's non-state arguments (initial carry, per-step inputs, constants, keys, tape),
    placed by ``place``."""
    explicit = dict(batch_axes or {})
    unknown = set(explicit) - set(consts)
    if unknown:
        raise ValueError(f"batch_axes names constants that are not given: {sorted(unknown)}")
    consts = {name: place.tree(value, explicit.get(name, _DEFAULT), f"batch_axes[{name!r}]")
              for name, value in consts.items()}
    keys = None if randomness.keys is None else place.put(randomness.keys, 0)
    carry_axes = _DEFAULT if carry_batch_axes is None else carry_batch_axes
    tape = dict(randomness.tape) if randomness.tape is not None else None
    return (place.tree(init_carry, carry_axes, "carry_batch_axes"), place.replicate(steps_xs), consts, keys,
            place.replicate(tape))


def _arguments(model, init_carry, steps_xs, consts, randomness: Randomness, *, batch_axes=None,
               carry_batch_axes=None, batch_size=None):
    """(graphdef, mesh or None, the jitted program's arguments) of one sampler run; on a mesh the
    arguments are placed (call under ``enable_x64(exact)`` so float64 inputs stay float64)."""
    graphdef, state = nnx.split(model)
    mesh = model_mesh(model)
    place = _Placer(mesh, _batch_size(init_carry, randomness, batch_size))
    args = (place.state(state),) + _inputs(place, init_carry, steps_xs, consts, randomness, batch_axes,
                                           carry_batch_axes)
    return graphdef, mesh, args


def _context(mesh: Mesh | None, exact: bool):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.enable_x64(exact))
    if mesh is not None:
        stack.enter_context(jax.set_mesh(mesh))
    return stack


def _compiled(graphdef, mesh, step_fn, static, exact, args):
    """The cached compiled program for these arguments (compiled under the mesh when not yet)."""
    key = (graphdef, step_fn, static, exact, mesh, _signature(args))
    if key not in _COMPILED:
        start = time.perf_counter()
        _COMPILED[key] = jax.jit(_program(graphdef, step_fn, static)).lower(*args).compile()
        callback = _ON_COMPILE.get()
        if callback is not None:
            callback(time.perf_counter() - start)
    return _COMPILED[key]


def run_scan(model, step_fn: Callable, static, init_carry, steps_xs, consts, randomness: Randomness,
             exact: bool, *, batch_axes: Mapping[str, Any] | None = None, carry_batch_axes=None,
             batch_size: int | None = None):
    """(final carry, stacked per-step outputs), as numpy arrays. Programs are compiled ahead of
    time once per (step function, settings, mesh, input shapes and shardings) and reused.

    On a sharded model the batch is split over the mesh (see the module docstring).
    ``batch_axes``: per constant name, which axis of that constant is the batch: an int (for all
    its leaves, or a pytree of ints/None mirroring a nested constant), or None for a constant
    that is not per-row; constants not named get the default (axis 0 if the leading dimension
    is B). E.g. ``prefixes`` [G, B, P] and ``image_positions`` [N]:
    ``batch_axes={'prefixes': 1, 'image_positions': None}``. ``carry_batch_axes``: the same for
    ``init_carry``, a pytree of ints/None mirroring it (or one int/None for all its leaves);
    None (the default) means the default rule. ``batch_size``: B, when neither the PRNG keys
    nor the carry's first array tell it.
    """
    with _context(None, exact):
        graphdef, mesh, args = _arguments(model, init_carry, steps_xs, consts, randomness, batch_axes=batch_axes,
                                          carry_batch_axes=carry_batch_axes, batch_size=batch_size)
    with _context(mesh, exact):
        return to_host(_compiled(graphdef, mesh, step_fn, static, exact, args)(*args))


def compile_scan(model, step_fn: Callable, static, init_carry, steps_xs, consts, randomness: Randomness,
                 exact: bool, *, batch_axes: Mapping[str, Any] | None = None, carry_batch_axes=None,
                 batch_size: int | None = None) -> jax.stages.Compiled:
    """The compiled program that :func:`run_scan` runs for these arguments (taken from its cache,
    compiled into it when absent): for AOT compilation and for checks of ``input_shardings``."""
    with _context(None, exact):
        graphdef, mesh, args = _arguments(model, init_carry, steps_xs, consts, randomness, batch_axes=batch_axes,
                                          carry_batch_axes=carry_batch_axes, batch_size=batch_size)
    with _context(mesh, exact):
        return _compiled(graphdef, mesh, step_fn, static, exact, args)


def lower_scan(model, step_fn: Callable, static, init_carry, steps_xs, consts, randomness: Randomness,
               exact: bool, *, batch_axes: Mapping[str, Any] | None = None, carry_batch_axes=None,
               batch_size: int | None = None):
    """The lowered program of a sampler run (for compile-size checks and AOT compilation), its
    arguments placed as :func:`run_scan` places them."""
    with _context(None, exact):
        graphdef, mesh, args = _arguments(model, init_carry, steps_xs, consts, randomness, batch_axes=batch_axes,
                                          carry_batch_axes=carry_batch_axes, batch_size=batch_size)
    with _context(mesh, exact):
        return jax.jit(_program(graphdef, step_fn, static)).lower(*args)


def lower_abstract(graphdef, state, mesh: Mesh, step_fn: Callable, static, init_carry, steps_xs, consts,
                   randomness: Randomness, exact: bool, *, batch_axes: Mapping[str, Any] | None = None,
                   carry_batch_axes=None, batch_size: int | None = None):
    """The lowered program of a sampler run of a model that has no weights (AOT memory plans):
    ``state`` is the model's state as ShapeDtypeStructs carrying their shardings on ``mesh``; the
    other inputs are given as arrays (only their shapes and dtypes are used) and get the shardings
    :func:`run_scan` would place them with (per-row arrays split by the ``batch`` rule, the rest
    replicated). Nothing is put on a device."""
    with _context(None, exact):
        place = _AbstractPlacer(mesh, _batch_size(init_carry, randomness, batch_size))
        args = (state,) + _inputs(place, init_carry, steps_xs, consts, randomness, batch_axes, carry_batch_axes)
    with _context(mesh, exact):
        return jax.jit(_program(graphdef, step_fn, static)).lower(*args)

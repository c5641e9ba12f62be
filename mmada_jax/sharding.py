"""Logical axis names -> mesh axes: the ONE table of sharding rules, and helpers to apply it.

Every parameter carries logical axis names in its ``out_sharding`` metadata (e.g. the stacked
query kernel is ``('layers', 'embed', 'heads')``) and the main activations are constrained with
:func:`constrain`. :data:`LOGICAL_AXIS_RULES` maps each logical name to the mesh axes it is split
over, for meshes with axes ``data``, ``fsdp`` and ``tensor`` (any of them may be absent or size 1).

A mesh axis is used at most once per array; a dimension that the mesh axes do not divide evenly is
left unsplit (so a 576-row toy vocabulary still runs on a 5-way mesh), which :func:`logical_to_spec`
reports through its ``strict`` flag for tests.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axes, in order of preference.
LOGICAL_AXIS_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # parameters
    ("layers", ()),                    # stacked layer axis: never split (scanned over)
    ("vocab", ("tensor",)),            # embedding rows / head columns
    ("embed", ("fsdp",)),              # model width: FSDP (ZeRO-3 style) over the fsdp axis
    ("heads", ("tensor",)),            # query heads x head_dim (flattened)
    ("kv_heads", ("tensor",)),         # key/value heads x head_dim
    ("mlp", ("tensor",)),              # SwiGLU hidden
    ("norm", ()),                      # RMSNorm gains: replicated
    # activations
    ("batch", ("data", "fsdp")),
    ("length", ()),
    ("act_embed", ()),
    ("act_heads", ("tensor",)),
    ("act_mlp", ("tensor",)),
    ("act_vocab", ("tensor",)),
)
_RULES = dict(LOGICAL_AXIS_RULES)


def make_mesh(shape: dict[str, int] | Sequence[int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor). ``shape`` like ``{'fsdp': 2, 'tensor': 4}``.

    Missing axes get size 1; one axis may be -1 (takes the remaining devices). The default puts
    every device on ``fsdp``. Axes are ``Auto`` so the model code needs no explicit shardings.
    """
    devices = list(devices if devices is not None else jax.devices())
    if shape is None:
        shape = {"fsdp": -1}
    if not isinstance(shape, dict):
        shape = dict(zip(MESH_AXES, shape))
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh axes must be among {MESH_AXES}, got {sorted(unknown)}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    if -1 in sizes:
        rest = math.prod(s for s in sizes if s != -1)
        sizes[sizes.index(-1)] = len(devices) // rest
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                         f"have {len(devices)}")
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES,
                axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def parse_mesh(text: str) -> dict[str, int]:
    """'data=2,fsdp=2,tensor=2' -> {'data': 2, 'fsdp': 2, 'tensor': 2}."""
    out = {}
    for part in filter(None, text.split(",")):
        name, _, size = part.partition("=")
        if name.strip() not in MESH_AXES or not size.strip().lstrip("-").isdigit():
            raise ValueError(f"bad mesh spec {text!r}: expected e.g. 'fsdp=4,tensor=2'")
        out[name.strip()] = int(size)
    return out


def logical_to_spec(names: Sequence[str | None], mesh: Mesh, shape: Sequence[int] | None = None,
                    strict: bool = False) -> P:
    """The PartitionSpec for an array with these logical axis names on ``mesh``."""
    used: set[str] = set()
    spec = []
    for i, name in enumerate(names):
        if name is None:
            spec.append(None)
            continue
        if name not in _RULES:
            raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES")
        axes = []
        size = 1
        for axis in _RULES[name]:
            if axis not in mesh.shape or axis in used or mesh.shape[axis] == 1:
                continue
            n = mesh.shape[axis]
            if shape is not None and shape[i] % (size * n):
                if strict:
                    raise ValueError(f"dim {i} ({name}, size {shape[i]}) not divisible by mesh axis "
                                     f"{axis}={n}")
                continue
            axes.append(axis)
            size *= n
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return P(*spec)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Pin an activation's sharding by logical names when running under a mesh (else a no-op)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or all(s == 1 for s in mesh.shape.values()):
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, mesh, x.shape))


def param_names(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    return variable.get_metadata().get("out_sharding")


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """NamedShardings for every variable of an NNX state, from its logical names."""
    def one(v):
        names = param_names(v)
        spec = P() if names is None else logical_to_spec(names, mesh, v.shape)
        return NamedSharding(mesh, spec)
    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Place every parameter of ``model`` on ``mesh`` as the rules say (in place; returns it)."""
    state = nnx.state(model)
    placed = jax.device_put(nnx.to_pure_dict(state), nnx.to_pure_dict(state_shardings(state, mesh)))
    nnx.replace_by_pure_dict(state, placed)
    nnx.update(model, state)
    return model


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [B, ...] input batch: batch over (data, fsdp)."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), mesh))

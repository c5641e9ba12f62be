"""``load_model``: a ready model from a converted checkpoint or straight from a HF directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from .config import ModelConfig, load_config
from .convert import CONFIG_FILE, params_from_hf, restore_params
from .hf_io import CheckpointError
from .model import LLaDAModel, abstract_model
from .sharding import state_shardings


def dtype_name(dtype) -> str | None:
    """'bfloat16' for jnp.bfloat16, 'bf16', np.dtype('bfloat16') or 'bfloat16'; None stays None."""
    if dtype is None:
        return None
    aliases = {"bf16": "bfloat16", "fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16"}
    if isinstance(dtype, str):
        dtype = aliases.get(dtype, dtype)
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        raise ValueError(f"unknown dtype {dtype!r}; use float32 or bfloat16") from None
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unsupported model dtype {name}; use float32 or bfloat16")
    return name


def load_model(path: str | Path, dtype=None, *, mesh: Mesh | None = None, kind: str | None = None,
               **overrides) -> tuple[LLaDAModel, ModelConfig]:
    """Load ``(model, config)`` from a converted checkpoint or a HF checkpoint directory.

    Args:
      path: a directory written by ``convert_torch_weights.py`` (Orbax), or a HF directory
        (safetensors / pytorch_model*.bin, converted in memory).
      dtype: parameter and compute dtype (a jnp dtype or its name); default: as stored.
      mesh: place the parameters on this mesh by the logical-axis rules (restored straight into
        their shards from Orbax).
      kind: for HF directories, override the detected kind (``mmada``, ``llada``, ``dimoo``).
      **overrides: other :class:`ModelConfig` fields (``remat_policy``, ``attention_impl``,
        ``attention_mask_mode``, ``param_dtype`` ...).
    """
    path = Path(path)
    name = dtype_name(dtype)
    if (path / CONFIG_FILE).exists():
        config = load_config(path)
        if not isinstance(config, ModelConfig):
            raise CheckpointError(f"{path} holds a {type(config).__name__}, not a transformer")
        params = None
    elif path.is_dir():
        config, params = params_from_hf(path, kind=kind, dtype=name)
        if not isinstance(config, ModelConfig):
            raise CheckpointError(f"{path} holds a {type(config).__name__}, not a transformer")
        name = name or str(next(iter(params.values())).dtype)
    else:
        raise CheckpointError(f"checkpoint not found: {path}")
    if name:
        overrides.setdefault("param_dtype", name)
        overrides.setdefault("dtype", name)
    config = dataclasses.replace(config, **overrides)

    graphdef, state = nnx.split(abstract_model(config))
    target = nnx.to_pure_dict(state)
    shardings = None
    if mesh is not None:
        shardings = nnx.to_pure_dict(state_shardings(state, mesh))
    if params is None:
        values = restore_params(path, target, shardings=shardings)
    else:
        values = {}
        for (key,), array in params.items():
            want = target[key]
            array = np.asarray(array).astype(want.dtype, copy=False)
            values[key] = jax.device_put(array, shardings[key] if shardings else None)
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state), config


def save_model(model: LLaDAModel, directory: str | Path) -> None:
    """Save a model as a converted checkpoint (Orbax params + config.yaml)."""
    import orbax.checkpoint as ocp
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / "params", params, force=True)
    checkpointer.wait_until_finished()
    model.config.to_yaml(directory / CONFIG_FILE)

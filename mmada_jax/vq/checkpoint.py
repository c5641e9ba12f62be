"""Weights of the image tokenizers: conversion kinds, ``load_vq`` and ``init_vq``.

Two conversion kinds are registered with :mod:`mmada_jax.convert` (so
``convert_torch_weights.py SRC DST --kind magvitv2|amused`` and ``--to-hf`` work, with the same
header checks as the transformer):

* ``magvitv2``: a MAGVIT-v2 directory (``config.json`` + ``pytorch_model.safetensors`` as
  ``showlab/magvitv2``, or any ``*.safetensors`` / ``pytorch_model*.bin``). Detected by
  ``_class_name: MAGVITv2``, by ``encoder``/``decoder``/``quantizer`` sections, or by the
  ``quantize.power_vals`` buffer in the weights. The LFQ buffers are checked, not stored.
* ``amused``: a diffusers ``VQModel`` (``vqvae/config.json`` +
  ``vqvae/diffusion_pytorch_model.safetensors``); detected by ``_class_name: VQModel``.

Our parameter paths mirror the reference module tree, so each map is a renaming: a conv
``kernel`` [kh, kw, in, out] <- ``weight`` [out, in, kh, kw], a GroupNorm ``scale`` <- ``weight``;
everything else keeps its name.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from ..config import CONFIG_FILE, ConfigError, load_config, register_config_section
from ..convert import Kind, ParamMap, params_from_hf, register_kind, restore_params
from ..hf_io import CheckpointError, _read_safetensors_header
from .amused import AmusedVQ
from .base import AmusedTokenizer, MagvitV2Tokenizer, VQTokenizer
from .config import (SECTION, AmusedVQConfig, MagvitV2Config, VQConfig, vq_config_from_dict)
from .magvitv2 import MagvitV2, lfq_buffers

MODELS = {"magvitv2": (MagvitV2, MagvitV2Tokenizer), "amused": (AmusedVQ, AmusedTokenizer)}
CONV_PERM = (2, 3, 1, 0)   # torch OIHW -> our HWIO


def build_model(config: VQConfig, seed: int = 0) -> nnx.Module:
    """A tokenizer module with PyTorch-default random weights."""
    cls = MODELS[config.kind][0]
    with nnx.use_eager_sharding(False):
        return cls(config, rngs=nnx.Rngs(seed))


def abstract_model(config: VQConfig) -> nnx.Module:
    """The module with ShapeDtypeStruct parameters (nothing allocated)."""
    cls = MODELS[config.kind][0]
    with nnx.use_eager_sharding(False):
        return nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))


def _flat_params(model: nnx.Module) -> list[tuple[tuple, Any]]:
    return list(nnx.to_flat_state(nnx.state(model, nnx.Param)))


def _key(path) -> tuple[str, ...]:
    return tuple(str(p) for p in path)


@functools.lru_cache(maxsize=8)
def abstract_params(config: VQConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """{our parameter path (strings): ShapeDtypeStruct}."""
    out = {}
    for path, var in _flat_params(abstract_model(config)):
        v = var.get_value() if hasattr(var, "get_value") else var[...]
        out[_key(path)] = jax.ShapeDtypeStruct(v.shape, v.dtype)
    return out


def num_params(config: VQConfig) -> int:
    return sum(int(np.prod(s.shape)) for s in abstract_params(config).values())


def reference_key(path: tuple[str, ...]) -> tuple[str, tuple[int, ...] | None]:
    """Our parameter path -> (reference state-dict key, axis permutation)."""
    *mods, leaf = path
    if leaf == "kernel":
        return ".".join(mods + ["weight"]), CONV_PERM
    if leaf == "scale":
        return ".".join(mods + ["weight"]), None
    return ".".join(path), None


def param_maps(config: VQConfig) -> list[ParamMap]:
    maps = []
    for path in abstract_params(config):
        key, perm = reference_key(path)
        maps.append(ParamMap(path, (key,), perm))
    return maps


# ------------------------------------------------------------------------------- kinds

def _safetensors_keys(d: Path) -> set[str]:
    keys: set[str] = set()
    for f in sorted(d.glob("*.safetensors")):
        try:
            keys |= set(_read_safetensors_header(f))
        except CheckpointError:
            return set()
    return keys


def _detect_magvit(d: Path, hf: dict) -> bool:
    if hf.get("_class_name") == "MAGVITv2":
        return True
    if isinstance(hf.get("encoder"), dict) and "ch_mult" in hf["encoder"] and "quantizer" in hf:
        return True
    return "d_model" not in hf and "_class_name" not in hf and "quantize.power_vals" in _safetensors_keys(d)


def _detect_amused(d: Path, hf: dict) -> bool:
    return hf.get("_class_name") == "VQModel" or ("num_vq_embeddings" in hf and "block_out_channels" in hf)


def _read_magvit(src: Path, hf: dict) -> MagvitV2Config:
    return MagvitV2Config.from_hf_config(hf, source=str(src / "config.json"))


def _read_amused(src: Path, hf: dict) -> AmusedVQConfig:
    return AmusedVQConfig.from_hf_config(hf, source=str(src / "config.json"))


KINDS = {
    "magvitv2": register_kind(Kind(
        name="magvitv2", read_config=_read_magvit, param_maps=param_maps, abstract_params=abstract_params,
        hf_config=lambda c, base: c.to_hf_config(base), detect=_detect_magvit,
        weights_prefix="pytorch_model", buffers=lambda c: lfq_buffers(c.z_channels))),
    "amused": register_kind(Kind(
        name="amused", read_config=_read_amused, param_maps=param_maps, abstract_params=abstract_params,
        hf_config=lambda c, base: c.to_hf_config(base), detect=_detect_amused,
        subfolder="vqvae", weights_prefix="diffusion_pytorch_model")),
}
register_config_section(SECTION, vq_config_from_dict)


# ------------------------------------------------------------------------------- loading

def _nest(flat: dict[tuple[str, ...], Any]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _flatten(tree: dict, prefix=()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def model_from_params(config: VQConfig, params: dict[tuple[str, ...], Any]) -> nnx.Module:
    """Fill the abstract module with ``params`` ({string path: array}), cast to float32 compute
    storage of ``config.param_dtype``."""
    graphdef, state = nnx.split(abstract_model(config))
    flat = list(nnx.to_flat_state(state))
    missing = [".".join(_key(p)) for p, _ in flat if _key(p) not in params]
    if missing:
        raise CheckpointError(f"{config.kind}: parameters missing: {', '.join(missing[:10])}")
    values = {}
    for path, var in flat:
        want = var.get_value() if hasattr(var, "get_value") else var[...]
        array = np.asarray(params[_key(path)])
        if tuple(array.shape) != tuple(want.shape):
            raise CheckpointError(f"{config.kind}: parameter {'.'.join(_key(path))} has shape "
                                  f"{list(array.shape)}, the config needs {list(want.shape)}")
        values[path] = jax.numpy.asarray(array.astype(want.dtype))
    nnx.replace_by_pure_dict(state, _nest(values))
    return nnx.merge(graphdef, state)


def _find_hf_dir(src: Path, kind: str | None) -> tuple[str, Path]:
    """(kind, directory) of the VQ checkpoint in ``src`` or one of its subfolders."""
    names = [kind] if kind else list(KINDS)
    for name in names:
        if name not in KINDS:
            raise CheckpointError(f"unknown tokenizer kind {name!r}; known: {sorted(KINDS)}")
        spec = KINDS[name]
        dirs = [src] + ([src / spec.subfolder] if spec.subfolder else [])
        dirs += [p for p in sorted(src.iterdir()) if p.is_dir() and p not in dirs]
        for d in dirs:
            cfg = d / "config.json"
            if not cfg.exists():
                continue
            try:
                hf = json.loads(cfg.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{cfg}: not valid JSON: {e}") from None
            if kind or spec.detect(d, hf):
                return name, d
    raise CheckpointError(f"{src}: no image-tokenizer checkpoint found (a MAGVIT-v2 or diffusers VQModel "
                          f"config.json, here or in a subfolder such as vqvae/); pass kind=")


def load_vq(path: str | Path, *, kind: str | None = None, micro_batch="auto") -> VQTokenizer:
    """An image tokenizer from a converted checkpoint (``config.yaml`` with a ``vq:`` section +
    Orbax params) or straight from a reference directory (MAGVIT-v2, or a diffusers checkpoint
    whose ``vqvae/`` holds the aMUSEd VQ; converted in memory). Parameters are float32.
    ``micro_batch``: (encode, decode) images per network pass, see :class:`VQTokenizer`."""
    path = Path(path)
    if (path / CONFIG_FILE).exists():
        config = load_config(path)
        if config.kind not in MODELS:
            raise CheckpointError(f"{path}: holds a {type(config).__name__} (kind {config.kind!r}), "
                                  f"not an image tokenizer")
        target = {p: jax.ShapeDtypeStruct(s.shape, np.float32) for p, s in abstract_params(config).items()}
        params = _flatten(restore_params(path, _nest(target), as_numpy=True))
    elif path.is_dir():
        name, d = _find_hf_dir(path, kind)
        config, params = params_from_hf(d, kind=name, dtype="float32")
    elif path.exists():
        raise CheckpointError(f"{path}: expected a checkpoint directory, got a file (for a YAML config "
                              f"use mmada_jax.init_vq)")
    else:
        raise CheckpointError(f"image tokenizer checkpoint not found: {path}")
    config = config.replace(param_dtype="float32")
    return MODELS[config.kind][1](model_from_params(config, params), micro_batch=micro_batch)


def init_vq(config: VQConfig | str | Path, seed: int = 0, *, micro_batch="auto") -> VQTokenizer:
    """A tokenizer with random (PyTorch-default) weights from a config or a YAML file."""
    if not isinstance(config, (MagvitV2Config, AmusedVQConfig)):
        config = load_config(config)
        if getattr(config, "kind", None) not in MODELS:
            raise ConfigError(f"{config!r}: not an image-tokenizer config")
    return MODELS[config.kind][1](build_model(config, seed), micro_batch=micro_batch)


def save_vq(tokenizer: VQTokenizer, directory: str | Path) -> Path:
    """Write a tokenizer as a converted checkpoint (config.yaml + Orbax params)."""
    import orbax.checkpoint as ocp
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    params = {_key(p): np.asarray(v.get_value() if hasattr(v, "get_value") else v[...])
              for p, v in _flat_params(tokenizer.model)}
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(directory / "params", _nest(params), force=True)
    ckptr.wait_until_finished()
    tokenizer.config.to_yaml(directory / CONFIG_FILE)
    return directory

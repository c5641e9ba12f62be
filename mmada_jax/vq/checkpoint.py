"""Weights of the image tokenizers: their conversion kinds, abstract modules and ``init_vq``.

Two conversion kinds are defined here and listed in :data:`mmada_jax.convert.KINDS` (so
``convert_torch_weights.py SRC DST --kind magvitv2|amused`` and ``--to-hf`` work, with the same
header checks as the transformer); loading and saving is :mod:`mmada_jax.checkpoints`
(``load_vq`` / ``save_vq``):

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
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from .. import config as config_lib
from ..config import ConfigError
from ..hf_io import CheckpointError, Kind, ParamMap, _read_safetensors_header
from .amused import AmusedVQ
from .base import AmusedTokenizer, MagvitV2Tokenizer, VQTokenizer
from .config import AmusedVQConfig, MagvitV2Config, VQConfig
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


def param_maps(config: VQConfig, paths=None) -> list[ParamMap]:
    """The rows of the conversion; ``paths``: our parameter paths (strings) when the caller has
    the abstract module already (else built, once per config)."""
    maps = []
    for path in (abstract_params(config) if paths is None else paths):
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


MAGVITV2 = Kind(
    name="magvitv2", read_config=_read_magvit, param_maps=param_maps, abstract_params=abstract_params,
    hf_config=lambda c, base: c.to_hf_config(base), detect=_detect_magvit,
    weights_prefix="pytorch_model", buffers=lambda c: lfq_buffers(c.z_channels), image_tokenizer=True)
AMUSED = Kind(
    name="amused", read_config=_read_amused, param_maps=param_maps, abstract_params=abstract_params,
    hf_config=lambda c, base: c.to_hf_config(base), detect=_detect_amused,
    subfolder="vqvae", weights_prefix="diffusion_pytorch_model", image_tokenizer=True)


# ------------------------------------------------------------------------------- random init

def init_vq(config: VQConfig | str | Path, seed: int = 0, *, micro_batch="auto") -> VQTokenizer:
    """A tokenizer with random (PyTorch-default) weights from a config or a YAML file."""
    if not isinstance(config, (MagvitV2Config, AmusedVQConfig)):
        config = config_lib.load_config(config)
        if getattr(config, "kind", None) not in MODELS:
            raise ConfigError(f"{config!r}: not an image-tokenizer config")
    return MODELS[config.kind][1](build_model(config, seed), micro_batch=micro_batch)

"""CLIP weights: the ``clip`` conversion kind and :func:`load_clip`.

The kind (:data:`CLIP`, listed in :data:`mmada_jax.convert.KINDS`) maps a HF ``CLIPModel``
directory (config.json with ``model_type: clip`` or ``architectures: [CLIPModel]``, safetensors or
``pytorch_model*.bin``) onto our parameter tree, so ``convert_torch_weights.py SRC DST`` and
``--to-hf`` work with the same checks as every kind (missing / unexpected keys, shapes, NaN/Inf,
checksums). Our parameter paths mirror the HF module names, so each row is a renaming:

* ``.../kernel`` <- ``.../weight``: a Linear transposed ([out, in] -> [in, out]); the patch
  convolution OIHW -> HWIO;
* ``.../scale`` (LayerNorm) and ``.../embedding`` (nn.Embedding) <- ``.../weight``;
* ``encoder.layers.<name>`` [L, ...] <- ``encoder.layers.{i}.<name>`` (stacked on axis 0);
* ``class_embedding``, biases and ``logit_scale`` keep their names.

The ``position_ids`` buffers older checkpoints carry (``text_model.embeddings.position_ids``,
``vision_model.embeddings.position_ids``: ``arange``) are not parameters: accepted when present,
checked against the ``arange`` the config implies, and not written back (transformers does not
save them either).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ..config import ConfigError
from ..hf_io import CheckpointError, Kind, ParamMap, flatten, nest
from .config import CLIPConfig
from .model import CLIPModel, abstract_model

CONV_PERM = (2, 3, 1, 0)   # torch OIHW -> our HWIO
LINEAR_PERM = (1, 0)       # torch [out, in] -> our [in, out]
PREPROCESSOR_FILE = "preprocessor_config.json"


@functools.lru_cache(maxsize=8)
def abstract_params(config: CLIPConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """{our parameter path (strings): ShapeDtypeStruct}."""
    state = nnx.to_pure_dict(nnx.state(abstract_model(config), nnx.Param))
    return {tuple(str(k) for k in path): jax.ShapeDtypeStruct(v.shape, v.dtype)
            for path, v in flatten(state).items()}


def reference_key(path: tuple[str, ...]) -> tuple[str, tuple[int, ...] | None]:
    """Our parameter path -> (HF state-dict key, ``{i}`` for the layer of stacked ones; axis
    permutation from the HF layout to ours)."""
    *mods, leaf = path
    mods = [m + ".{i}" if m == "layers" else m for m in mods]
    perm = None
    if leaf == "kernel":
        leaf, perm = "weight", (CONV_PERM if mods and mods[-1] == "patch_embedding" else LINEAR_PERM)
    elif leaf in ("scale", "embedding"):
        leaf = "weight"
    return ".".join(mods + [leaf]), perm


def param_maps(config: CLIPConfig) -> list[ParamMap]:
    """The rows of the conversion (one per parameter; the layers' rows stack one key per layer)."""
    towers = {"text_model": config.text.num_hidden_layers, "vision_model": config.vision.num_hidden_layers}
    maps = []
    for path in abstract_params(config):
        key, perm = reference_key(path)
        if "{i}" in key:
            maps.append(ParamMap(path, tuple(key.format(i=i) for i in range(towers[path[0]])), perm,
                                 stacked=True))
        else:
            maps.append(ParamMap(path, (key,), perm))
    return maps


def position_buffers(config: CLIPConfig) -> dict[str, np.ndarray]:
    """The ``position_ids`` buffers ([1, n] int64 ``arange``) of the reference state dict."""
    return {"text_model.embeddings.position_ids": np.arange(config.text.max_position_embeddings)[None],
            "vision_model.embeddings.position_ids": np.arange(config.vision.num_positions)[None]}


def detect(src: Path, hf: dict) -> bool:
    return hf.get("model_type") == "clip" or "CLIPModel" in (hf.get("architectures") or [])


def read_config(src: Path, hf: dict) -> CLIPConfig:
    """The typed config of a HF CLIP directory (its ``preprocessor_config.json``, when present,
    gives the image normalisation)."""
    pre = None
    if (src / PREPROCESSOR_FILE).exists():
        try:
            pre = json.loads((src / PREPROCESSOR_FILE).read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{src / PREPROCESSOR_FILE}: not valid JSON: {e}") from None
    return CLIPConfig.from_hf_config(hf, source=str(src / "config.json"), preprocessor=pre, name=src.name)


CLIP = Kind(name="clip", read_config=read_config, param_maps=param_maps, abstract_params=abstract_params,
            hf_config=lambda c, base: c.to_hf_config(base), detect=detect, weights_prefix="model",
            buffers=position_buffers, export_buffers=False)


# ------------------------------------------------------------------------------ loading

def load_tokenizer(directory: str | Path):
    """The CLIP tokenizer (``CLIPTokenizerFast``: the ``tokenizers`` backend) saved in
    ``directory`` (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``); offline."""
    from transformers import CLIPTokenizerFast
    directory = Path(directory)
    if not any((directory / f).exists() for f in ("tokenizer.json", "vocab.json")):
        raise CheckpointError(f"{directory}: no CLIP tokenizer files (tokenizer.json, or vocab.json + "
                              f"merges.txt)")
    try:
        return CLIPTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds
        raise CheckpointError(f"{directory}: cannot load the CLIP tokenizer: {e}") from None


def load_clip(path: str | Path, *, dtype: str | None = None, allow_nonfinite: bool = False,
              tokenizer: bool = True):
    """``(model, tokenizer)`` of a CLIP checkpoint.

    Args:
      path: a converted checkpoint (``config.yaml`` with a ``clip:`` section, ``params/``, the
        source's tokenizer files in ``hf/``) or a HF ``CLIPModel`` directory (converted in memory).
      dtype: parameter and compute dtype (``float32`` / ``bfloat16``); default: as stored.
      allow_nonfinite: load parameters holding NaN/Inf instead of raising.
      tokenizer: False returns ``(model, None)`` (no tokenizer files needed).

    Every parameter is checked (its checksum where saved, NaN/Inf); a problem is a
    :class:`CheckpointError` naming the checkpoint and the parameter.
    """
    from ..checkpoints import HF, dtype_name, open_checkpoint, read_params
    from ..convert import params_from_hf

    ckpt = open_checkpoint(path, "clip")
    if ckpt.kind != "clip" or not isinstance(ckpt.config, CLIPConfig):
        raise CheckpointError(f"{ckpt.path}: holds a {type(ckpt.config).__name__} (kind {ckpt.kind!r}), not a CLIP")
    config = ckpt.config
    name = dtype_name(dtype)
    if ckpt.format == HF:
        config, values = params_from_hf(ckpt.weights_dir, kind="clip", dtype=name, allow_nonfinite=allow_nonfinite)
        name = name or str(next(iter(values.values())).dtype)
        values = nest(values)
    if name:
        config = config.replace(param_dtype=name, dtype=name)
    graphdef, state = nnx.split(abstract_model(config))
    if ckpt.format != HF:
        target = nest(abstract_params(config))
        values = read_params(ckpt, target, allow_nonfinite=allow_nonfinite)
    nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, values))
    model: CLIPModel = nnx.merge(graphdef, state)
    tok = load_tokenizer(ckpt.tokenizer_dir) if tokenizer else None
    return model, tok

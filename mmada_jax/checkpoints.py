"""One checkpoint loader for every kind: what a path is, then one restore.

:func:`open_checkpoint` reads what a directory is, once:

* ``converted``: ``config.yaml`` + ``params/`` (``convert_torch_weights.py``, ``save_model``,
  ``save_vq``); side files (config.json, tokenizer) in ``hf/``;
* ``hf``: a Hugging Face / reference directory (``config.json`` + safetensors or
  ``pytorch_model*.bin``; an image tokenizer may sit in a ``vqvae/`` subfolder), converted in
  memory;
* ``training``: a training run folder (``out_dir`` of ``train.sft``: its latest step in
  ``checkpoints/``) or one training checkpoint ``RUN/checkpoints/N`` (Orbax items ``state``,
  ``data``, ``config`` and ``model``). The parameters are the ``params`` subtree of ``state``
  (float32 master weights, cast on restore); the model config is the ``model`` item (runs written
  before it existed: the base checkpoint's config with the run's dtypes); the tokenizer and the
  image tokenizer are the run's (``TrainConfig.tokenizer`` / ``vq``).

The returned :class:`Checkpoint` holds the typed config and where the side files are
(``tokenizer_dir``, ``vq_dir``). :func:`load_model` and :func:`load_vq` are thin wrappers over one
restore that builds the abstract module once, computes the shardings when a mesh is given (each
parameter is then read straight into its shards) and fills it from the right source.
:func:`save_model` / :func:`save_vq` write a converted checkpoint.

Integrity: every checkpoint this project writes carries a CRC-32 per parameter (converted:
``checksums.json``; training: the ``checksums`` item), computed from the values as saved and
checked by :func:`read_params` (a mismatch is a :class:`CheckpointError` naming the checkpoint and
the parameter); checkpoints written before carry none and load unchecked. Every loaded parameter
is checked for NaN/Inf (``allow_nonfinite=True`` to load one anyway), and an Orbax read failure
(truncated or missing files) is a :class:`CheckpointError` naming the checkpoint.

Orbax layout note: ``params/`` (and a training step directory) is an Orbax *checkpoint* whose
``_CHECKPOINT_METADATA`` sits at its root and whose parameter tree is the ``state`` *item*
(``params/state``). The item directory is read with the item handler
(``PyTreeCheckpointHandler``); opening it with a ``Checkpointer`` (a checkpoint-root API) is what
logged ``WARNING:absl:Metadata file does not exist: .../params/state/_CHECKPOINT_METADATA``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from . import config as config_lib
from . import model as model_lib
from .config import CONFIG_FILE, ModelConfig
from .convert import (CHECKSUMS_FILE, HF_DIR, KINDS, NUMPY_DTYPES, PARAMS_DIR, assemble, nonfinite_error, plan,
                      resolve_kind, scan_param, source_dtype_name, write_checksums)
from .hf_io import CHECKSUM_ALGORITHM, CheckpointError, TensorSource, flatten, nest
from .sharding import state_shardings
from .training.checkpoint import CHECKSUMS_ITEM, check_value, param_checksums   # {"algorithm", "params": {path: record}}
from .vq import checkpoint as vq_kinds
from .vq.base import VQTokenizer

CONVERTED, HF, TRAINING = "converted", "hf", "training"
FORMATS = (CONVERTED, HF, TRAINING)
STATE_ITEM = "state"          # the parameter tree's item in params/ and in a training step
TRAIN_CONFIG_ITEM = "config"  # the TrainConfig (JSON) of a training step
MODEL_CONFIG_ITEM = "model"   # the ModelConfig (JSON) of a training step
RUN_CHECKPOINTS = "checkpoints"
VQ_SUBFOLDER = "vqvae"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "tiktoken.model")
EXPECTED = ("a converted checkpoint (config.yaml + params/), a Hugging Face directory (config.json + "
            "weights, or a vqvae/ subfolder), a training run folder (checkpoints/<step>/) or one training "
            "checkpoint (<step>/ with state/ and config/)")


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
    if name not in NUMPY_DTYPES:
        raise ValueError(f"unsupported model dtype {name}; use float32 or bfloat16")
    return name


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint path is (see the module docstring). ``path``: the directory holding the
    parameters (a run folder resolves to its latest step); ``kind``: the config's kind;
    ``config``: the typed config (parsed once); ``format``: converted | hf | training.
    ``tokenizer_dir`` / ``vq_dir``: where the text tokenizer / the image tokenizer are (None:
    unknown). ``side_dir``: the reference non-weight files (config.json ...), the base of an HF
    export. ``weights_dir``: for ``hf``, the directory with config.json + weights.
    ``train_config``: for ``training``, the TrainConfig dict; ``step``: its step."""

    path: Path
    kind: str
    config: Any
    format: str
    tokenizer_dir: Path | None = None
    vq_dir: Path | None = None
    side_dir: Path | None = None
    weights_dir: Path | None = None
    train_config: dict | None = None
    step: int | None = None

    @property
    def image_tokenizer(self) -> bool:
        return KINDS[self.kind].image_tokenizer


# ------------------------------------------------------------------------------ open

def _has_tokenizer(d: Path) -> bool:
    return d.is_dir() and any((d / name).exists() for name in TOKENIZER_FILES)


def _dir(p: Path) -> Path | None:
    return p if p.is_dir() else None


def _side_dirs(root: Path) -> tuple[Path | None, Path | None]:
    """(tokenizer dir, side-file dir) of a converted or HF checkpoint directory, without parsing
    its config."""
    if (root / CONFIG_FILE).exists():
        side = _dir(root / HF_DIR)
        return (side if side is not None and _has_tokenizer(side) else root), side
    return root, root


def _is_training_step(path: Path) -> bool:
    return (path / "_CHECKPOINT_METADATA").exists() and any(
        (path / item).is_dir() for item in (STATE_ITEM, TRAIN_CONFIG_ITEM, "data"))


def _steps(folder: Path) -> list[int]:
    """Finished steps of a CheckpointManager folder (Orbax renames a step dir when complete)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and _is_training_step(p))


def _run_step_dir(path: Path) -> Path | None:
    """The latest step directory of a run folder (or of its ``checkpoints/`` folder)."""
    for folder in (path / RUN_CHECKPOINTS, path):
        steps = _steps(folder)
        if steps:
            return folder / str(steps[-1])
    if (path / RUN_CHECKPOINTS).is_dir() and not (path / "config.json").exists():
        raise CheckpointError(f"{path}: a training run without a finished checkpoint in "
                              f"{path / RUN_CHECKPOINTS} (expected {RUN_CHECKPOINTS}/<step>/ with state/)")
    return None


def _run_path(value: str | None, step_dir: Path) -> Path | None:
    """A path recorded in a TrainConfig (relative to the directory training ran in): as given
    when it exists, else relative to an ancestor of the run; None when not found."""
    if not value:
        return None
    p = Path(value)
    if p.is_absolute():
        return p if p.exists() else None
    for base in (Path.cwd(), *step_dir.absolute().parents):
        if (base / p).exists():
            return base / p
    return None


def _read_json_item(step: Path, item: str) -> dict | None:
    if not (step / item).is_dir():
        return None
    import orbax.checkpoint as ocp
    handler = ocp.JsonCheckpointHandler()
    try:
        return handler.restore((step / item).absolute())   # Orbax refuses relative paths
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{step / item}: cannot read the training checkpoint's {item!r} item: {e}") from None
    finally:
        handler.close()


def _base_assets(base: Path | None) -> tuple[Path | None, Path | None, Path | None]:
    """(tokenizer dir, side-file dir, VQ dir) of the checkpoint a run started from; when that is a
    training run itself (an RL run of an SFT run), the ones it resolved."""
    if base is None:
        return None, None, None
    if not (base / CONFIG_FILE).exists() and not (base / "config.json").exists():
        inner = open_checkpoint(base)
        if inner.format == TRAINING:
            return inner.tokenizer_dir, inner.side_dir, inner.vq_dir
    tokenizer, side = _side_dirs(base)
    return tokenizer, side, _dir(base / VQ_SUBFOLDER)


def _open_training(step: Path, kind: str | None) -> Checkpoint:
    if not (step / STATE_ITEM).is_dir():
        raise CheckpointError(f"{step}: training checkpoint without its {STATE_ITEM!r} item ({step / STATE_ITEM}: "
                              f"the parameters); an unfinished or partial save?")
    train = _read_json_item(step, TRAIN_CONFIG_ITEM)
    if train is None:
        raise CheckpointError(f"{step}: training checkpoint without its {TRAIN_CONFIG_ITEM!r} item (the "
                              f"TrainConfig that says which model was trained)")
    base = _run_path(train.get("checkpoint"), step)
    recorded = _read_json_item(step, MODEL_CONFIG_ITEM)
    if recorded is not None:
        config = ModelConfig.from_dict(recorded, source=str(step / MODEL_CONFIG_ITEM))
    else:   # runs saved before the model item: rebuild the config as the training loop did
        if train.get("model_config"):
            path = _run_path(train["model_config"], step)
            if path is None:
                raise CheckpointError(f"{step}: its model config {train['model_config']!r} is not found")
            config = config_lib.load_config(path)
        elif base is not None:
            config = open_checkpoint(base, image_tokenizer=False).config
        else:
            raise CheckpointError(f"{step}: its base checkpoint {train.get('checkpoint')!r} is not found "
                                  f"(needed for the model config)")
        config = dataclasses.replace(config, **{k: train[k] for k in ("param_dtype", "dtype", "remat_policy")
                                                if k in train})
    if kind is not None and kind != config.kind:
        raise CheckpointError(f"{step}: a training checkpoint of a {config.kind!r} model, not {kind!r}")
    base_tok, side, base_vq = _base_assets(base)
    tokenizer = _run_path(train.get("tokenizer"), step) or base_tok
    vq = _run_path(train.get("vq"), step) or base_vq
    return Checkpoint(path=step, kind=config.kind, config=config, format=TRAINING, tokenizer_dir=tokenizer,
                      vq_dir=vq, side_dir=side, train_config=train, step=int(step.name) if step.name.isdigit() else None)


def open_checkpoint(path: str | Path, kind: str | None = None, *,
                    image_tokenizer: bool | None = None) -> Checkpoint:
    """What ``path`` is (see the module docstring), read once.

    ``kind``: for HF directories, the kind instead of detecting it (``mmada``, ``llada``,
    ``dimoo``, ``magvitv2``, ``amused``, ``clip``). ``image_tokenizer``: True / False limits the detection
    in a HF directory to the VQ / transformer kinds (an -A checkpoint holds both).
    """
    if isinstance(path, Checkpoint):
        return path
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (expected {EXPECTED})")
    if not path.is_dir():
        hint = " (for a YAML config use mmada_jax.init_vq / init_model)" if path.suffix in (".yaml", ".yml") else ""
        raise CheckpointError(f"{path}: expected a checkpoint directory, got a file{hint}")
    if (path / CONFIG_FILE).exists():
        config = config_lib.load_config(path / CONFIG_FILE)
        tokenizer, side = _side_dirs(path)
        return Checkpoint(path=path, kind=config.kind, config=config, format=CONVERTED,
                          tokenizer_dir=tokenizer, vq_dir=_dir(path / VQ_SUBFOLDER), side_dir=side)
    if _is_training_step(path):
        return _open_training(path, kind)
    step = _run_step_dir(path)
    if step is not None:
        return _open_training(step, kind)
    has_config = (path / "config.json").exists() or any((p / "config.json").exists()
                                                        for p in path.iterdir() if p.is_dir())
    if not has_config and kind is None:
        what = {None: "", True: "image-tokenizer ", False: "transformer "}[image_tokenizer]
        raise CheckpointError(f"{path}: no {what}checkpoint found; expected {EXPECTED}")
    spec, cdir, hf = resolve_kind(path, kind, image_tokenizer=image_tokenizer)
    config = spec.read_config(cdir, hf)
    return Checkpoint(path=path, kind=spec.name, config=config, format=HF, tokenizer_dir=path,
                      vq_dir=_dir(path / VQ_SUBFOLDER), side_dir=cdir, weights_dir=cdir)


# ------------------------------------------------------------------------------ restore

def _params_item(ckpt: Checkpoint) -> tuple[Path, tuple[str, ...]]:
    """(Orbax item directory, absolute: Orbax refuses relative paths; path of the parameter tree
    inside it)."""
    root = ckpt.path.absolute()
    if ckpt.format == TRAINING:
        return root / STATE_ITEM, ("params",)
    params = root / PARAMS_DIR
    if (params / STATE_ITEM).is_dir():   # convert_to_orbax / save_model
        return params / STATE_ITEM, ()
    if params.is_dir():                  # save_model before the state item: the tree at the root
        return params, ()
    raise CheckpointError(f"{ckpt.path}: no {PARAMS_DIR}/ directory; not a converted mmada-jax checkpoint")


def _short(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, bounded (Orbax/TensorStore errors run long)."""
    text = (str(e).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[:limit] + " ..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def stored_checksums(ckpt: Checkpoint) -> dict[str, dict] | None:
    """{parameter path: checksum record} saved with a converted or training checkpoint; None for
    checkpoints written before checksums existed."""
    if ckpt.format == TRAINING:
        data = _read_json_item(ckpt.path, CHECKSUMS_ITEM)
        where = ckpt.path / CHECKSUMS_ITEM
    else:
        where = ckpt.path / CHECKSUMS_FILE
        if not where.exists():
            return None
        try:
            data = json.loads(where.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"checkpoint {ckpt.path}: cannot read {where.name}: {e}") from None
    if data is None:
        return None
    if (not isinstance(data, dict) or data.get("algorithm") != CHECKSUM_ALGORITHM
            or not isinstance(data.get("params"), dict)):
        raise CheckpointError(f"checkpoint {ckpt.path}: {where} is not a {CHECKSUM_ALGORITHM} checksum table")
    return data["params"]


def read_params(ckpt: Checkpoint, target: dict, *, shardings: dict | None = None,
                as_numpy: bool = False, allow_nonfinite: bool = False) -> dict:
    """Restore (a subtree of) the stored parameters of a converted or training checkpoint into
    ``target``'s dtypes (a nested dict of ShapeDtypeStructs; string keys), onto ``shardings``
    (same structure) or the default device, or as numpy arrays.

    Each parameter is read in its stored dtype, checked against its saved checksum (when the
    checkpoint has them) and for NaN/Inf (unless ``allow_nonfinite``), then cast. Any failure is
    a :class:`CheckpointError` naming the checkpoint (and the parameter where known)."""
    import orbax.checkpoint as ocp

    item, prefix = _params_item(ckpt)
    records = stored_checksums(ckpt) or {}
    flat_target = flatten(target)
    names = {path: ".".join(path) for path in flat_target}
    # read in the dtype the checksum was taken in, cast after the check
    read_as = {path: np.dtype(records[n]["dtype"]) if isinstance(records.get(n), dict) and "dtype" in records[n]
               else np.dtype(flat_target[path].dtype) for path, n in names.items()}
    handler = ocp.PyTreeCheckpointHandler()
    try:
        try:
            stored = handler.metadata(item).tree
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{ckpt.path}: cannot read parameters (Orbax metadata of {item}: "
                                  f"{_short(e)}); the checkpoint is truncated or damaged") from None
        for k in prefix:
            if not isinstance(stored, dict) or k not in stored:
                raise CheckpointError(f"{item}: no {'.'.join(prefix)!r} subtree in the training state")
            stored = stored[k]
        problems = []
        for path, leaf in flat_target.items():
            node = stored
            for k in path:
                if not isinstance(node, dict) or k not in node:
                    problems.append(f"missing parameter {'.'.join(path)}")
                    break
                node = node[k]
            else:
                if tuple(node.shape) != tuple(leaf.shape):
                    problems.append(f"parameter {'.'.join(path)} has shape {list(node.shape)} in the "
                                    f"checkpoint, the config needs {list(leaf.shape)}")
        if problems:
            raise CheckpointError(f"{ckpt.path}: checkpoint does not match its config:\n  - "
                                  + "\n  - ".join(problems))

        default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        read_target = nest({path: jax.ShapeDtypeStruct(leaf.shape, read_as[path])
                            for path, leaf in flat_target.items()})

        def args(leaf, sharding=None):
            if as_numpy:
                return ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)
            return ocp.ArrayRestoreArgs(dtype=leaf.dtype, sharding=sharding or default)

        restore_args = (jax.tree.map(args, read_target) if shardings is None
                        else jax.tree.map(args, read_target, shardings))
        for k in reversed(prefix):
            read_target, restore_args = {k: read_target}, {k: restore_args}
        try:
            restored = handler.restore(item, args=ocp.args.PyTreeRestore(
                item=read_target, restore_args=restore_args, partial_restore=True))
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many kinds
            raise CheckpointError(f"{ckpt.path}: cannot read parameters ({_short(e)}); the checkpoint is "
                                  f"truncated or damaged") from None
    finally:
        handler.close()
    for k in prefix:
        restored = restored[k]
    values = flatten(restored)
    for path, name in names.items():
        if path not in values:
            raise CheckpointError(f"{ckpt.path}: cannot read parameters (parameter {name} was not restored)")
        value = values[path]
        check_value(ckpt.path, name, value, records.get(name), allow_nonfinite=allow_nonfinite)
        want = np.dtype(flat_target[path].dtype)
        if np.dtype(value.dtype) != want:
            values[path] = value.astype(want)
        del value
    return nest(values)


def _restore(ckpt: Checkpoint, *, dtype=None, mesh: Mesh | None = None, overrides: dict | None = None,
             allow_nonfinite: bool = False):
    """(module, config): the abstract module built once, filled from ``ckpt``'s parameters
    (checked: checksums where saved, NaN/Inf unless ``allow_nonfinite``)."""
    config, name, source = ckpt.config, dtype_name(dtype), None
    try:
        if ckpt.format == HF:
            spec = KINDS[ckpt.kind]
            source = TensorSource(ckpt.weights_dir)
            if not ckpt.image_tokenizer:
                maps = spec.param_maps(config)
                name = name or source_dtype_name(source, maps)
        if ckpt.image_tokenizer:
            config = config.replace(param_dtype="float32")   # the tokenizers compute in float32
            abstract = vq_kinds.abstract_model(config)
        else:
            overrides = dict(overrides or {})
            if name:
                overrides.setdefault("param_dtype", name)
                overrides.setdefault("dtype", name)
            config = dataclasses.replace(config, **overrides)
            abstract = model_lib.abstract_model(config)
        graphdef, state = nnx.split(abstract)
        # parameter paths as strings (the VQ modules have list indices) <-> the state's own keys
        flat = flatten(nnx.to_pure_dict(state))
        keys = {tuple(str(k) for k in p): p for p in flat}
        target = {s: flat[p] for s, p in keys.items()}
        shardings = None
        if mesh is not None:
            flat_shardings = flatten(nnx.to_pure_dict(state_shardings(state, mesh)))
            shardings = {s: flat_shardings[p] for s, p in keys.items()}
        if source is not None:
            if ckpt.image_tokenizer:   # its maps follow the module tree: from the paths just built
                maps = vq_kinds.param_maps(config, paths=target)
            plan(source, maps, target, where=str(ckpt.weights_dir), buffers=spec.buffers(config))
            values, bad = {}, {}
            for m in maps:
                want = target[m.path]
                array = assemble(source, m, np.dtype(want.dtype))
                scan_param(m, array, bad, checksum=False)
                if bad and not allow_nonfinite:   # keep scanning (host only) to name every bad tensor
                    del array
                    continue
                values[m.path] = jax.device_put(array, shardings[m.path] if shardings else None)
                del array
            if bad and not allow_nonfinite:
                raise nonfinite_error(str(ckpt.weights_dir), bad, "pass allow_nonfinite=True to load it anyway")
        else:
            values = flatten(read_params(ckpt, nest(target), shardings=nest(shardings) if shardings else None,
                                         allow_nonfinite=allow_nonfinite))
    finally:
        if source is not None:
            source.close()
    nnx.replace_by_pure_dict(state, nest({keys[s]: v for s, v in values.items()}))
    return nnx.merge(graphdef, state), config


def load_model(path: str | Path | Checkpoint, dtype=None, *, mesh: Mesh | None = None,
               kind: str | None = None, allow_nonfinite: bool = False,
               **overrides) -> tuple[model_lib.LLaDAModel, ModelConfig]:
    """Load ``(model, config)`` from any transformer checkpoint.

    Args:
      path: a converted checkpoint (``convert_torch_weights.py``, ``save_model``), a HF directory
        (safetensors / pytorch_model*.bin, converted in memory), a training run folder (its latest
        checkpoint) or one training checkpoint ``RUN/checkpoints/N``; or an opened
        :class:`Checkpoint`.
      dtype: parameter and compute dtype (a jnp dtype or its name); default: as stored.
      mesh: place the parameters on this mesh by the logical-axis rules (each restored straight
        into its shards).
      kind: for HF directories, override the detected kind (``mmada``, ``llada``, ``dimoo``).
      allow_nonfinite: load parameters holding NaN/Inf instead of raising :class:`CheckpointError`.
      **overrides: other :class:`ModelConfig` fields (``remat_policy``, ``attention_impl``,
        ``attention_mask_mode``, ``param_dtype`` ...).
    """
    ckpt = open_checkpoint(path, kind, image_tokenizer=False)
    if ckpt.image_tokenizer or not isinstance(ckpt.config, ModelConfig):
        hint = "; load it with mmada_jax.clip.load_clip" if ckpt.kind == "clip" else ""
        raise CheckpointError(f"{ckpt.path} holds a {type(ckpt.config).__name__}, not a transformer{hint}")
    return _restore(ckpt, dtype=dtype, mesh=mesh, overrides=overrides, allow_nonfinite=allow_nonfinite)


def load_vq(path: str | Path | Checkpoint, *, kind: str | None = None, micro_batch="auto",
            allow_nonfinite: bool = False) -> VQTokenizer:
    """An image tokenizer from a converted checkpoint (``config.yaml`` with a ``vq:`` section),
    a reference directory (MAGVIT-v2, or a diffusers checkpoint whose ``vqvae/`` holds the aMUSEd
    VQ; converted in memory), or the image tokenizer of a transformer checkpoint / training run
    (its ``vq_dir``). Parameters are float32. ``micro_batch``: (encode, decode) images per
    network pass, see :class:`VQTokenizer`. ``allow_nonfinite``: load NaN/Inf parameters instead of
    raising."""
    ckpt = open_checkpoint(path, kind, image_tokenizer=True)
    if not ckpt.image_tokenizer:
        if ckpt.vq_dir is None or kind is not None:
            raise CheckpointError(f"{ckpt.path}: holds a {type(ckpt.config).__name__} (kind {ckpt.kind!r}), "
                                  f"not an image tokenizer")
        ckpt = open_checkpoint(ckpt.vq_dir, image_tokenizer=True)
    model, config = _restore(ckpt, allow_nonfinite=allow_nonfinite)
    return vq_kinds.MODELS[config.kind][1](model, micro_batch=micro_batch)


# ------------------------------------------------------------------------------ save

def _save(module: nnx.Module, config, directory: str | Path) -> Path:
    """A converted checkpoint: ``params/`` (Orbax checkpoint, the tree in its ``state`` item,
    string keys) + ``config.yaml`` + ``checksums.json``."""
    import orbax.checkpoint as ocp
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    params = nest({tuple(str(k) for k in p): v
                   for p, v in flatten(nnx.to_pure_dict(nnx.state(module, nnx.Param))).items()})
    records = param_checksums(params)
    ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        ckptr.save(directory / PARAMS_DIR, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(params)}),
                   force=True)
    finally:
        ckptr.close()
    config.to_yaml(directory / CONFIG_FILE)
    if jax.process_index() == 0:
        write_checksums(directory, records)
    return directory


def save_model(model: model_lib.LLaDAModel, directory: str | Path) -> Path:
    """Save a model as a converted checkpoint (Orbax params + config.yaml)."""
    return _save(model, model.config, directory)


def save_vq(tokenizer: VQTokenizer, directory: str | Path) -> Path:
    """Write a tokenizer as a converted checkpoint (config.yaml + Orbax params)."""
    return _save(tokenizer.model, tokenizer.config, directory)


__all__ = ["Checkpoint", "CheckpointError", "FORMATS", "dtype_name", "load_model", "load_vq", "open_checkpoint",
           "read_params", "save_model", "save_vq"]

"""PyTorch (Hugging Face) checkpoints <-> our Orbax checkpoints, streamed tensor by tensor.

A *kind* (:class:`Kind`) says how one family of checkpoints maps onto our parameter tree: where
its config is, how to read it into our typed config, and a list of :class:`ParamMap` rows (our
parameter path <- one reference key, or one key per layer stacked on a new leading axis, with the
transform between the layouts). :data:`KINDS` lists every kind: the transformers (``mmada``,
``llada``, ``dimoo``, defined here), the image tokenizers (``magvitv2``, ``amused``, defined
next to their models in :mod:`mmada_jax.vq.checkpoint`) and ``clip`` (a HF ``CLIPModel``, both
towers, e.g. for the ``clip`` reward; defined in :mod:`mmada_jax.clip.checkpoint`, loaded with
:func:`mmada_jax.clip.load_clip`).

Before any tensor data is read, the whole plan is checked against the file headers: every source
key used, every parameter filled, every shape right. Then each parameter is assembled, cast and
appended to the Orbax checkpoint with Orbax's partial save, so peak memory is about two copies of
the largest (stacked) parameter, not the model.

Converted checkpoint layout::

    DST/config.yaml      our typed config (kind, architecture, token ids, dtypes)
    DST/params/          Orbax checkpoint of the parameter tree
    DST/hf/              the source's non-weight files (config.json, tokenizer, ...), kept for
                         the reverse export and for tokenizers
    DST/checksums.json   a CRC-32 per parameter (as stored), checked when the parameters are read

Both directions write into a fresh folder beside DST (``.DST.tmp-<pid>-<random>``) and swap it in
only after everything was written: a failed or interrupted conversion leaves DST as it was (with
``overwrite``, the old DST is renamed aside, the new one renamed in, then the old one deleted).
Every tensor is checked for NaN/Inf as it streams; non-finite values fail the conversion (listing
the tensors) unless ``allow_nonfinite``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import gc
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import jax
import ml_dtypes
import numpy as np

from .config import CONFIG_FILE, ConfigError, ModelConfig, detect_kind
from .hf_io import (CHECKSUM_ALGORITHM, CheckpointError, Kind, ParamMap, TensorSource, checksum_record,
                    describe_nonfinite, flatten, iter_weight_files, nest, scan_array,
                    write_safetensors_shards)
from .clip import checkpoint as clip_kind
from .vq import checkpoint as vq_kinds


PARAMS_DIR = "params"
# non-weight files worth keeping from a source checkpoint (configs, tokenizer, remote code)
SIDE_FILE_SUFFIXES = {".json", ".txt", ".model", ".jinja", ".py", ".tiktoken", ".md"}
HF_DIR = "hf"
CHECKSUMS_FILE = "checksums.json"   # {"algorithm": "crc32", "params": {"a.b": {crc32, dtype, shape}}}

NUMPY_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                "float16": np.dtype(np.float16)}


# --------------------------------------------------------------------------- transformer kinds

# our parameter  <-  reference state-dict key ({i} = layer; those are stacked), transposed?
# torch Linear weights are [out, in]; ours are [in, out].
LLADA_KEYS = (
    ("wte", "model.transformer.wte.weight", False),
    ("attn_norm", "model.transformer.blocks.{i}.attn_norm.weight", False),
    ("q_proj", "model.transformer.blocks.{i}.q_proj.weight", True),
    ("k_proj", "model.transformer.blocks.{i}.k_proj.weight", True),
    ("v_proj", "model.transformer.blocks.{i}.v_proj.weight", True),
    ("attn_out", "model.transformer.blocks.{i}.attn_out.weight", True),
    ("ff_norm", "model.transformer.blocks.{i}.ff_norm.weight", False),
    ("ff_proj", "model.transformer.blocks.{i}.ff_proj.weight", True),   # the SwiGLU gate
    ("up_proj", "model.transformer.blocks.{i}.up_proj.weight", True),
    ("ff_out", "model.transformer.blocks.{i}.ff_out.weight", True),     # down projection
    ("ln_f", "model.transformer.ln_f.weight", False),
    ("lm_head", "model.transformer.ff_out.weight", True),
)


def llada_param_maps(config: ModelConfig) -> list[ParamMap]:
    maps = []
    for ours, key, transposed in LLADA_KEYS:
        layered = "{i}" in key
        sources = tuple(key.format(i=i) for i in range(config.n_layers)) if layered else (key,)
        maps.append(ParamMap((ours,), sources, (1, 0) if transposed else None, stacked=layered))
    return maps


def llada_abstract_params(config: ModelConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    from flax import nnx
    from .model import abstract_model
    state = nnx.to_pure_dict(nnx.state(abstract_model(config), nnx.Param))
    return {(k,): v for k, v in state.items()}


def _transformer_kind(name: str) -> Kind:
    def read(src: Path, hf: dict) -> ModelConfig:
        return ModelConfig.from_hf_config(hf, source=str(src / "config.json"), kind=name)

    return Kind(name=name, read_config=read, param_maps=llada_param_maps,
                abstract_params=llada_abstract_params,
                hf_config=lambda c, base: c.to_hf_config(base),
                detect=lambda src, hf: "d_model" in hf and detect_kind(hf) == name)


# Every checkpoint family, by name: the only table of kinds (detection tries them in this order).
KINDS: dict[str, Kind] = {
    "mmada": _transformer_kind("mmada"),
    "llada": _transformer_kind("llada"),
    "dimoo": _transformer_kind("dimoo"),
    "magvitv2": vq_kinds.MAGVITV2,
    "amused": vq_kinds.AMUSED,
    "clip": clip_kind.CLIP,
}


# --------------------------------------------------------------------------- engine

def _config_dir(src: Path, kind: Kind | None) -> Path:
    if kind is not None and kind.subfolder and (src / kind.subfolder).is_dir():
        return src / kind.subfolder
    return src


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no {path.name} in {path.parent}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from None


def resolve_kind(src: Path, kind: str | None = None, *,
                 image_tokenizer: bool | None = None) -> tuple[Kind, Path, dict]:
    """(kind, directory holding config + weights, its config dict) for a HF checkpoint dir.

    Without ``kind``, the kinds are detected from ``src/config.json`` and the config.json of each
    subfolder (``vqvae/``); ``image_tokenizer`` True / False limits the search to the VQ /
    transformer kinds."""
    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {src}")
    if kind is not None:
        if kind not in KINDS:
            raise CheckpointError(f"unknown --kind {kind!r}; known: {sorted(KINDS)}")
        spec = KINDS[kind]
        d = _config_dir(src, spec)
        return spec, d, _read_json(d / "config.json")
    specs = [k for k in KINDS.values() if image_tokenizer is None or k.image_tokenizer == image_tokenizer]
    candidates = [src] + [p for p in sorted(src.iterdir()) if p.is_dir()]
    for d in candidates:
        if not (d / "config.json").exists():
            continue
        hf = _read_json(d / "config.json")
        for spec in specs:
            try:
                if spec.detect(d, hf):
                    return spec, d, hf
            except ConfigError:
                continue
    what = {None: "", True: "image-tokenizer ", False: "transformer "}[image_tokenizer]
    if image_tokenizer is not None:   # the other family?
        try:
            other = resolve_kind(src)[0]
        except CheckpointError:
            other = None
        if other is not None:
            raise CheckpointError(f"{src}: holds a {other.name} checkpoint, not "
                                  f"{'an image tokenizer' if image_tokenizer else 'a transformer'}")
    if not any((d / "config.json").exists() for d in candidates):
        raise CheckpointError(f"{src}: no {what}checkpoint found: no config.json (nor in a subfolder); "
                              f"cannot tell what this checkpoint is")
    raise CheckpointError(f"{src}: no {what}checkpoint found in its config.json (nor in a subfolder "
                          f"such as vqvae/); cannot tell the checkpoint kind; pass --kind "
                          f"(one of {sorted(n for n, k in KINDS.items() if k in specs)})")


def plan(source: TensorSource, maps: Sequence[ParamMap],
         expected: dict[tuple[str, ...], jax.ShapeDtypeStruct], where: str,
         buffers: dict[str, np.ndarray] | None = None) -> None:
    """Check the whole conversion against tensor headers; raise naming every problem.

    ``buffers``: derived reference tensors (see :class:`Kind`); those present in the source must
    have the expected shape and values (they are small; this reads their data)."""
    problems = []
    buffers = buffers or {}
    mapped = {m.path for m in maps}
    unfilled = sorted(".".join(p) for p in set(expected) - mapped)
    if unfilled:
        problems.append(f"parameters with no source mapping: {', '.join(unfilled)}")
    available = set(source.keys())
    needed = [k for m in maps for k in m.sources]
    missing = [k for k in needed if k not in available]
    if missing:
        problems.append(f"missing key(s) ({len(missing)}): {', '.join(missing[:20])}"
                        + (" ..." if len(missing) > 20 else ""))
    extra = sorted(available - set(needed) - set(buffers))
    if extra:
        problems.append(f"unexpected key(s) the model does not use ({len(extra)}): "
                        f"{', '.join(extra[:20])}" + (" ..." if len(extra) > 20 else ""))
    for m in maps:
        if m.path not in expected or any(k not in available for k in m.sources):
            continue
        want = tuple(expected[m.path].shape)
        per = want[1:] if m.stacked else want
        for key in m.sources:
            if len(source.shape(key)) != len(per) or m.shape_to_ours(source.shape(key)) != tuple(per):
                problems.append(f"{key}: shape {list(source.shape(key))} does not fit parameter "
                                f"{'.'.join(m.path)} (the config needs {list(m.shape_to_hf(per))})")
            if not np.issubdtype(source.dtype(key), np.floating) and source.dtype(key) != ml_dtypes.bfloat16:
                problems.append(f"{key}: dtype {source.dtype(key)} is not a float type")
    for key, want in buffers.items():
        if key not in available:
            continue
        if tuple(source.shape(key)) != want.shape:
            problems.append(f"{key}: shape {list(source.shape(key))}, the config implies {list(want.shape)}")
        elif not np.array_equal(source.get(key).astype(np.float64), want.astype(np.float64)):
            problems.append(f"{key}: values differ from the ones the config implies (a buffer "
                            f"recomputed from the config, not stored)")
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointError(f"{where}: checkpoint does not match its config.json:\n  - "
                              + "\n  - ".join(problems[:20]) + more)


def assemble(source: TensorSource, m: ParamMap, dtype: np.dtype | None) -> np.ndarray:
    """One parameter in our layout (stacking per-layer keys), cast to ``dtype``."""
    if not m.stacked:
        out = m.to_ours(source.get(m.sources[0]))
        return out.astype(dtype, copy=False) if dtype is not None else out
    first = m.to_ours(source.get(m.sources[0]))
    out = np.empty((len(m.sources),) + first.shape, dtype=dtype or first.dtype)
    out[0] = first
    del first
    for i, key in enumerate(m.sources[1:], start=1):
        out[i] = m.to_ours(source.get(key))
    return out


def _source_dtype(source: TensorSource, maps: Sequence[ParamMap]) -> np.dtype:
    """The dtype of the largest source tensor (kept when no --dtype is given)."""
    key = max((k for m in maps for k in m.sources), key=lambda k: int(np.prod(source.shape(k))))
    return source.dtype(key)


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include a parent's pre-exec peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _release_memory() -> None:
    """Give freed buffers back to the OS between parameters (glibc keeps them otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _copy_side_files(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy the non-weight files (config, generation config, tokenizer) of ``src`` into ``dst``."""
    weights = set(iter_weight_files(src))
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f not in weights and f.suffix in SIDE_FILE_SUFFIXES and f.name not in skip:
            shutil.copy2(f, dst / f.name)


def check_hf(spec: Kind, cdir: Path, config, expected: dict | None = None):
    """(tensor source, param maps) of the HF directory ``cdir`` for ``config``, after checking
    the whole conversion plan against the file headers. ``expected``: {path: ShapeDtypeStruct}
    when the caller already built the abstract parameters (else ``spec.abstract_params``)."""
    source = TensorSource(cdir)
    maps = spec.param_maps(config)
    try:
        plan(source, maps, spec.abstract_params(config) if expected is None else expected,
             where=str(cdir), buffers=spec.buffers(config))
    except CheckpointError:
        source.close()
        raise
    return source, maps


def source_dtype_name(source: TensorSource, maps: Sequence[ParamMap]) -> str | None:
    """The name of the stored dtype (of the largest tensor present), if it is one we keep. Safe
    before :func:`plan` has checked the keys."""
    available = set(source.keys())
    present = [k for m in maps for k in m.sources if k in available]
    if not present:
        return None
    key = max(present, key=lambda k: int(np.prod(source.shape(k))))
    return {v: k for k, v in NUMPY_DTYPES.items()}.get(np.dtype(source.dtype(key)))


def _open_checked(src: Path, kind: str | None, dtype: str | None):
    """(kind, config dir, typed config, tensor source, param maps, target numpy dtype) of a HF
    checkpoint, after checking the whole conversion plan against the file headers."""
    spec, cdir, hf = resolve_kind(src, kind)
    config = spec.read_config(cdir, hf)
    source, maps = check_hf(spec, cdir, config)
    target = NUMPY_DTYPES[dtype] if dtype else _source_dtype(source, maps)
    return spec, cdir, config, source, maps, target


def check_destination(dst: Path, overwrite: bool, sources: Sequence[Path] = ()) -> Path:
    """``dst`` with symlinks resolved, after refusing a destination that is (inside, or holds) one
    of ``sources``, a file, or a non-empty directory without ``overwrite``. Reads nothing else."""
    real = Path(dst).resolve()
    for src in sources:
        s = Path(src).resolve()
        if real == s:
            raise CheckpointError(f"destination {dst} is the source {src}; write to another directory")
        if s in real.parents:
            raise CheckpointError(f"destination {dst} is inside the source {src}; write outside it")
        if real in s.parents:
            raise CheckpointError(f"destination {dst} contains the source {src}; writing there would "
                                  f"replace the source")
    if real.exists() and not real.is_dir():
        raise CheckpointError(f"destination {dst} is a file, not a directory")
    if real.is_dir() and any(real.iterdir()) and not overwrite:
        raise CheckpointError(f"destination {dst} exists and is not empty (use --overwrite)")
    for parent in real.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CheckpointError(f"destination {dst}: {parent} is a file, not a directory")
            break
    return real


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.EIO}


def disk_error(e: BaseException) -> str | None:
    """A short reason when ``e`` is a storage failure (no space, quota, permissions, read-only)
    raised as an OSError or reported by TensorStore/Orbax in a message; else None."""
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        return os.strerror(e.errno).lower() + (f" ({e.filename})" if e.filename else "")
    match = _OS_ERROR_CODE.search(str(e))
    if match and int(match.group(1)) in DISK_ERRNOS:
        return os.strerror(int(match.group(1))).lower()
    if "No space left on device" in str(e):
        return "no space left on device"
    return None


@contextlib.contextmanager
def staged_destination(dst: str | Path, *, overwrite: bool, sources: Sequence[Path] = ()):
    """Yield a fresh folder beside ``dst`` to write into; after the block succeeds it replaces
    ``dst`` (an existing one is renamed aside, the new one renamed in, then the old one deleted).
    On any failure the folder is removed and ``dst`` is left untouched; a storage failure becomes
    a :class:`CheckpointError` naming ``dst``."""
    real = check_destination(Path(dst), overwrite, sources)
    created = [p for p in reversed(real.parents) if not p.exists()]
    real.parent.mkdir(parents=True, exist_ok=True)

    def fresh(tag: str) -> Path:
        while True:
            p = real.parent / f".{real.name}.{tag}-{os.getpid()}-{secrets.token_hex(3)}"
            if not p.exists():
                return p

    tmp = fresh("tmp")
    try:
        tmp.mkdir()
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()
        reason = disk_error(e) if isinstance(e, Exception) and not isinstance(e, CheckpointError) else None
        if reason is not None:
            raise CheckpointError(f"cannot write {dst}: {reason}; {dst} was left as it was") from None
        raise
    old = None
    try:
        if real.exists():
            old = fresh("old")
            os.rename(real, old)
        os.rename(tmp, real)
    except OSError as e:
        if old is not None and not real.exists():
            os.rename(old, real)
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot move the new checkpoint into {dst}: {e}; {dst} was left as it "
                              f"was") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def scan_param(m: ParamMap, array: np.ndarray, bad: dict[str, int], checksum: bool = True) -> dict | None:
    """Count the non-finite values of each reference tensor of ``array`` (one parameter in our
    layout) into ``bad`` {key: count}; returns the parameter's checksum record (or None)."""
    crc = 0 if checksum else None
    parts = [(k, array[i]) for i, k in enumerate(m.sources)] if m.stacked else [(m.sources[0], array)]
    for key, part in parts:
        crc, n = scan_array(part, crc)
        if n:
            bad[key] = bad.get(key, 0) + n
    return checksum_record(array, crc) if checksum else None


def nonfinite_error(where: str, bad: dict[str, int], hint: str) -> CheckpointError:
    return CheckpointError(f"{where}: {len(bad)} tensor(s) hold non-finite values (NaN/Inf); {hint}:\n"
                           + describe_nonfinite(bad))


def write_checksums(directory: Path, records: dict[str, dict]) -> None:
    (Path(directory) / CHECKSUMS_FILE).write_text(
        json.dumps({"algorithm": CHECKSUM_ALGORITHM, "params": records}, indent=1, sort_keys=True) + "\n")


def convert_to_orbax(src: str | Path, dst: str | Path, *, kind: str | None = None,
                     dtype: str | None = None, overwrite: bool = False, allow_nonfinite: bool = False,
                     log: Callable[[str], None] = print, flush_bytes: int = 512 * 1024**2):
    """Convert a HF checkpoint directory into our Orbax checkpoint; returns the typed config.

    ``DST/params`` is an Orbax checkpoint (``_CHECKPOINT_METADATA``) whose ``state`` item holds
    the parameter tree, written in pieces by Orbax's partial save (the layout ``save_model``
    writes too; :mod:`mmada_jax.checkpoints` reads it). Written beside ``dst`` and swapped in at
    the end (see the module docstring); NaN/Inf values fail it unless ``allow_nonfinite``."""
    from orbax.checkpoint.experimental.v1 import partial

    src, dst = Path(src), Path(dst)
    check_destination(dst, overwrite, [src])
    spec, cdir, config, source, maps, target = _open_checked(src, kind, dtype)
    try:
        dtype_name = {v: k for k, v in NUMPY_DTYPES.items()}.get(np.dtype(target))
        if dtype_name is None:
            raise CheckpointError(f"{cdir}: weights are {target}; pass --dtype float32|bfloat16")
        fields = {f.name for f in dataclasses.fields(config)}
        config = dataclasses.replace(config, **{k: dtype_name for k in ("param_dtype", "dtype") if k in fields})
        log(f"converting {cdir} ({source.format}, kind {spec.name}, {len(source.keys())} tensors) "
            f"-> {dst} as {dtype_name}")
        with staged_destination(dst, overwrite=overwrite, sources=[src]) as out:
            start, done, pending, pending_bytes = time.time(), 0, {}, 0
            params_dir = out / PARAMS_DIR
            bad: dict[str, int] = {}
            checksums: dict[str, dict] = {}
            for i, m in enumerate(maps):
                array = assemble(source, m, target)
                checksums[".".join(m.path)] = scan_param(m, array, bad)
                failing = bad and not allow_nonfinite   # keep scanning to list every bad tensor
                if not failing:
                    pending[m.path] = array
                    pending_bytes += array.nbytes
                    done += array.nbytes
                del array
                if not failing and (pending_bytes >= flush_bytes or i == len(maps) - 1) and pending:
                    partial.save(params_dir, nest(pending))
                    pending, pending_bytes = {}, 0
                    _release_memory()
                    log(f"  [{i + 1}/{len(maps)}] {'.'.join(m.path)}  {done / 1e9:.2f} GB written, "
                        f"{time.time() - start:.1f}s, peak RSS {peak_rss_gb():.2f} GB")
            if bad and not allow_nonfinite:
                raise nonfinite_error(str(cdir), bad, f"nothing was written to {dst} (pass --allow-nonfinite "
                                                      f"to convert anyway)")
            if bad:
                log(f"warning: {len(bad)} tensor(s) hold non-finite values (NaN/Inf), converted as they are "
                    f"(--allow-nonfinite):\n{describe_nonfinite(bad)}")
            partial.finalize(params_dir)
            _copy_side_files(cdir, out / HF_DIR)
            save_config(config, out)
            write_checksums(out, checksums)
    finally:
        source.close()
    log(f"done in {time.time() - start:.1f}s, peak RSS {peak_rss_gb():.2f} GB")
    return config


def save_config(config, dst: Path) -> None:
    config.to_yaml(Path(dst) / CONFIG_FILE)


def export_to_hf(src, dst: str | Path, *, dtype: str | None = None,
                 max_shard_bytes: int = 5 * 1024**3, overwrite: bool = False, allow_nonfinite: bool = False,
                 log: Callable[[str], None] = print, restore_bytes: int = 256 * 1024**2):
    """Write our checkpoint back as a HF directory with the reference key names and config.

    ``src``: a converted checkpoint, a training run folder or one training checkpoint (or an
    opened :class:`mmada_jax.checkpoints.Checkpoint`); the parameters are read through
    :func:`mmada_jax.checkpoints.read_params`, a group of ~``restore_bytes`` at a time, each
    parameter checked against its checksum and for NaN/Inf (unless ``allow_nonfinite``). Written
    beside ``dst`` and swapped in at the end (see the module docstring)."""
    from .checkpoints import Checkpoint, open_checkpoint, read_params   # checkpoints imports this module

    dst = Path(dst)
    sources = [] if isinstance(src, Checkpoint) else [Path(src)]
    check_destination(dst, overwrite, sources)
    ckpt = src if isinstance(src, Checkpoint) else open_checkpoint(src)
    sources.append(ckpt.path)
    check_destination(dst, overwrite, sources)
    if ckpt.format == "hf":
        raise CheckpointError(f"{ckpt.path}: already a Hugging Face checkpoint ({ckpt.kind}); --to-hf "
                              f"exports a converted checkpoint, a training run or a training checkpoint")
    config = ckpt.config
    spec = KINDS[config.kind]
    maps = spec.param_maps(config)
    abstract = spec.abstract_params(config)
    np_dtype = NUMPY_DTYPES[dtype] if dtype else None

    want = np_dtype or np.dtype(getattr(config, "param_dtype", "float32"))

    def groups() -> Iterator[list[ParamMap]]:
        """Consecutive maps restored together (one Orbax read per ~restore_bytes, so models
        with hundreds of small parameters export quickly; a big parameter is read alone)."""
        group, size = [], 0
        for m in maps:
            group.append(m)
            size += int(np.prod(abstract[m.path].shape)) * want.itemsize
            if size >= restore_bytes:
                yield group
                group, size = [], 0
        if group:
            yield group

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for group in groups():
            target = nest({m.path: jax.ShapeDtypeStruct(abstract[m.path].shape, want) for m in group})
            restored = flatten(read_params(ckpt, target, as_numpy=True, allow_nonfinite=allow_nonfinite))
            for m in group:
                array = restored.pop(m.path)
                if m.stacked:
                    for i, key in enumerate(m.sources):
                        yield key, m.to_hf(array[i])
                else:
                    yield m.sources[0], m.to_hf(array)
                del array
            del restored
        if spec.export_buffers:
            yield from spec.buffers(config).items()

    final_dir = dst / spec.subfolder if spec.subfolder else dst
    log(f"exporting {ckpt.path} ({ckpt.format}) -> {final_dir}")
    with staged_destination(dst, overwrite=overwrite, sources=sources) as out:
        out_dir = out / spec.subfolder if spec.subfolder else out
        names = write_safetensors_shards(out_dir, tensors(), max_shard_bytes, prefix=spec.weights_prefix)
        side = ckpt.side_dir
        if side is not None and side.is_dir():
            _copy_side_files(side, out_dir, skip=("config.json",))
        base = _read_json(side / "config.json") if side is not None and (side / "config.json").exists() else None
        hf = spec.hf_config(config, base)
        if "torch_dtype" in hf or base is None:
            hf["torch_dtype"] = dtype or getattr(config, "param_dtype", "float32")
        (out_dir / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    log(f"wrote {len(names)} safetensors file(s) and config.json")
    return final_dir


def params_from_hf(src: str | Path, *, kind: str | None = None, dtype: str | None = None,
                   allow_nonfinite: bool = False):
    """(config, {path: numpy array}) read from a HF directory in memory (no Orbax round trip);
    NaN/Inf values raise :class:`CheckpointError` listing the tensors unless ``allow_nonfinite``."""
    _, cdir, config, source, maps, target = _open_checked(Path(src), kind, dtype)
    try:
        params, bad = {}, {}
        for m in maps:
            params[m.path] = assemble(source, m, target)
            scan_param(m, params[m.path], bad, checksum=False)
    finally:
        source.close()
    if bad and not allow_nonfinite:
        raise nonfinite_error(str(cdir), bad, "pass allow_nonfinite=True to load it anyway")
    return config, params

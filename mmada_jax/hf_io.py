"""Reading and writing Hugging Face checkpoint directories, one tensor at a time.

Reads: sharded safetensors (``*.safetensors.index.json``), single safetensors files, and
``pytorch_model*.bin`` (optionally sharded) through ``torch.load(weights_only=True, mmap=True)``
when torch is installed; nothing else unpickles. Tensor shapes and dtypes come from the file
headers, so a checkpoint can be checked completely before any data is read. Writes: safetensors
shards of bounded size plus the index, with the ``{"format": "pt"}`` metadata PyTorch loaders
expect.

Also the vocabulary shared by every checkpoint family: :class:`ParamMap` (one of our parameters
<- its reference key(s)), :class:`Kind` (how one family maps onto our parameter tree; the table of
kinds is :data:`mmada_jax.convert.KINDS`), and :func:`nest` / :func:`flatten` between nested
parameter dicts and ``{path tuple: leaf}``.

Every failure raises :class:`CheckpointError` naming the directory, file and key.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import ml_dtypes
import numpy as np

SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be converted or loaded; the message names what is wrong."""


# ------------------------------------------------------------------ nested parameter dicts

def nest(flat: dict[tuple, Any]) -> dict:
    """``{(a, b, c): leaf}`` -> ``{a: {b: {c: leaf}}}``."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    """``{a: {b: {c: leaf}}}`` -> ``{(a, b, c): leaf}`` (the inverse of :func:`nest`)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


# ------------------------------------------------------------------ checkpoint families

@dataclasses.dataclass(frozen=True)
class ParamMap:
    """Our parameter at ``path`` <- reference key(s) ``sources`` (several: stacked on axis 0).

    ``perm`` permutes the axes of each reference tensor into our layout (``(1, 0)`` for a torch
    Linear ``[out, in]`` -> ``[in, out]``; ``(2, 3, 1, 0)`` for a conv OIHW -> HWIO).
    """

    path: tuple[str, ...]
    sources: tuple[str, ...]
    perm: tuple[int, ...] | None = None
    stacked: bool = False

    def to_ours(self, a: np.ndarray) -> np.ndarray:
        return a if self.perm is None else np.ascontiguousarray(np.transpose(a, self.perm))

    def to_hf(self, a: np.ndarray) -> np.ndarray:
        return a if self.perm is None else np.ascontiguousarray(np.transpose(a, np.argsort(self.perm)))

    def shape_to_ours(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape) if self.perm is None else tuple(shape[i] for i in self.perm)

    def shape_to_hf(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape) if self.perm is None else tuple(shape[i] for i in np.argsort(self.perm))


@dataclasses.dataclass(frozen=True)
class Kind:
    """How one checkpoint family converts. ``read_config(src_dir, hf_config)`` -> typed config;
    ``param_maps(config)``; ``abstract_params(config)`` -> {path: ShapeDtypeStruct};
    ``hf_config(config, base)`` -> the reference config dict; ``subfolder``: where the weights
    and config live inside a checkpoint directory (``vqvae`` for diffusers). ``buffers(config)``
    -> {reference key: array}: non-parameter tensors of the reference state dict that follow
    from the config (MAGVIT-v2's LFQ codebook); optional in a source, checked against these
    values when present, and written by the export unless ``export_buffers`` is False (CLIP's
    ``position_ids``, which transformers no longer saves). ``image_tokenizer``: a VQ kind
    (loaded with ``load_vq``), not a transformer (``load_model``)."""

    name: str
    read_config: Callable[[Path, dict], Any]
    param_maps: Callable[[Any], list[ParamMap]]
    abstract_params: Callable[[Any], dict[tuple[str, ...], Any]]
    hf_config: Callable[[Any, dict | None], dict]
    detect: Callable[[Path, dict], bool] = lambda src, hf: False
    subfolder: str | None = None
    weights_prefix: str = "model"
    buffers: Callable[[Any], dict[str, np.ndarray]] = lambda config: {}
    image_tokenizer: bool = False
    export_buffers: bool = True


def _header_entry(path: Path, key: str, info: Any) -> tuple[tuple[int, ...], np.dtype, int, int]:
    """(shape, dtype, begin, stop) of one safetensors header entry, every field checked."""
    where = f"{path}: tensor {key!r}"
    if not isinstance(info, dict):
        raise CheckpointError(f"{where}: header entry is a {type(info).__name__}, not an object "
                              f"with dtype, shape and data_offsets")
    if "dtype" not in info:
        raise CheckpointError(f"{where}: header entry has no 'dtype'")
    dtype = SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise CheckpointError(f"{where} has unsupported dtype {info['dtype']!r}")
    shape = info.get("shape")
    if "shape" not in info:
        raise CheckpointError(f"{where}: header entry has no 'shape'")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in shape):
        raise CheckpointError(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    offsets = info.get("data_offsets")
    if "data_offsets" not in info:
        raise CheckpointError(f"{where}: header entry has no 'data_offsets'")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in offsets)
            or offsets[0] > offsets[1]):
        raise CheckpointError(f"{where}: 'data_offsets' must be [begin, end] byte offsets, got {offsets!r}")
    return tuple(shape), np.dtype(dtype), offsets[0], offsets[1]


def _read_safetensors_header(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """{key: (shape, dtype, absolute byte offset)} from a safetensors header, every entry checked
    (dtype, shape, data_offsets) and checked against the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > size - 8:
                raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of "
                                      f"{header_len} bytes in a {size}-byte file)")
            header = json.loads(fh.read(header_len))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header: a JSON {type(header).__name__}, "
                              f"not an object of tensors")
    out, end = {}, 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        shape, dtype, begin, stop = _header_entry(path, key, info)
        if stop - begin != int(np.prod(shape)) * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {key!r}: {stop - begin} bytes for shape {list(shape)}")
        out[key] = (shape, dtype, 8 + header_len + begin)
        end = max(end, stop)
    if 8 + header_len + end > size:
        raise CheckpointError(f"{path}: truncated safetensors file: the header needs "
                              f"{8 + header_len + end} bytes, the file has {size}")
    return out


def _torch():
    try:
        import torch
    except ImportError:
        raise CheckpointError("reading pytorch_model*.bin needs torch: pip install -e '.[torch]' "
                              "(or convert the checkpoint to safetensors)") from None
    return torch


def _torch_to_numpy(tensor) -> np.ndarray:
    torch = _torch()
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.contiguous().numpy()


class TensorSource:
    """Lazy, read-only access to the tensors of a HF checkpoint directory."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory not found: {self.directory}")
        self.files: dict[str, Path] = {}       # key -> file
        self.meta: dict[str, tuple] = {}   # key -> (shape, dtype[, byte offset in a safetensors file])
        self._torch_cache: dict[Path, dict] = {}
        self.format = self._discover()

    # discovery -------------------------------------------------------------
    def _discover(self) -> str:
        d = self.directory
        for fmt, index_glob, files_glob, header in (
                ("safetensors", "*.safetensors.index.json", "*.safetensors", _read_safetensors_header),
                ("bin", "pytorch_model*.bin.index.json", "pytorch_model*.bin", self._bin_header)):
            name = "safetensors" if fmt == "safetensors" else "pytorch bin"
            index = sorted(d.glob(index_glob))
            if index:
                self._from_index(index[0], fmt=fmt)
                return f"{name} (sharded)"
            files = sorted(d.glob(files_glob))
            if files:
                for f in files:
                    self._add_file(f, header(f))
                return name
        raise CheckpointError(f"{d}: no weights found (expected *.safetensors, a "
                              f"model.safetensors.index.json or pytorch_model*.bin)")

    def _from_index(self, index_path: Path, fmt: str) -> None:
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, OSError) as e:
            raise CheckpointError(f"{index_path}: not a valid index file ({e!r})") from None
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (self.directory / s).exists()]
        if missing:
            raise CheckpointError(f"{index_path.name} refers to shard(s) missing from "
                                  f"{self.directory}: {', '.join(missing)}")
        for shard in shards:
            path = self.directory / shard
            header = _read_safetensors_header(path) if fmt == "safetensors" else self._bin_header(path)
            listed = {k for k, v in weight_map.items() if v == shard}
            absent = sorted(listed - set(header))
            if absent:
                raise CheckpointError(f"{path}: {index_path.name} lists key(s) not in this shard: "
                                      f"{', '.join(absent[:10])}")
            self._add_file(path, header)

    def _add_file(self, path: Path, header: dict) -> None:
        for key, meta in header.items():
            if key in self.files and self.files[key] != path:
                raise CheckpointError(f"{self.directory}: key {key!r} is in both "
                                      f"{self.files[key].name} and {path.name}")
            self.files[key] = path
            self.meta[key] = meta

    def _bin_header(self, path: Path) -> dict:
        state = self._load_bin(path)
        return {k: (tuple(v.shape), np.dtype(_torch_to_numpy(v.reshape(-1)[:0]).dtype))
                for k, v in state.items()}

    def _load_bin(self, path: Path) -> dict:
        if path not in self._torch_cache:
            torch = _torch()
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # noqa: BLE001 - torch raises many kinds
                raise CheckpointError(f"{path}: cannot load with torch.load(weights_only=True): {e}") from None
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            if not isinstance(state, dict):
                raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
            self._torch_cache[path] = state
        return self._torch_cache[path]

    # access ----------------------------------------------------------------
    def keys(self) -> list[str]:
        return sorted(self.files)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.meta[key][0]

    def dtype(self, key: str) -> np.dtype:
        return self.meta[key][1]


    def get(self, key: str) -> np.ndarray:
        """One tensor as a numpy array (bf16 as ml_dtypes.bfloat16).

        Safetensors data is read with plain file reads (no memory map), so only the tensor itself
        is resident: converting an 8B checkpoint never maps whole 5 GB shards into memory.
        """
        if key not in self.files:
            raise CheckpointError(f"{self.directory}: no tensor named {key!r}")
        path = self.files[key]
        if path.suffix == ".bin":
            return _torch_to_numpy(self._load_bin(path)[key])
        shape, dtype, offset = self.meta[key]
        count = int(np.prod(shape))
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                array = np.fromfile(fh, dtype=dtype, count=count)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read tensor {key!r}: {e}") from None
        if array.size != count:
            raise CheckpointError(f"{path}: truncated while reading tensor {key!r}")
        return array.reshape(shape)

    def close(self) -> None:
        self._torch_cache.clear()


def write_safetensors_shards(directory: str | Path, tensors: Iterable[tuple[str, np.ndarray]],
                             max_shard_bytes: int = 5 * 1024**3,
                             prefix: str = "model") -> list[str]:
    """Write (key, array) pairs as ``{prefix}-0000k-of-0000N.safetensors`` + index (streaming).

    Arrays are buffered only up to ``max_shard_bytes``. A single shard is written as
    ``{prefix}.safetensors`` without an index, as ``save_pretrained`` does.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, list[str]]] = []
    buffer: dict[str, np.ndarray] = {}
    size = total = 0

    def flush():
        nonlocal buffer, size
        if buffer:
            path = directory / f"{prefix}-shard{len(written):05d}.tmp.safetensors"
            save_file(buffer, str(path), metadata={"format": "pt"})
            written.append((path, list(buffer)))
            buffer, size = {}, 0

    for key, array in tensors:
        nbytes = array.nbytes
        if buffer and size + nbytes > max_shard_bytes:
            flush()
        buffer[key] = np.ascontiguousarray(array).reshape(np.shape(array))   # keeps 0-d tensors 0-d
        size += nbytes
        total += nbytes
    flush()
    if len(written) == 1:
        final = directory / f"{prefix}.safetensors"
        written[0][0].rename(final)
        return [final.name]
    weight_map, names = {}, []
    for i, (path, keys) in enumerate(written):
        name = f"{prefix}-{i + 1:05d}-of-{len(written):05d}.safetensors"
        path.rename(directory / name)
        names.append(name)
        weight_map.update({k: name for k in keys})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return names


# ------------------------------------------------------------------ integrity

CHECKSUM_ALGORITHM = "crc32"
MAX_LISTED = 20   # offending tensors named in one error message


_EXPONENT_MASKS = {np.dtype(np.float32): (np.uint32, np.uint32(0x7F800000)),
                   np.dtype(ml_dtypes.bfloat16): (np.uint16, np.uint16(0x7F80)),
                   np.dtype(np.float16): (np.uint16, np.uint16(0x7C00)),
                   np.dtype(np.float64): (np.uint64, np.uint64(0x7FF0000000000000))}


def scan_array(array: np.ndarray, crc: int | None = 0,
               chunk_elements: int = 1 << 24) -> tuple[int | None, int]:
    """(CRC-32 of the array's C-order bytes, number of non-finite values), in one pass over
    chunks of the flattened array (bounded temporary memory for multi-GB parameters).
    ``crc``: the running CRC to continue (consecutive slices of one array chain into the CRC of
    the whole); None: count the non-finite values only."""
    flat = np.ascontiguousarray(array).reshape(-1)
    bad = 0
    exponent = _EXPONENT_MASKS.get(np.dtype(flat.dtype))   # all exponent bits set: NaN or Inf
    floating = np.issubdtype(flat.dtype, np.floating) or flat.dtype == ml_dtypes.bfloat16
    for start in range(0, max(flat.size, 1), chunk_elements):
        part = flat[start:start + chunk_elements]
        if crc is not None:
            crc = zlib.crc32(part.view(np.uint8), crc)
        if exponent is not None and part.size:
            uint, mask = exponent
            bad += int(np.count_nonzero((part.view(uint) & mask) == mask))
        elif floating and part.size:
            bad += int(part.size - np.count_nonzero(np.isfinite(part)))
    return (None if crc is None else crc & 0xFFFFFFFF), bad


def checksum_record(array, crc: int | None = None) -> dict:
    """The checksum entry of one parameter: algorithm value, dtype and shape as saved. ``array``:
    anything with shape and dtype when ``crc`` is given, else a numpy array (scanned here)."""
    if crc is None:
        crc = scan_array(np.asarray(array))[0]
    return {CHECKSUM_ALGORITHM: int(crc), "dtype": np.dtype(array.dtype).name, "shape": list(array.shape)}


def check_scanned(where: str, name: str, array, crc: int | None, bad: int, record: dict | None, *,
                  allow_nonfinite: bool = False) -> None:
    """Raise :class:`CheckpointError` (naming checkpoint ``where`` and parameter ``name``) when a
    parameter read back (``array``: its shape and dtype; ``crc``, ``bad``: its CRC-32 and count of
    non-finite values, see :func:`scan_array`) does not match its checksum ``record`` (None: not
    recorded) or holds non-finite values (unless ``allow_nonfinite``)."""
    if record is not None:
        if (list(array.shape) != list(record.get("shape", array.shape))
                or np.dtype(array.dtype).name != record.get("dtype", np.dtype(array.dtype).name)
                or crc != record.get(CHECKSUM_ALGORITHM)):
            raise CheckpointError(f"checkpoint {where}: parameter {name} does not match its checksum "
                                  f"(the file is corrupted)")
    if bad and not allow_nonfinite:
        raise CheckpointError(f"checkpoint {where}: parameter {name} holds {bad} non-finite value(s) "
                              f"(NaN/Inf); pass allow_nonfinite=True to load it anyway")


def describe_nonfinite(bad: dict[str, int], what: str = "tensor") -> str:
    """``"  - key: 3 non-finite value(s)"`` lines for at most :data:`MAX_LISTED` entries."""
    lines = [f"  - {what} {k}: {n} non-finite value(s) (NaN/Inf)" for k, n in list(bad.items())[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    return "\n".join(lines)


def iter_weight_files(directory: Path) -> Iterator[Path]:
    for pattern in ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth"):
        yield from directory.glob(pattern)

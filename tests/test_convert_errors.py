"""convert_torch_weights.py on bad input: one table of damaged sources and destinations, each a
clear ``error: ...`` naming the file / key / path with exit status 2 (1 for an internal error),
the source never modified and a failing run leaving DST exactly as it was (no temp folder left)."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import convert_torch_weights
from conftest import golden_path
from mmada_jax import CheckpointError, load_model
from mmada_jax import convert

pytestmark = pytest.mark.golden
SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
LAST_KEY = "model.transformer.ff_out.weight"          # lm_head: the last parameter converted


def _snapshot(path: Path) -> dict[str, str] | None:
    """{relative path: sha256} of every file under ``path`` (a file: itself); None if absent."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


def _edit_header(path: Path, edit) -> None:
    """Rewrite a safetensors file's JSON header with ``edit(header) -> new header`` (data kept)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.dumps(edit(json.loads(raw[8:8 + n]))).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw[8 + n:])


def _first_key(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


def _drop_offsets(h):
    del h[_first_key(h)]["data_offsets"]
    return h


def _shape_as_string(h):
    h[_first_key(h)]["shape"] = "64x64"
    return h


def _set_nan(src: Path, key: str, count: int = 3) -> None:
    shard = next(f for f in (src / SHARD1, src / SHARD2) if key in load_file(str(f)))
    tensors = load_file(str(shard))
    tensors[key] = tensors[key].copy()
    tensors[key].reshape(-1)[:count] = [np.nan, np.inf, -np.inf][:count]
    save_file(tensors, str(shard))


def _converted(tmp_path: Path, src: Path) -> Path:
    out = tmp_path / "ours"
    convert.convert_to_orbax(src, out, log=lambda *_: None)
    return out


def _largest_data_file(ckpt: Path) -> Path:
    return max((f for f in (ckpt / "params").rglob("d/*") if f.is_file()), key=lambda f: f.stat().st_size)


def _existing_dst(tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("user data")
    return dst


# Each setup(tmp_path, src, monkeypatch) damages the input and returns (argv, dst).
def _header(edit):
    def setup(tmp, src, mp):
        _edit_header(src / SHARD1, edit)
        return [src, tmp / "out"], tmp / "out"
    return setup


def _raw_header(data: bytes, length: int | None = None):
    def setup(tmp, src, mp):
        raw = (src / SHARD1).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        (src / SHARD1).write_bytes(struct.pack("<Q", len(data) if length is None else length) + data + raw[8 + n:])
        return [src, tmp / "out"], tmp / "out"
    return setup


def _truncated(tmp, src, mp):
    data = (src / SHARD1).read_bytes()
    (src / SHARD1).write_bytes(data[:-1000])
    return [src, tmp / "out"], tmp / "out"


def _q_key(src: Path) -> str:
    """A q_proj weight of the checkpoint: block 1, or block 0 of a one-block model (from its config)."""
    n_layers = json.loads((src / "config.json").read_text())["n_layers"]
    return f"model.transformer.blocks.{min(1, n_layers - 1)}.q_proj.weight"


def _nan(*flags):
    def setup(tmp, src, mp):
        _set_nan(src, _q_key(src))
        _set_nan(src, "model.transformer.wte.weight", 1)
        return [src, tmp / "out", *flags], tmp / "out"
    return setup


def _dst_is_src(tmp, src, mp):
    return [src, src, "--overwrite"], src


def _dst_symlink_to_src(tmp, src, mp):
    (tmp / "link").symlink_to(src, target_is_directory=True)
    return [src, tmp / "link", "--overwrite"], tmp / "link"


def _dst_inside_src(tmp, src, mp):
    return [src, src / "sub" / "out", "--overwrite"], src / "sub" / "out"


def _dst_contains_src(tmp, src, mp):
    outer = tmp / "outer"
    outer.mkdir()
    moved = outer / "src"
    src.rename(moved)
    (tmp / "src").symlink_to(moved, target_is_directory=True)   # the snapshot still sees the source
    return [f"{outer}/../outer/src", outer, "--overwrite"], outer


def _dst_is_file(tmp, src, mp):
    (tmp / "out").write_text("a user's file")
    return [src, tmp / "out", "--overwrite"], tmp / "out"


def _dst_exists(tmp, src, mp):
    return [src, _existing_dst(tmp)], tmp / "out"


def _fails_mid_conversion(tmp, src, mp):
    """The last tensor holds NaN; each parameter is flushed on its own, so the new checkpoint is
    half written in the temp folder when the failure comes."""
    _set_nan(src, LAST_KEY)
    mp.setitem(convert.convert_to_orbax.__kwdefaults__, "flush_bytes", 1)
    saves = []
    from orbax.checkpoint.experimental.v1 import partial
    original = partial.save
    mp.setattr(partial, "save", lambda *a, **k: (saves.append(1), original(*a, **k))[1])
    mp.setattr(convert_torch_weights, "_saves", saves, raising=False)
    return [src, _existing_dst(tmp), "--overwrite"], tmp / "out"


def _to_hf_truncated(tmp, src, mp):
    ours = _converted(tmp, src)
    data = _largest_data_file(ours)
    data.write_bytes(data.read_bytes()[:1000])
    return [ours, tmp / "out", "--to-hf"], tmp / "out"


def _to_hf_flipped(tmp, src, mp):
    ours = _converted(tmp, src)
    data = _largest_data_file(ours)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    return [ours, _existing_dst(tmp), "--to-hf", "--overwrite"], tmp / "out"


def _disk_full(tmp, src, mp):
    from orbax.checkpoint.experimental.v1 import partial

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "somewhere"))
    mp.setattr(partial, "save", full)
    return [src, _existing_dst(tmp), "--overwrite"], tmp / "out"


def _disk_full_to_hf(tmp, src, mp):
    import safetensors.numpy
    ours = _converted(tmp, src)

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    mp.setattr(safetensors.numpy, "save_file", full)
    return [ours, _existing_dst(tmp), "--to-hf", "--overwrite"], tmp / "out"


def _internal_bug(tmp, src, mp):
    def bug(*args, **kw):
        raise KeyError("a bug, not bad input")
    mp.setattr(convert, "assemble", bug)
    return [src, tmp / "out"], tmp / "out"


ROWS = [
    # id, setup, fragments expected in the output, exit status
    ("header-without-data_offsets", _header(_drop_offsets), [SHARD1, "data_offsets", "tensor '"], 2),
    ("header-shape-not-a-list", _header(_shape_as_string), [SHARD1, "'shape'", "'64x64'"], 2),
    ("header-is-a-json-list", _raw_header(b"[1, 2, 3]"), [SHARD1, "a JSON list, not an object"], 2),
    ("header-not-json", _raw_header(b"{not json"), [SHARD1, "cannot read safetensors header"], 2),
    ("header-longer-than-file", _raw_header(b"{}", length=1 << 40), [SHARD1, "truncated or corrupt"], 2),
    ("truncated-safetensors", _truncated, [SHARD1, "truncated"], 2),
    ("nan-weights", _nan(), ["{q_key}: 3 non-finite",
                             "model.transformer.wte.weight: 1 non-finite", "2 tensor(s)", "--allow-nonfinite"], 2),
    ("nan-weights-allowed", _nan("--allow-nonfinite"), ["warning: 2 tensor(s) hold non-finite values",
                                                       "{q_key}"], 0),
    ("dst-is-src", _dst_is_src, ["is the source"], 2),
    ("dst-symlink-to-src", _dst_symlink_to_src, ["link", "is the source"], 2),
    ("dst-inside-src", _dst_inside_src, ["is inside the source"], 2),
    ("dst-contains-src", _dst_contains_src, ["outer", "contains the source"], 2),
    ("dst-is-a-file", _dst_is_file, ["out is a file, not a directory"], 2),
    ("dst-exists-without-overwrite", _dst_exists, ["exists and is not empty (use --overwrite)"], 2),
    ("fails-mid-conversion-overwrite", _fails_mid_conversion, [LAST_KEY, "non-finite", "nothing was written"], 2),
    ("to-hf-truncated-orbax", _to_hf_truncated, ["ours: cannot read parameters", "truncated or damaged"], 2),
    ("to-hf-flipped-byte", _to_hf_flipped, ["ours: parameter", "does not match its checksum"], 2),
    ("disk-full", _disk_full, ["cannot write", "out: no space left on device", "left as it was"], 2),
    ("disk-full-to-hf", _disk_full_to_hf, ["cannot write", "out: no space left on device"], 2),
    ("internal-error", _internal_bug, ["internal error: KeyError", "Traceback"], 1),
]


@pytest.mark.parametrize("name,setup,fragments,status", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_a_named_error(name, setup, fragments, status, tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(golden_path("mmada_tiny"), src)
    argv, dst = setup(tmp_path, src, monkeypatch)
    src_before, dst_before = _snapshot(src), _snapshot(dst)
    parent = dst.resolve().parent
    siblings = sorted(p.name for p in parent.iterdir()) if parent.exists() else None

    code = convert_torch_weights.run_guarded(lambda: convert_torch_weights.main([str(a) for a in argv]))
    out, err = capsys.readouterr()
    text = out + err
    print(f"[{name}] exit {code}: {err.strip()[:400] if code else out.strip().splitlines()[-1]}")   # -s: the report

    assert code == status, text
    for fragment in fragments:
        fragment = fragment.replace("{q_key}", _q_key(golden_path("mmada_tiny")))
        assert fragment in text, f"{fragment!r} not in output:\n{text}"
    assert _snapshot(src) == src_before, "the source was modified"
    if status:
        assert err.startswith("internal error: " if status == 1 else "error: "), err
        if status == 2:
            assert "Traceback" not in err and len(err.splitlines()) <= 25, err
        assert _snapshot(dst) == dst_before, "a failed run changed DST"
        now = sorted(p.name for p in parent.iterdir()) if parent.exists() else None
        assert now == siblings, f"left behind: {set(now or ()) - set(siblings or ())}"
    if name == "fails-mid-conversion-overwrite":
        assert len(convert_torch_weights._saves) >= 5, "the conversion should fail after writing started"
    if name == "nan-weights-allowed":
        with pytest.raises(CheckpointError, match=r"parameter (wte|q_proj) holds \d+ non-finite"):
            load_model(dst)
        model, _ = load_model(dst, allow_nonfinite=True)
        assert np.isnan(np.asarray(model.q_proj[...])).sum() == 1


def test_overwrite_replaces_dst_only_after_success(tmp_path, capsys):
    dst = _existing_dst(tmp_path)
    code = convert_torch_weights.run_guarded(
        lambda: convert_torch_weights.main([str(golden_path("mmada_tiny")), str(dst), "--overwrite"]))
    assert code == 0, capsys.readouterr().err
    assert not (dst / "keep.txt").exists() and (dst / "params").is_dir() and (dst / "checksums.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]      # no temp / old folder left
    assert oct(dst.stat().st_mode & 0o777) != oct(0o700)               # a normal folder, not mkdtemp's

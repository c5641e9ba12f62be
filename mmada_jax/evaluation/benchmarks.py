"""Benchmark readers: our JSONL, a ParaBench-style folder and RISEBench's JSON, as one item list.

:func:`load_benchmark` takes a path and returns a :class:`Benchmark`: ``items`` (one dict per
prompt) and ``root`` (the folder that item image paths are relative to). Every item has

* ``id`` - unique, usable as a folder name (letters, digits, ``.``, ``_``, ``-``);
* ``category`` - ParaBench's edit categories (``Spatial``, ``Temporal``, ``Causal``, ``World
  Knowledge``, ``General``), ``generation``, or the benchmark's own names (our synthetic world's edit
  tasks, RISEBench's ``temporal_reasoning`` ...);
* ``instruction`` - the prompt (str or None);
* ``input_image`` - the input image's path relative to ``root`` (or absolute), None for a
  generation item. Judges treat an item with an input image as an edit, one without as a
  generation;

plus whatever else the source holds (ground truth a judge may need, RISEBench's references).

Formats (chosen from the path):

``jsonl`` - a ``.jsonl`` file, or a folder holding ``benchmark.jsonl`` (what ``python -m
  train.synthetic --benchmark DIR`` writes): one JSON object per line with the fields above;
  ``id`` and ``category`` are required strings, ``instruction`` and ``input_image`` strings or
  null. Image paths are relative to the file's folder.

``risebench`` - RISEBench's ``data_total.json`` (PhoenixZ810/RISEBench: a JSON list of ``index``,
  ``category``, ``instruction``, ``image`` and ``reference`` / ``reference_img`` /
  ``reference_txt``; image paths relative to the file's folder), given as the file, or a folder
  holding it or ``data/data_total.json``.

``parabench`` - any other folder: ParaBench's files on the hub (``tyfeld/ParaBench``) are not
  documented anywhere we could read, so we read a folder with one metadata file, the first of
  :data:`PARABENCH_FILES`, as JSONL (one object per line) or JSON (a list of objects), with these
  fields, each under any of the names in :data:`PARABENCH_FIELDS` (first found wins):
  ``id`` (string or integer), ``category`` (see :func:`parabench_category`; spelling, case, ``_``
  and the words "edit", "editing", "reasoning" do not matter), ``instruction``, ``input_image``
  (required for edit categories, a path relative to the folder). A hub copy in Parquet can be
  written to ``metadata.jsonl`` with ``datasets``' ``to_json``. A missing field is an error that
  names the file, the record and the names looked for.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mmada_jax import jsonl
from mmada_jax.app.requests import SAFE_ID

PARABENCH_CATEGORIES = ("Spatial", "Temporal", "Causal", "World Knowledge", "General", "generation")
PARABENCH_FILES = ("parabench.jsonl", "metadata.jsonl", "data.jsonl", "test.jsonl",
                   "parabench.json", "metadata.json", "data.json", "test.json")
PARABENCH_FIELDS = {
    "id": ("id", "index", "idx", "key", "uid"),
    "category": ("category", "type", "task_type", "subset", "task"),
    "instruction": ("instruction", "prompt", "edit_instruction", "text", "caption"),
    "input_image": ("input_image", "image", "source_image", "src_image", "image_path", "input_image_path"),
}
_CATEGORY_ALIASES = {"spatial": "Spatial", "temporal": "Temporal", "causal": "Causal",
                     "world knowledge": "World Knowledge", "knowledge": "World Knowledge", "world": "World Knowledge",
                     "general": "General", "generation": "generation", "gen": "generation",
                     "t2i": "generation", "text to image": "generation"}


@dataclasses.dataclass
class Benchmark:
    items: list[dict]
    root: Path              # item image paths are relative to it
    format: str             # jsonl | parabench | risebench
    path: Path              # the file read


def load_benchmark(path: str | Path) -> Benchmark:
    """Read the benchmark at ``path`` (see the module docstring for the formats)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark {path} does not exist")
    if path.is_dir():
        for name in ("benchmark.jsonl",):
            if (path / name).is_file():
                return _from_jsonl(path / name)
        for name in ("data_total.json", "data/data_total.json"):
            if (path / name).is_file():
                return _from_risebench(path / name)
        return _from_parabench_folder(path)
    if path.suffix == ".jsonl":
        return _from_jsonl(path)
    if path.suffix == ".json":
        return _from_risebench(path)
    raise ValueError(f"benchmark {path}: expected a .jsonl file, RISEBench's data_total.json or a folder")


def read_benchmark(path: str | Path) -> list[dict]:
    """The items of the benchmark at ``path``."""
    return load_benchmark(path).items


def _check_unique(items: list[dict], where: list[str]) -> list[dict]:
    seen = {}
    for item, at in zip(items, where):
        if item["id"] in seen:
            raise ValueError(f"{at}: duplicate id {item['id']!r} (first at {seen[item['id']]})")
        if not SAFE_ID.fullmatch(item["id"]):
            raise ValueError(f"{at}: id {item['id']!r} cannot name a sample folder (use letters, digits, "
                             f"'.', '_' and '-', not starting with '.')")
        seen[item["id"]] = at
    return items


def _from_jsonl(path: Path) -> Benchmark:
    items, where = [], []
    for n, item in jsonl.objects(path):
        missing = [k for k in ("id", "category") if not isinstance(item.get(k), str) or not item.get(k)]
        if missing:
            raise ValueError(f"{path}:{n}: missing or non-string field(s) {', '.join(missing)}")
        for key in ("instruction", "input_image"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ValueError(f"{path}:{n}: {key} must be a string or null")
        items.append(item)
        where.append(f"{path}:{n}")
    return Benchmark(_check_unique(items, where), path.parent, "jsonl", path)


def _records(path: Path) -> list[tuple[str, dict]]:
    """(location, record) of a JSON list or a JSONL file."""
    if path.suffix == ".jsonl":
        return [(f"{path}:{n}", obj) for n, obj in jsonl.objects(path)]
    out = []
    for i, rec in enumerate(jsonl.read_json(path, list)):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}")
        out.append((f"{path}: record {i}", rec))
    return out


def _string(rec: dict, at: str, key: str, names: tuple[str, ...], required: bool) -> str | None:
    for name in names:
        if rec.get(name) is not None:
            value = rec[name]
            if isinstance(value, int) and not isinstance(value, bool) and key == "id":
                return str(value)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{at}: field {name!r} ({key}) must be a non-empty string, got {value!r}")
            return value
    if required:
        raise ValueError(f"{at}: missing field {key!r} (looked for {', '.join(map(repr, names))})")
    return None


def _from_risebench(path: Path) -> Benchmark:
    items, where = [], []
    for at, rec in _records(path):
        item = {k: v for k, v in rec.items() if k not in ("index", "image")}
        item["id"] = _string(rec, at, "id", ("index",), True)
        item["category"] = _string(rec, at, "category", ("category",), True)
        item["instruction"] = _string(rec, at, "instruction", ("instruction",), True)
        item["input_image"] = _string(rec, at, "input_image", ("image",), True)
        items.append(item)
        where.append(at)
    return Benchmark(_check_unique(items, where), path.parent, "risebench", path)


def parabench_category(value: str) -> str | None:
    """ParaBench's name for a category spelled ``value`` (None if it is none of them)."""
    words = re.sub(r"[_\-/]+", " ", value.strip().lower())
    words = " ".join(w for w in words.split() if w not in ("edit", "editing", "reasoning", "task"))
    return _CATEGORY_ALIASES.get(words)


def _from_parabench_folder(folder: Path) -> Benchmark:
    found = next((folder / n for n in PARABENCH_FILES if (folder / n).is_file()), None)
    if found is None:
        raise ValueError(f"benchmark folder {folder}: no benchmark.jsonl, RISEBench data_total.json or ParaBench "
                         f"metadata file (looked for {', '.join(PARABENCH_FILES)})")
    items, where = [], []
    for at, rec in _records(found):
        get = lambda key, required: _string(rec, at, key, PARABENCH_FIELDS[key], required)   # noqa: E731
        raw = get("category", True)
        category = parabench_category(raw)
        if category is None:
            raise ValueError(f"{at}: category {raw!r} is none of ParaBench's {', '.join(PARABENCH_CATEGORIES)}")
        item = {"id": get("id", True), "category": category, "instruction": get("instruction", True),
                "input_image": get("input_image", category != "generation")}
        used = {name for key in PARABENCH_FIELDS for name in PARABENCH_FIELDS[key] if name in rec}
        item.update({k: v for k, v in rec.items() if k not in used and k not in item})
        items.append(item)
        where.append(at)
    return Benchmark(_check_unique(items, where), folder, "parabench", found)

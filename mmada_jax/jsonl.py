"""Reading JSONL files line by line, with errors that name ``file:line``.

:func:`objects` yields ``(line number, object)`` for every non-blank line and raises a ValueError
naming the file and the line for one that is not valid JSON or not a JSON object; callers check
their own fields with the same ``file:line`` prefix. :func:`read_json` reads a whole JSON file of
an expected kind (object or list) with the same kind of error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(n, obj)`` for each non-blank line ``n`` (1-based) of ``path``."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def read_json(path: str | Path, expect: type = dict):
    """The JSON value in ``path``, which must be an ``expect`` (``dict``: an object, ``list``: a
    list); anything else is a ValueError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, expect):
        raise ValueError(f"{path}: expected a JSON {'object' if expect is dict else 'list'}, "
                         f"got {type(data).__name__}")
    return data

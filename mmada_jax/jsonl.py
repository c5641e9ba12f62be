"""Reading JSONL files line by line, with errors that name ``file:line``.

:func:`objects` yields ``(line number, object)`` for every non-blank line and raises a ValueError
naming the file and the line for one that is not valid JSON or not a JSON object; callers check
their own fields with the same ``file:line`` prefix.
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

"""Sampling requests: a prompt, an optional input image, an optional id; read and checked whole
before anything is loaded, every bad line reported at once.

An id names the request's output folder, so it must be a safe file name: letters, digits, ``.``,
``_`` and ``-`` (not starting with ``.``; integers are accepted and written as their decimal
form), unique within the file. Requests without an id are numbered by their position.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Sequence

SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


@dataclasses.dataclass
class Request:
    prompt: str
    image: str | None = None
    id: str | None = None
    line: int | None = None           # where it came from (a JSONL line number)
    key: int | None = None            # its PRNG key index (default: its position in the run)
    item: dict | None = None          # the prompt file's whole line (RL rewards read e.g. its answer)

    @property
    def name(self) -> str:
        """How messages refer to the request."""
        return repr(self.id) if self.id is not None else repr(self.prompt[:40])


@dataclasses.dataclass
class BadRequest:
    """A request that cannot run: the message (where it came from and why) and the raw item."""

    message: str
    item: object = None

    def __str__(self) -> str:
        return self.message


class BadRequests(ValueError):
    """Every bad request of a run, listed in one message."""

    def __init__(self, bad: Sequence[BadRequest], hint: str = ""):
        self.bad = list(bad)
        shown = "\n  ".join(str(b) for b in self.bad[:20])
        more = f"\n  ... and {len(self.bad) - 20} more" if len(self.bad) > 20 else ""
        super().__init__(f"{len(self.bad)} bad request(s):\n  {shown}{more}{hint}")


def check_text(text: str, where: str) -> str:
    """``text`` if it is valid Unicode text (command-line arguments that are not UTF-8 arrive with
    surrogate escapes), else ValueError naming ``where``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: not valid UTF-8 text") from None
    return text


def _id(value, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: 'id' must be a string or an integer, got {value!r}")
    text = str(value)
    if not SAFE_ID.fullmatch(text):
        raise ValueError(f"{where}: id {text!r} is not a safe folder name (use letters, digits, '.', '_' and '-', "
                         f"at most 128, not starting with '.')")
    return text


def _parse_line(raw: bytes, path: Path, n: int) -> Request:
    where = f"{path}:{n}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
        raise ValueError(f"{where}: each line needs a 'prompt' string")
    image = item.get("image")
    if image is not None and not isinstance(image, str):
        raise ValueError(f"{where}: 'image' must be a path string, got {image!r}")
    if image is not None and not Path(image).is_absolute():
        image = str(path.parent / image)
    return Request(check_text(item["prompt"], where), image, _id(item.get("id"), where), n)


def read_requests(prompt: str | None, prompts_file: str | None, images: Sequence[str] = ()
                  ) -> tuple[list[Request], list[BadRequest]]:
    """(good requests, bad ones) from ``--prompt`` (with ``--image`` files, one request per image)
    or a JSONL file whose lines hold ``prompt`` and optionally ``image`` (relative to the file) and
    ``id``. The whole file is read first; every bad line (not UTF-8, not JSON, no prompt, unsafe or
    duplicate id) is reported, not only the first."""
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        good, bad, seen = [], [], {}
        for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                request = _parse_line(raw, path, n)
            except ValueError as e:
                bad.append(BadRequest(str(e), raw.decode("utf-8", "replace")))
                continue
            if request.id is not None and request.id in seen:
                bad.append(BadRequest(f"{path}:{n}: id {request.id!r} is also the id of line {seen[request.id]}",
                                      raw.decode("utf-8", "replace")))
                continue
            if request.id is not None:
                seen[request.id] = n
            good.append(request)
        if not good and not bad:
            raise ValueError(f"{path}: no prompts")
        return good, bad
    if prompt is None:
        raise ValueError("give --prompt or --prompts FILE.jsonl")
    check_text(prompt, "--prompt")
    return ([Request(prompt, img) for img in images] if images else [Request(prompt)]), []


def folder_names(requests: Sequence[Request]) -> list[str]:
    """The output folder of each request: its id, else its position (``0003``); a position that
    collides with another request's id is an error."""
    names = [r.id if r.id is not None else f"{i:04d}" for i, r in enumerate(requests)]
    ids = {r.id for r in requests if r.id is not None}
    clash = [n for r, n in zip(requests, names) if r.id is None and n in ids]
    if clash:
        raise ValueError(f"request id(s) {clash} equal the folder names of requests without an id; give every "
                         f"request an id or use other ids")
    return names

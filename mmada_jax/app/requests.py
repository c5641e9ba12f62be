"""Sampling requests: a prompt, an optional input image, an optional id."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence


@dataclasses.dataclass
class Request:
    prompt: str
    image: str | None = None
    id: str | None = None

    @property
    def name(self) -> str:
        """How messages refer to the request."""
        return repr(self.id) if self.id is not None else repr(self.prompt[:40])


def read_requests(prompt: str | None, prompts_file: str | None, images: Sequence[str] = ()) -> list[Request]:
    """Requests from ``--prompt`` (with ``--image`` files, one request per image) or a JSONL file
    whose lines hold ``prompt`` and optionally ``image`` (relative to the file) and ``id``."""
    if prompts_file:
        path = Path(prompts_file)
        if not path.exists():
            raise FileNotFoundError(f"prompts file not found: {path}")
        out = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
            if not isinstance(item, dict) or "prompt" not in item:
                raise ValueError(f"{path}:{n}: each line needs a 'prompt' field")
            image = item.get("image")
            if image is not None and not Path(image).is_absolute():
                image = str(path.parent / image)
            out.append(Request(str(item["prompt"]), image, item.get("id")))
        if not out:
            raise ValueError(f"{path}: no prompts")
        return out
    if prompt is None:
        raise ValueError("give --prompt or --prompts FILE.jsonl")
    return [Request(prompt, img) for img in images] if images else [Request(prompt)]

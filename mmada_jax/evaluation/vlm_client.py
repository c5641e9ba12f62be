"""A small OpenAI-compatible chat-completions client for judging: retries, a disk cache, accounting.

:class:`ChatClient` POSTs ``{base_url}/chat/completions`` (the OpenAI API, and what vLLM, SGLang,
llama.cpp's server, Ollama and most hosted VLMs serve) with the standard library only, so judging
needs no extra dependency. It retries what is worth retrying (HTTP 429 and 5xx, timeouts, refused
or dropped connections) with exponential backoff and jitter, honouring ``Retry-After``, and fails
at once with the server's message on anything else (a bad key, an unknown model). Images go in the
messages as base64 ``data:`` URLs (:func:`image_part`).

:class:`AnswerCache` keeps parsed answers on disk, one JSON file per key, written atomically, so
a rerun (or a second evaluation of the same outputs) sends nothing. :class:`Usage` counts
requests, cache hits, retries, re-asks and tokens (thread-safe) and prices them.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import io
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4.1"
#: USD per million (input, output) tokens of models we know; others are priced only with --price
PRICES = {"gpt-4.1": (2.00, 8.00), "gpt-4.1-mini": (0.40, 1.60), "gpt-4o": (2.50, 10.00)}
RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)


class JudgeRequestError(RuntimeError):
    """A request that failed for good (after the retries, or at once for a non-retryable error)."""


@dataclasses.dataclass
class Usage:
    """What a judge spent: requests sent, answers read from the cache, retries, re-asks, tokens."""
    requests: int = 0
    cached: int = 0
    retries: int = 0
    reasks: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + int(v))

    def to_dict(self, model: str, price: tuple[float, float] | None) -> dict:
        out = {k: getattr(self, k) for k in ("requests", "cached", "retries", "reasks", "failures",
                                             "prompt_tokens", "completion_tokens")}
        price = price if price is not None else PRICES.get(model)
        out["price_usd_per_million_tokens"] = None if price is None else {"input": price[0], "output": price[1]}
        out["cost_usd"] = (None if price is None else
                           round((self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6, 6))
        return out


def image_part(image) -> dict:
    """A chat message part holding ``image`` (a file path, PNG/JPEG bytes or a uint8 [H, W, 3]
    array) as a base64 data URL; files keep their bytes, arrays are sent as PNG."""
    data, mime = image_bytes(image)
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


def image_bytes(image) -> tuple[bytes, str]:
    """(bytes, MIME type) of ``image`` as :func:`image_part` sends it."""
    if isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    elif isinstance(image, bytes):
        data = image
    else:
        import numpy as np
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data, "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return data, "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return data, "image/webp"
    from PIL import Image    # another format: re-encode as PNG (what every endpoint accepts)
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, format="PNG")
    return buf.getvalue(), "image/png"


class AnswerCache:
    """Parsed judge answers on disk: ``root/<key[:2]>/<key>.json``; ``None`` root keeps nothing."""

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root)

    @staticmethod
    def key(**fields) -> str:
        """The cache key of a request: sha256 of its fields (model, rubric version, input hashes)."""
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.root is None or not self._path(key).is_file():
            return None
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None          # a damaged entry is asked again (and rewritten)

    def put(self, key: str, value: dict) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(value) + "\n", encoding="utf-8")
        os.replace(tmp, path)


class ChatClient:
    """POST chat completions to an OpenAI-compatible endpoint (see the module docstring).

    ``complete(messages)`` returns the answer's text; ``usage`` counts requests, retries and
    tokens. ``json_mode`` asks for ``response_format: json_object`` (servers that reject it:
    turn it off); ``temperature`` 0 keeps the judge as repeatable as the server allows.
    """

    def __init__(self, base_url: str = DEFAULT_BASE_URL, model: str = DEFAULT_MODEL, api_key: str | None = None,
                 *, timeout: float = 120.0, max_retries: int = 6, backoff: float = 1.0, max_backoff: float = 60.0,
                 json_mode: bool = True, temperature: float = 0.0, max_tokens: int = 512, usage: Usage | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url {base_url!r}: expected an http:// or https:// URL")
        if timeout <= 0 or max_retries < 0 or backoff < 0:
            raise ValueError(f"judge timeout {timeout}, max_retries {max_retries}, backoff {backoff}: "
                             f"need timeout > 0, max_retries >= 0, backoff >= 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.json_mode, self.temperature, self.max_tokens = json_mode, temperature, max_tokens
        self.usage = usage or Usage()

    def _body(self, messages: list[dict]) -> bytes:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return json.dumps(body).encode()

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (1.0 + 0.25 * random.random())
        if retry_after:
            try:
                delay = max(delay, min(self.max_backoff, float(retry_after)))
            except ValueError:
                pass             # an HTTP date: keep our own backoff
        return delay

    def complete(self, messages: list[dict]) -> str:
        """The answer's text (after up to ``max_retries`` retries); JudgeRequestError otherwise."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = self._body(messages)
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.usage.add(retries=1)
            retry_after = None
            try:
                self.usage.add(requests=1)
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                return self._answer(payload)
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                if e.code not in RETRY_STATUS:
                    raise JudgeRequestError(f"{self.url}: HTTP {e.code}: {detail}") from None
                last, retry_after = f"HTTP {e.code}: {detail}", e.headers.get("Retry-After")
            except (TimeoutError, socket.timeout) as e:
                last = f"timed out after {self.timeout}s ({e})"
            except urllib.error.URLError as e:
                last = f"connection failed ({e.reason})"
            except (ConnectionError, http.client.HTTPException) as e:
                last = f"connection dropped ({type(e).__name__}: {e})"
            except ValueError as e:     # a 200 whose body is not a chat completion
                last = f"unreadable response ({e})"
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        raise JudgeRequestError(f"{self.url}: gave up after {self.max_retries + 1} attempts; last: {last}")

    def _answer(self, payload) -> str:
        try:
            message = payload["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"no choices[0].message in {str(payload)[:200]}") from None
        usage = payload.get("usage") or {}
        self.usage.add(prompt_tokens=usage.get("prompt_tokens") or 0,
                       completion_tokens=usage.get("completion_tokens") or 0)
        content = message.get("content")
        if isinstance(content, list):      # some servers answer in parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ValueError(f"message content is {type(content).__name__}, not text")
        return content


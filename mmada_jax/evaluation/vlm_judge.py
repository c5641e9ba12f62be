"""``--judge vlm``: ParaBench's six metrics asked of a VLM behind an OpenAI-compatible endpoint.

One request per (item, metric): the metric's rubric (:mod:`.rubrics`) as the system message, then
what the rubric shows (instruction, input image, output image, reasoning text) as the user
message, images as base64 data URLs. The answer must be one JSON object holding the rubric's
score key with an integer 1-5 (a ```json fence around it is tolerated); anything else is asked
again once with the problem stated, and a second bad answer fails that metric. Scores map to
0-100 by ``scale`` (:data:`~.rubrics.SCALES`: ``x20`` = 20 x score, the default; ``from1`` =
25 x (score - 1)); Overall is the mean of the item's metrics (six for an edit, five for a
generation, which has no Image Consistency), as in the paper.

Requests of a batch run ``concurrency`` at a time. Every parsed answer is cached under
(model, rubric version, metric, hashes of what was shown), so a rerun sends nothing; the cache
holds the raw 1-5 score, so changing ``scale`` is free too. :meth:`VLMJudge.accounting` gives
requests, cache hits, retries, re-asks, tokens and their price.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import os
import threading
import time
from pathlib import Path

from .judges import METRICS, overall
from .rubrics import RUBRIC_VERSION, RUBRICS, SCALES, Rubric
from .vlm_client import (DEFAULT_BASE_URL, DEFAULT_MODEL, AnswerCache, ChatClient, JudgeRequestError, Usage,
                         image_bytes, image_part)

_LABELS = {"instruction": "Instruction", "input_image": "Input image", "output_image": "Output image",
           "output_text": "Reasoning text"}


def parse_answer(text: str, key: str) -> tuple[int, str]:
    """(score 1-5, reason) from a judge's answer; ValueError saying what is wrong otherwise."""
    body = text.strip()
    if body.startswith("```"):          # a fenced block: ```json ... ```
        lines = body.splitlines()
        if len(lines) >= 2 and lines[-1].strip() == "```":
            body = "\n".join(lines[1:-1])
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise ValueError(f"no {key!r} in the object")
    score = obj[key]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or score != int(score) or not 1 <= score <= 5:
        raise ValueError(f"{key} must be an integer from 1 to 5, got {score!r}")
    reason = obj.get("reason", "")
    return int(score), reason if isinstance(reason, str) else json.dumps(reason)


class VLMJudge:
    """ParaBench's judge over an OpenAI-compatible chat endpoint (see the module docstring).

    ``root``: the benchmark's folder (input images are relative to it). ``api_key_env``: the
    environment variable holding the key (none needed for a local server). ``cache_dir``: where
    answers are kept (None: nowhere). ``price``: USD per million (input, output) tokens, for a
    model :data:`~.vlm_client.PRICES` does not know.
    """

    metrics = METRICS
    batch_items = 16        # evaluate appends results every this many items

    def __init__(self, root: str | Path = ".", base_url: str = DEFAULT_BASE_URL, model: str = DEFAULT_MODEL,
                 api_key_env: str = "OPENAI_API_KEY", cache_dir: str | Path | None = None, concurrency: int = 8,
                 scale: str = "x20", timeout: float = 120.0, max_retries: int = 6, backoff: float = 1.0,
                 json_mode: bool = True, price: tuple[float, float] | None = None, log=print):
        if scale not in SCALES:
            raise ValueError(f"--scale {scale!r}: expected one of {sorted(SCALES)}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"--concurrency {concurrency!r}: must be a positive integer")
        api_key = os.environ.get(api_key_env) if api_key_env else None
        if not api_key and base_url.rstrip("/") == DEFAULT_BASE_URL:
            raise ValueError(f"--judge vlm on {DEFAULT_BASE_URL} needs an API key in ${api_key_env} "
                             f"(or --base-url of a local OpenAI-compatible server)")
        self.root, self.scale, self.concurrency, self.price, self.log = Path(root), scale, concurrency, price, log
        self.usage = Usage()
        self.client = ChatClient(base_url, model, api_key, timeout=timeout, max_retries=max_retries,
                                 backoff=backoff, json_mode=json_mode, usage=self.usage)
        self.cache = AnswerCache(cache_dir)

    def describe(self) -> dict:
        """What produces the scores (recorded in the evaluation's run.json)."""
        return {"judge": "vlm", "model": self.client.model, "base_url": self.client.url,
                "rubric_version": RUBRIC_VERSION, "scale": self.scale}

    def accounting(self) -> dict:
        return {"model": self.client.model, "rubric_version": RUBRIC_VERSION, **self.usage.to_dict(self.client.model, self.price)}

    # -- one request -------------------------------------------------------------------------------
    def _shown(self, rubric: Rubric, edit: bool, item: dict, text: str, image) -> dict:
        """What the rubric shows: {input name: str (text) or (bytes, mime) (image)}."""
        shown = {}
        for name in rubric.inputs(edit):
            if name == "instruction":
                shown[name] = item.get("instruction") or ""
            elif name == "output_text":
                shown[name] = text
            elif name == "input_image":
                shown[name] = image_bytes(self.root / item["input_image"])
            else:
                shown[name] = image_bytes(image)
        return shown

    @staticmethod
    def _messages(rubric: Rubric, edit: bool, shown: dict) -> list[dict]:
        parts = []
        for name, value in shown.items():
            if isinstance(value, str):
                parts.append({"type": "text", "text": f"{_LABELS[name]}:\n{value if value.strip() else '(empty)'}"})
            else:
                parts.append({"type": "text", "text": f"{_LABELS[name]}:"})
                parts.append(image_part(value[0]))
        return [{"role": "system", "content": rubric.prompt(edit)}, {"role": "user", "content": parts}]

    def _cache_key(self, rubric: Rubric, edit: bool, shown: dict) -> str:
        digest = {k: hashlib.sha256(v.encode() if isinstance(v, str) else v[0]).hexdigest() for k, v in shown.items()}
        return AnswerCache.key(model=self.client.model, rubric_version=RUBRIC_VERSION, metric=rubric.metric,
                               edit=edit, inputs=digest)

    def _ask(self, rubric: Rubric, edit: bool, item: dict, text: str, image) -> dict:
        """{"score": 1-5, "reason"} for one (item, metric), from the cache or the endpoint."""
        shown = self._shown(rubric, edit, item, text, image)
        key = self._cache_key(rubric, edit, shown)
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.add(cached=1)
            return hit
        messages = self._messages(rubric, edit, shown)
        answer = self.client.complete(messages)
        try:
            score, reason = parse_answer(answer, rubric.key)
        except ValueError as problem:
            self.usage.add(reasks=1)
            messages = messages + [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": f"That answer could not be read: {problem}. Reply with only the JSON "
                                            f"object {{\"reason\": \"...\", \"{rubric.key}\": <integer 1-5>}}."}]
            answer = self.client.complete(messages)
            try:
                score, reason = parse_answer(answer, rubric.key)
            except ValueError as again:
                raise JudgeRequestError(f"malformed answer twice ({again}): {answer[:200]!r}") from None
        result = {"score": score, "reason": reason, "metric": rubric.metric, "model": self.client.model,
                  "rubric_version": RUBRIC_VERSION}
        self.cache.put(key, result)
        return result

    # -- the Judge protocol ------------------------------------------------------------------------
    def score(self, item: dict, text: str, image) -> dict:
        return self.score_batch([(item, text, image)])[0]

    def score_batch(self, entries: list[tuple[dict, str, object]]) -> list[dict]:
        """Judge ``entries`` ((item, text, image) each) with up to ``concurrency`` requests in
        flight. A metric that failed (see the module docstring) is left out of ``scores`` and
        named in ``errors`` (and Overall is left out too: it would not be the paper's mean)."""
        jobs = [(i, rubric, bool(item.get("input_image"))) for i, (item, _, _) in enumerate(entries)
                for rubric in RUBRICS if rubric.applies(bool(item.get("input_image")))]
        raw: list[dict] = [{} for _ in entries]
        errors: list[dict] = [{} for _ in entries]
        done, lock, t0 = 0, threading.Lock(), time.perf_counter()

        def run(job):
            nonlocal done
            i, rubric, edit = job
            item, text, image = entries[i]
            try:
                raw[i][rubric.metric] = self._ask(rubric, edit, item, text, image)
            except (JudgeRequestError, OSError) as e:
                self.usage.add(failures=1)
                errors[i][rubric.metric] = str(e)
            with lock:
                done += 1
                if done == len(jobs) or done % max(1, len(jobs) // 4) == 0:
                    rate = done / max(time.perf_counter() - t0, 1e-9)
                    self.log(f"  judge: {done}/{len(jobs)} answers ({self.usage.cached} cached, {self.usage.retries} "
                             f"retries, {self.usage.reasks} re-asks), {rate:.1f}/s, ETA {(len(jobs) - done) / rate:.0f}s")

        with futures.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(run, jobs))
        to_100 = SCALES[self.scale]
        out = []
        for i in range(len(entries)):
            order = [m for m in METRICS if m in raw[i]]
            scores = {m: to_100(raw[i][m]["score"]) for m in order}
            reasons = {m: raw[i][m]["reason"] for m in order}
            if scores and not errors[i]:
                scores["Overall"] = overall(scores)
                reasons["Overall"] = "mean of the metrics above"
            out.append({"scores": scores, "reasons": reasons, **({"errors": errors[i]} if errors[i] else {}),
                        "raw_scores": {m: raw[i][m]["score"] for m in order}, "version": RUBRIC_VERSION})
        return out


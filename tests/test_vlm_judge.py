"""The VLM judge against a real OpenAI-compatible HTTP server on 127.0.0.1 with failure modes.

The server answers each rubric with a fixed score and misbehaves on cue (a marker in the
instruction): ``[429]`` and ``[slow]`` fail the first request of a metric (rate limit, a reply
slower than the client's timeout), ``[bad]`` answers the first time with malformed JSON,
``[awful]`` never gives a readable Text Quality until told to. The evaluation runs through
``python -m evaluate --judge vlm --samples-from`` (stored samples, no model) and checks retries,
re-asks, the concurrency bound, token accounting, the scores in results and summary, the judge
error path, and that reruns are answered from the cache.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from mmada_jax.evaluation.rubrics import RUBRIC_VERSION, RUBRICS
from mmada_jax.evaluation.vlm_client import ChatClient, JudgeRequestError
from mmada_jax.evaluation.vlm_judge import VLMJudge, parse_answer

SCORE = {"text_quality_score": 5, "text_alignment_score": 4, "consistency_score": 3, "instruction_score": 2,
         "quality_score": 4, "output_alignment_score": 1}
METRIC_OF = {r.key: r.metric for r in RUBRICS}


class FakeVLM:
    """An OpenAI-compatible /v1/chat/completions endpoint (see the module docstring)."""

    def __init__(self, delay: float = 0.05, slow: float = 1.5):
        self.delay, self.slow = delay, slow
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        self.seen: set = set()
        self.log: list[dict] = []          # one entry per request
        self.ok = 0                         # 200 replies with usage
        self.awful_fixed = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                fake.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, h):
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        if h.path == "/denied/v1/chat/completions":
            return self._reply(h, 401, {"error": {"message": "invalid api key"}})
        system = body["messages"][0]["content"]
        key = next(k for k in SCORE if f'"{k}"' in system)
        parts = body["messages"][1]["content"]
        images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        for url in images:           # every image arrives as a decodable PNG data URL
            assert url.startswith("data:image/png;base64,")
            Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()
        reask = len(body["messages"]) > 2
        instruction = next((p["text"].split("\n", 1)[1] for p in parts
                            if p["type"] == "text" and p["text"].startswith("Instruction:")), "")
        first = (instruction, key) not in self.seen
        with self.lock:
            self.seen.add((instruction, key))
            self.log.append({"key": key, "instruction": instruction, "images": len(images), "reask": reask,
                             "auth": h.headers.get("Authorization"), "json_mode": "response_format" in body,
                             "model": body["model"]})
        if "[slow]" in instruction and first:
            time.sleep(self.slow)           # past the client's timeout: it has given up, no reply
            return
        with self.lock:                     # requests the client is waiting for
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        time.sleep(self.delay)
        with self.lock:
            self.inflight -= 1
        if "[429]" in instruction and first:
            return self._reply(h, 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if "[bad]" in instruction and not reask:
            return self._answer(h, "Sure! The score is four.")
        if "[awful]" in instruction and key == "text_quality_score" and not self.awful_fixed:
            return self._answer(h, '{"reason": "ok", "text_quality_score": 7}')
        return self._answer(h, "```json\n" + json.dumps({"reason": f"{key} looks fine", key: SCORE[key]}) + "\n```")

    def _answer(self, h, content: str):
        with self.lock:
            self.ok += 1
        self._reply(h, 200, {"choices": [{"message": {"role": "assistant", "content": content}}],
                             "usage": {"prompt_tokens": 100, "completion_tokens": 10}})

    def _reply(self, h, code: int, obj: dict, headers: dict | None = None):
        data = json.dumps(obj).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def fake_vlm():
    server = FakeVLM()
    yield server
    server.close()


def _png(path, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), color, np.uint8)).save(path)


ITEMS = [("e1", "General", "make the square red"), ("e2", "Spatial", "[429] move the circle left"),
         ("e3", "Causal", "[slow] add a circle"), ("e4", "Temporal", "[bad] remove the square"),
         ("e5", "General", "[awful] grow the triangle"), ("g1", "generation", "draw two squares")]


def _stored_samples(tmp_path):
    """A benchmark and an evaluation folder holding its samples (as `evaluate` writes them)."""
    bench = tmp_path / "bench"
    lines = []
    for i, (id_, cat, instr) in enumerate(ITEMS):
        image = None
        if cat != "generation":
            image = f"images/{id_}.png"
            _png(bench / image, (10 * i, 0, 0))
        lines.append({"id": id_, "category": cat, "instruction": instr, "input_image": image})
    (bench / "benchmark.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    src = tmp_path / "sampled"
    results = []
    for i, (id_, cat, _) in enumerate(ITEMS):
        _png(src / "samples" / id_ / "image.png", (0, 0, 0) if id_ == "e1" else (0, 50 + 10 * i, 0))   # e1: unchanged
        results.append({"id": id_, "category": cat, "scores": {}, "reasons": {}, "text": f"I will edit {id_}.",
                        "files": {"image": f"samples/{id_}/image.png"}})
    (src / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (src / "run.json").write_text(json.dumps({"benchmark": str((bench / "benchmark.jsonl").resolve()),
                                              "task": "parallel_m", "seed": 0, "judge": "SyntheticJudge"}))
    return bench / "benchmark.jsonl", src


def _evaluate(*args) -> int:
    from evaluate.__main__ import main
    return main([str(a) for a in args])


def _expected(edit: bool, scale) -> dict:
    scores = {METRIC_OF[k]: scale(s) for k, s in SCORE.items() if edit or k != "consistency_score"}
    scores["Overall"] = sum(scores.values()) / len(scores)
    return scores


def test_vlm_judge_end_to_end_with_failures_cache_and_rerun(tmp_path, fake_vlm, monkeypatch, capsys):
    bench, src = _stored_samples(tmp_path)
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    out, cache = tmp_path / "eval", tmp_path / "cache"
    common = ["--benchmark", bench, "--judge", "vlm", "--base-url", fake_vlm.url, "--api-key-env", "JUDGE_KEY",
              "--samples-from", src, "--judge-timeout", "0.5", "--concurrency", "3", "--judge-cache", cache]
    assert _evaluate(*common, "--out", out) == 0
    log = capsys.readouterr().out
    assert "judge:" in log and "ETA" in log

    # every request: the paper's model by default, the key, json mode, 3 in flight at most
    assert {e["model"] for e in fake_vlm.log} == {"gpt-4.1"}
    assert {e["auth"] for e in fake_vlm.log} == {"Bearer sk-test"} and all(e["json_mode"] for e in fake_vlm.log)
    assert 2 <= fake_vlm.max_inflight <= 3
    # generation items: five rubrics, never an input image; edits: six
    gen = [e for e in fake_vlm.log if e["instruction"] == "draw two squares"]
    assert {e["key"] for e in gen} == set(SCORE) - {"consistency_score", "quality_score", "output_alignment_score"}
    assert all(e["images"] == (1 if e["key"] == "instruction_score" else 0) for e in gen)

    results = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert list(results) == [i for i, _, _ in ITEMS]
    x20 = lambda s: 20.0 * s   # noqa: E731
    for id_ in ("e1", "e2", "e3", "e4"):       # 429, timeout and malformed answers all recovered
        assert results[id_]["scores"] == pytest.approx(_expected(True, x20)), id_
        assert "judge_errors" not in results[id_] and results[id_]["judge_version"] == RUBRIC_VERSION
        assert results[id_]["image_stats"]["differs_from_input"] is (id_ != "e1")
    assert results["g1"]["scores"] == pytest.approx(_expected(False, x20))
    assert results["g1"]["image_stats"] == {"size": [16, 16]}
    e5 = results["e5"]
    assert set(e5["judge_errors"]) == {"Text Quality"} and "malformed answer twice" in e5["judge_errors"]["Text Quality"]
    assert "Text Quality" not in e5["scores"] and "Overall" not in e5["scores"]
    assert e5["raw_scores"]["Image Consistency"] == 3

    summary = json.loads((out / "summary.json").read_text())
    usage = summary["judge_usage"]
    edit_requests = 5 * 6 + 5   # e1-e5 x 6 rubrics, g1 x 5
    assert usage["retries"] == 8          # [429] and [slow]: the first try of 4 rubrics each
    assert usage["reasks"] == 5           # [bad]: 4 rubrics; [awful]: 1
    assert usage["failures"] == 1 and usage["cached"] == 0
    assert usage["requests"] == len(fake_vlm.log) == edit_requests + 8 + 5
    assert usage["prompt_tokens"] == 100 * fake_vlm.ok and usage["completion_tokens"] == 10 * fake_vlm.ok
    assert usage["cost_usd"] == pytest.approx((100 * 2.0 + 10 * 8.0) * fake_vlm.ok / 1e6)
    assert summary["judge_errors"] == 1 and summary["judge"]["rubric_version"] == RUBRIC_VERSION
    assert summary["Mean"]["n"] == 6
    assert summary["image_stats"]["edits"] == 5 and summary["image_stats"]["unchanged"] == 1
    assert summary["Mean"]["Image Consistency"] == pytest.approx(60.0)
    assert summary["Mean"]["Overall"] == pytest.approx((4 * _expected(True, x20)["Overall"]
                                                        + _expected(False, x20)["Overall"]) / 5)
    assert "1 item(s) with judge errors" in (out / "summary.md").read_text()

    # rerun: only e5's failed metric is asked again (the rest is cached), nothing is resampled
    fake_vlm.awful_fixed, before = True, len(fake_vlm.log)
    assert _evaluate(*common, "--out", out) == 0
    assert [(e["instruction"], e["key"]) for e in fake_vlm.log[before:]] == [(ITEMS[4][2], "text_quality_score")]
    results = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert len(results) == 6 and results["e5"]["scores"] == pytest.approx(_expected(True, x20))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge_errors"] == 0 and summary["judge_usage"]["cached"] == 5

    # another output folder with the same cache and another scale: free
    before = len(fake_vlm.log)
    assert _evaluate(*common, "--out", tmp_path / "eval_from1", "--scale", "from1") == 0
    assert len(fake_vlm.log) == before
    summary = json.loads((tmp_path / "eval_from1" / "summary.json").read_text())
    assert summary["judge_usage"]["requests"] == 0 and summary["judge_usage"]["cached"] == edit_requests
    assert summary["judge_usage"]["cost_usd"] == 0.0
    assert summary["Mean"]["Text Alignment"] == pytest.approx(75.0)     # 25 x (4 - 1)
    assert summary["Mean"]["Output Alignment"] == pytest.approx(0.0)

    # the same --out with another judge setting is refused, pointing at --samples-from
    assert _evaluate(*common, "--out", out, "--scale", "from1") == 2
    assert "judge" in capsys.readouterr().err


def test_client_gives_up_at_once_on_a_non_retryable_error(fake_vlm):
    client = ChatClient(fake_vlm.url.replace("/v1", "/denied/v1"), "m", max_retries=5, backoff=0.0)
    with pytest.raises(JudgeRequestError, match="HTTP 401.*invalid api key"):
        client.complete([{"role": "system", "content": '"text_quality_score"'}, {"role": "user", "content": []}])
    assert client.usage.requests == 1 and client.usage.retries == 0


def test_client_retries_a_dead_endpoint_then_names_it():
    client = ChatClient("http://127.0.0.1:9/v1", "m", max_retries=2, backoff=0.0, timeout=0.5)
    with pytest.raises(JudgeRequestError, match="gave up after 3 attempts.*connection"):
        client.complete([])
    assert client.usage.requests == 3 and client.usage.retries == 2


def test_parse_answer_is_strict():
    assert parse_answer('{"reason": "r", "quality_score": 4}', "quality_score") == (4, "r")
    assert parse_answer('```json\n{"quality_score": 3.0}\n```', "quality_score") == (3, "")
    for bad, why in [("4", "object"), ('{"score": 4}', "no 'quality_score'"), ('{"quality_score": 4.5}', "integer"),
                     ('{"quality_score": 0}', "integer"), ('{"quality_score": true}', "integer"),
                     ('{"quality_score": "4"}', "integer"), ("The score is 4", "JSON")]:
        with pytest.raises(ValueError, match=why):
            parse_answer(bad, "quality_score")


def test_judge_needs_a_key_for_the_hosted_api_and_checks_options(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"\$OPENAI_API_KEY"):
        VLMJudge()
    with pytest.raises(ValueError, match="--scale"):
        VLMJudge(base_url="http://127.0.0.1:1/v1", scale="x100")
    with pytest.raises(ValueError, match="--base-url"):
        VLMJudge(base_url="localhost:8000")


def test_rubrics_cover_paraBench_and_say_how_to_answer():
    assert [r.metric for r in RUBRICS] == ["Text Quality", "Text Alignment", "Image Consistency", "Image Alignment",
                                          "Image Quality", "Output Alignment"]
    for r in RUBRICS:
        assert r.key in r.prompt(True) and "1 to 5" in r.prompt(True)
        assert r.applies(False) == (r.metric != "Image Consistency")
        if r.applies(False):
            assert "input_image" not in r.inputs(False) and r.key in r.prompt(False)


@pytest.mark.golden
def test_evaluate_samples_a_parabench_folder_and_judges_with_the_vlm(tmp_path, fake_vlm):
    """The issue's command end to end: ``python -m evaluate --judge vlm --base-url ... --benchmark
    parabench/`` samples a ParaBench-style folder with a model (the tiny random MMaDA) and scores
    it with the six rubrics (five for the generation item); a rerun sends nothing."""
    import subprocess
    import sys

    from conftest import ROOT, tiny_m_args

    from mmada_jax.evaluation.synthetic_judge import write_benchmark
    src = write_benchmark(tmp_path / "synthetic", 3, seed=4, t2i_fraction=0.0)
    folder = tmp_path / "parabench"
    rows = []
    for n, item in enumerate(json.loads(x) for x in src.read_text().splitlines()):
        image = folder / "edit" / f"{n}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes((src.parent / item["input_image"]).read_bytes())
        rows.append({"index": n, "task_type": ["spatial", "causal", "world_knowledge"][n], "prompt": item["instruction"],
                     "source_image": f"edit/{n}.png"})
    rows.append({"index": 3, "task_type": "generation", "prompt": "two red squares"})
    (folder / "parabench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "evaluate", "--benchmark", str(folder), "--judge", "vlm", "--base-url", fake_vlm.url,
           "--out", str(out), *map(str, tiny_m_args()), "--text-steps", "4", "--image-steps", "1", "--text-len", "16"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(fake_vlm.log) == 3 * 6 + 5
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["categories"]) == ["Causal", "Spatial", "World Knowledge", "generation"]
    assert summary["Mean"]["n"] == 4 and summary["Mean"]["Image Consistency"] == pytest.approx(60.0)
    assert summary["categories"]["generation"]["Image Consistency"] is None
    assert summary["judge"]["model"] == "gpt-4.1" and summary["judge_usage"]["requests"] == 23
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(fake_vlm.log) == 23 and "0 to sample" in r.stdout

"""Pretokenize SFT examples: JSONL -> tokenized text + VQ image codes in ArrayRecord shards.

Input: a JSONL file, or a folder holding ``examples.jsonl``; one JSON object per line with

    id            str  (optional: defaults to ``<file>:<line>``; must be unique)
    input_image   str  image path, relative to the JSONL's folder (optional)
    instruction   str  (optional)
    reasoning     str  (required)
    output_image  str  image path (required)

With ``base_tasks`` (``--base-tasks``) every line also needs ``t2i_prompt``, ``mmu_question`` and
``mmu_answer`` (base MMaDA's text-to-image request and understanding question/answer about the
output image, e.g. from ``python -m train.synthetic --base-tasks``); the question is stored in the
tokenizer's chat template, and ``BOS + t2i_prompt + EOS`` and ``chat(question) + answer + EOS``
must fit ``text_len`` like the other texts.

Other fields are ignored. Output: a tensorflow-datasets dataset (``GeneratorBasedBuilder``,
ArrayRecord files, Tensor/Text features, no TensorFlow needed) in the format of
:mod:`.records`, plus ``bad_examples.jsonl`` and ``summary.json``.

Why offline: VQ encoding dominates the cost of an SFT step's data (MAGVIT-v2 at 512 px is
seconds per image on CPU); the reference re-encodes every image at every step. Codes are
computed once here, so training reads small integer records.

Two passes:

1. read and check every line: JSON, fields and types, unique ids, image files exist, text length
   (``BOS + ids + EOS`` must fit in ``text_len`` tokens, i.e. at most ``text_len - 2`` ids --
   the pipeline would otherwise truncate the text); cheap, so ``on_bad="stop"`` fails before any
   encoding work;
2. load and VQ-encode images in batches of ``batch_size`` examples (input and output images in
   one ``vq.encode`` call of fixed shape ``[2 * batch_size, S, S, 3]``, padded, so it compiles
   once); an unreadable or corrupt image makes its example bad.

An example without an input image gets the VQ codes of a black ``S x S`` image (what the
reference does with its black 512x512 placeholder: real codes, not zeros). Bad examples are never
dropped silently: each is printed with its id and reason and appended to
``OUT/bad_examples.jsonl``; ``on_bad="skip"`` leaves it out, ``on_bad="stop"`` raises
:class:`BadExampleError` (the CLI exits 1) and no dataset is left behind.

Safe output: OUT must not be SRC, inside it or hold it. Everything is written to a temporary
folder beside OUT (``.OUT.pretokenize-tmp-*``) and moved in only after success; ``overwrite``
then replaces the previous run's outputs (the dataset folder, ``bad_examples.jsonl``,
``summary.json``; other files in OUT are left alone). A failed run leaves OUT as it was; its
bad-example list goes to ``OUT/bad_examples.jsonl`` when OUT held no previous output, else it stays
in the temporary folder (the error names it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import records

ON_BAD = ("skip", "stop")


class BadExampleError(RuntimeError):
    """Raised with ``on_bad="stop"``: names the example id and the reason (``report_path``: the
    list of bad examples, once the run has cleaned up)."""

    report_path = None

    def __init__(self, bad: "BadExample"):
        super().__init__(bad.id, bad.reason)
        self.bad = bad

    def __str__(self) -> str:   # a custom __str__ also keeps tfds from rewriting the message in place
        return f"bad example {self.bad.id!r}: {self.bad.reason}"


class NoExamplesError(ValueError):
    """Every example of a split was bad: there is nothing to write. ``report_path``: the list of
    bad examples (set once the run has cleaned up)."""

    report_path = None

    def __str__(self) -> str:   # (custom __str__: see BadExampleError)
        return str(self.args[0]) + (f" (see {self.report_path})" if self.report_path else "")


@dataclasses.dataclass(frozen=True)
class BadExample:
    """A rejected example: its id (``<file>:<line>`` when it has none), the reason, its line."""

    id: str
    reason: str
    line: int | None = None

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "reason": self.reason, "line": self.line})


@dataclasses.dataclass
class SourceExample:
    """A line that passed the checks of pass 1 (token ids without BOS/EOS)."""

    id: str
    line: int
    input_image: Path | None
    output_image: Path
    instruction_ids: np.ndarray
    reasoning_ids: np.ndarray
    base: dict | None = None      # the records.BASE_TASK_KEYS ids (pretokenized with base_tasks)


@dataclasses.dataclass
class Summary:
    """What a run did (also written to ``OUT/summary.json``)."""

    lines: int = 0
    written: dict = dataclasses.field(default_factory=dict)   # split -> count
    bad: list = dataclasses.field(default_factory=list)       # BadExample
    seconds: float = 0.0
    encoded_per_second: float = 0.0
    out_dir: str = ""

    @property
    def skipped(self) -> int:
        return len(self.bad)

    def to_dict(self) -> dict:
        reasons: dict[str, int] = {}
        for b in self.bad:
            key = b.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        return {"lines": self.lines, "written": self.written, "written_total": sum(self.written.values()),
                "skipped": self.skipped, "skipped_by_reason": reasons, "seconds": round(self.seconds, 3),
                "examples_per_second": round(self.encoded_per_second, 3), "out_dir": self.out_dir}


def find_jsonl(src: str | Path) -> Path:
    """``src`` itself (a JSONL file) or ``src/examples.jsonl``."""
    src = Path(src)
    if src.is_dir():
        path = src / "examples.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{src}: folder has no examples.jsonl")
        return path
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such JSONL file or folder")
    return src


class BadReporter:
    """Prints each bad example and appends it to ``bad_examples.jsonl``; raises on ``stop``."""

    def __init__(self, path: Path, on_bad: str, log: Callable[[str], None]):
        if on_bad not in ON_BAD:
            raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
        self.path, self.on_bad, self.log = path, on_bad, log
        self.bad: list[BadExample] = []
        path.write_text("")

    def __call__(self, ex_id: str, reason: str, line: int | None = None) -> None:
        bad = BadExample(str(ex_id), reason, line)
        self.bad.append(bad)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(bad.to_json() + "\n")
        where = f" (line {line})" if line is not None else ""
        self.log(f"bad example {bad.id!r}{where}: {reason}" + ("" if self.on_bad == "stop" else "; skipped"))
        if self.on_bad == "stop":
            raise BadExampleError(bad)


def _text_field(rec: dict, key: str, required: bool) -> str | None:
    value = rec.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"missing {key}")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
    return value


def _base_task_ids(rec: dict, tokenize: Callable[[str], list[int]], chat: Callable[[str], list[int]],
                   text_len: int) -> dict:
    """The base-task ids of a line (ValueError: a field missing, or a text over ``text_len``)."""
    prompt = np.asarray(tokenize(_text_field(rec, "t2i_prompt", required=True)), np.int32)
    question = np.asarray(chat(_text_field(rec, "mmu_question", required=True)), np.int32)
    answer = np.asarray(tokenize(_text_field(rec, "mmu_answer", required=True)), np.int32)
    if len(prompt) + 2 > text_len:
        raise ValueError(f"t2i_prompt too long: {len(prompt)} tokens + BOS/EOS > --text-len {text_len}")
    if len(question) + len(answer) + 1 > text_len:
        raise ValueError(f"mmu_question + mmu_answer too long: {len(question)} (chat template) + {len(answer)} "
                         f"tokens + EOS > --text-len {text_len}")
    return {"t2i_prompt_ids": prompt, "mmu_prompt_ids": question, "mmu_answer_ids": answer}


def read_examples(jsonl: Path, tokenize: Callable[[str], list[int]], text_len: int,
                  report: BadReporter, chat: Callable[[str], list[int]] | None = None
                  ) -> tuple[list[SourceExample], int]:
    """Pass 1: parse and check every line; returns (good examples, number of non-empty lines).
    ``chat`` (question -> chat-templated ids): read the base-task fields too."""
    base = jsonl.parent
    seen: dict[str, int] = {}
    good: list[SourceExample] = []
    n_lines = 0
    max_ids = text_len - 2
    with open(jsonl, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            n_lines += 1
            default_id = f"{jsonl.name}:{lineno}"
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                report(default_id, f"invalid JSON: {e}", lineno)
                continue
            if not isinstance(rec, dict):
                report(default_id, f"invalid JSON: expected an object, got {type(rec).__name__}", lineno)
                continue
            ex_id = rec.get("id", default_id)
            if not isinstance(ex_id, (str, int)) or isinstance(ex_id, bool) or str(ex_id) == "":
                report(default_id, f"invalid id: {ex_id!r} (must be a non-empty string)", lineno)
                continue
            ex_id = str(ex_id)
            if ex_id in seen:
                report(ex_id, f"duplicate id: first seen on line {seen[ex_id]}", lineno)
                continue
            seen[ex_id] = lineno
            try:
                reasoning = _text_field(rec, "reasoning", required=True)
                instruction = _text_field(rec, "instruction", required=False)
                out_name = _text_field(rec, "output_image", required=True)
                in_name = _text_field(rec, "input_image", required=False)
            except ValueError as e:
                report(ex_id, str(e), lineno)
                continue
            paths = {}
            missing = None
            for key, name in (("input_image", in_name), ("output_image", out_name)):
                if name is None:
                    paths[key] = None
                    continue
                path = Path(name) if Path(name).is_absolute() else base / name
                if not path.is_file():
                    missing = f"{key} file not found: {path}"
                    break
                paths[key] = path
            if missing:
                report(ex_id, missing, lineno)
                continue
            ids = {}
            too_long = None
            for key, text in (("instruction", instruction), ("reasoning", reasoning)):
                ids[key] = np.asarray(tokenize(text) if text is not None else [], dtype=np.int32)
                if len(ids[key]) > max_ids:
                    too_long = (f"{key} too long: {len(ids[key])} tokens + BOS/EOS = {len(ids[key]) + 2} > "
                                f"--text-len {text_len}")
                    break
            if too_long:
                report(ex_id, too_long, lineno)
                continue
            base_ids = None
            if chat is not None:
                try:
                    base_ids = _base_task_ids(rec, tokenize, chat, text_len)
                except ValueError as e:
                    report(ex_id, str(e), lineno)
                    continue
            good.append(SourceExample(ex_id, lineno, paths["input_image"], paths["output_image"],
                                      ids["instruction"], ids["reasoning"], base_ids))
    return good, n_lines


class ImageEncoder:
    """Loads and VQ-encodes the images of a batch of examples in one fixed-shape ``encode`` call."""

    def __init__(self, vq, image_size: int, batch_size: int):
        from PIL import Image
        self.vq, self.size, self.batch_size = vq, image_size, batch_size
        self.black = np.asarray(vq.load_image(Image.new("RGB", (image_size, image_size)), size=image_size))
        self.black_codes: np.ndarray | None = None
        self.num_tokens = vq.num_tokens(image_size, image_size)

    def load(self, path: Path) -> np.ndarray:
        pixels = np.asarray(self.vq.load_image(path, size=self.size))
        if pixels.shape[:2] != (self.size, self.size):
            # the aMUSEd crop keeps the aspect-ratio bucket of a non-square image
            raise ValueError(f"{path} crops to {pixels.shape[1]}x{pixels.shape[0]} pixels; this dataset holds "
                             f"{self.size}x{self.size} images (one grid per dataset)")
        return pixels

    def encode(self, batch: list[SourceExample], report: BadReporter) -> list[dict]:
        """Records of the examples whose images load (the others are reported)."""
        from ..vq.image_io import ImageError
        slots = np.zeros((2 * self.batch_size, self.size, self.size, 3), np.float32)
        layout = []   # (example, output slot, input slot or None)
        k = 0
        for ex in batch:
            try:
                out_px = self.load(ex.output_image)
                in_px = self.load(ex.input_image) if ex.input_image is not None else None
            except (ImageError, OSError, ValueError) as e:
                report(ex.id, f"unreadable image: {e}", ex.line)
                continue
            slots[k] = out_px
            out_slot, k = k, k + 1
            in_slot = None
            if in_px is not None:
                slots[k] = in_px
                in_slot, k = k, k + 1
            layout.append((ex, out_slot, in_slot))
        if not layout:
            return []
        black_slot = None
        if self.black_codes is None and any(s is None for _, _, s in layout):
            black_slot = k            # an example without input image frees one of the 2B slots
            slots[k] = self.black
        codes = np.asarray(self.vq.encode(slots), dtype=np.int32)
        if black_slot is not None:
            self.black_codes = codes[black_slot].copy()
        out = []
        for ex, out_slot, in_slot in layout:
            out.append({
                "id": ex.id,
                "input_image_codes": codes[in_slot] if in_slot is not None else self.black_codes,
                "output_image_codes": codes[out_slot],
                "instruction_ids": ex.instruction_ids,
                "reasoning_ids": ex.reasoning_ids,
                "has_input_image": in_slot is not None,
                "has_instruction": len(ex.instruction_ids) > 0,
                **(ex.base or {}),
            })
        return out


class Progress:
    """``done/total examples, rate ex/s, ETA`` lines every ``every`` seconds (and at the end)."""

    def __init__(self, total: int, log: Callable[[str], None], every: float = 10.0):
        self.total, self.log, self.every = total, log, every
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    @property
    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return self.done / dt if dt > 0 else 0.0

    def update(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.perf_counter()
        if force or now - self.last >= self.every:
            self.last = now
            rate = self.rate
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            self.log(f"pretokenize: {self.done}/{self.total} examples, {rate:.2f} ex/s, "
                     f"ETA {_fmt_seconds(eta)}")


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclasses.dataclass
class _EncodeJob:
    """Pass 2: encodes each split's examples into records, lazily, batch by batch."""

    splits: dict            # split name -> list[SourceExample]
    encoder: ImageEncoder
    report: BadReporter
    progress: Progress
    written: dict = dataclasses.field(default_factory=dict)

    def generate(self, split: str) -> Iterator[dict]:
        examples = self.splits[split]
        self.written[split] = 0
        b = self.encoder.batch_size
        for i in range(0, len(examples), b):
            batch = examples[i:i + b]
            recs = self.encoder.encode(batch, self.report)
            for rec in recs:
                self.written[split] += 1
                yield rec
            self.progress.update(len(batch))
        if self.written[split] == 0:
            raise NoExamplesError(f"split {split!r}: none of its {len(examples)} examples could be encoded")


def pretokenize(src: str | Path, out_dir: str | Path, *, checkpoint: str | Path, vq: str | Path,
                tokenizer: str | Path, text_len: int = 256, image_size: int | None = None,
                system_prompt: str | None = None, shard_size: int = 1000, on_bad: str = "skip", batch_size: int = 8,
                val_fraction: float = 0.0, split_seed: int = 42, overwrite: bool = False, base_tasks: bool = False,
                progress_every: float = 10.0, log: Callable[[str], None] | None = None) -> Summary:
    """Pretokenize ``src`` into ``out_dir`` (see the module docstring); returns a :class:`Summary`.

    The records do not depend on the model variant; the metadata says which one they were made
    for. For a MMaDA-Parallel-A checkpoint (kind ``dimoo``) images go through the aMUSEd VQ with
    -A's aspect-ratio crop (non-square images, whose crop is not square, are reported bad) and
    the metadata holds the tokenized ``system_prompt`` (default: -A's editing prompt) that the
    -A objective puts in every sequence.

    ``val_fraction`` > 0 puts a seeded random ``round(val_fraction * n)`` (at least 1) of the good
    examples into a ``validation`` split (the reference splits 90/10 with seed 42); the rest, in
    source order, form ``train``. ``base_tasks``: read and store the base-task fields (module docstring).
    """
    from .. import load_config, load_vq
    from ..tokenizer import load_tokenizer

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    if text_len < 3:
        raise ValueError(f"--text-len must be >= 3 (BOS + at least one token + EOS), got {text_len}")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"--shard-size and --batch-size must be >= 1, got {shard_size} and {batch_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
    if on_bad not in ON_BAD:
        raise ValueError(f"--on-bad must be one of {ON_BAD}, got {on_bad!r}")
    jsonl = find_jsonl(src)
    final_dir = Path(out_dir)
    check_out_dir(src, final_dir)
    ds_root = final_dir / records.DATASET_NAME
    if ds_root.exists() and not overwrite:
        raise FileExistsError(f"{final_dir} already holds a pretokenized dataset ({ds_root}); "
                              f"pass --overwrite to replace it")
    if final_dir.exists() and not final_dir.is_dir():
        raise FileExistsError(f"{final_dir} exists and is not a folder")
    config = load_config(checkpoint)
    tok = load_tokenizer(tokenizer, config)
    vq_model = load_vq(vq)
    tokens = config.tokens
    dimoo = config.kind == "dimoo"
    if base_tasks and dimoo:
        raise ValueError("base_tasks: base MMaDA's t2i / mmu tasks are for MMaDA (-M) checkpoints, not "
                         "MMaDA-Parallel-A")
    want = "amused" if dimoo else "magvitv2"
    if vq_model.kind != want:
        raise ValueError(f"image tokenizer {vq} is {vq_model.kind!r}; the SFT data of a {config.kind!r} checkpoint "
                         f"uses {want}")
    if vq_model.codebook_size != tokens.codebook_size:
        raise ValueError(f"image tokenizer {vq} has {vq_model.codebook_size} codes but checkpoint {checkpoint} "
                         f"expects {tokens.codebook_size} image tokens")
    image_size = int(image_size or getattr(vq_model.config, "image_size", 512))
    vq_model.grid(image_size, image_size)   # raises unless a multiple of the downsampling factor

    final_dir.parent.mkdir(parents=True, exist_ok=True)
    # everything is written to a temporary folder beside OUT and moved in only after success
    out_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.pretokenize-tmp-", dir=final_dir.parent))
    try:
        summary = _pretokenize_into(out_dir, final_dir, jsonl, tok, vq_model, config, tokens, dimoo, checkpoint,
                                    vq, tokenizer, text_len, image_size, system_prompt, shard_size, on_bad,
                                    batch_size, val_fraction, split_seed, progress_every, log, t0, base_tasks)
    except BaseException as e:
        report = _keep_report(out_dir, final_dir)
        if report is not None and isinstance(e, (BadExampleError, NoExamplesError)):
            e.report_path = report
        raise
    _swap_in(out_dir, final_dir)
    summary.out_dir = str(final_dir)
    (final_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1) + "\n")
    return summary


#: what a pretokenize run writes into OUT (and all that --overwrite replaces there)
OUTPUTS = (records.DATASET_NAME, "bad_examples.jsonl", "summary.json")


def check_out_dir(src: str | Path, out_dir: str | Path) -> None:
    """OUT must not be SRC, inside it, or hold it (``--overwrite`` would swap the source away)."""
    s, o = Path(src).resolve(), Path(out_dir).resolve()
    if o == s or s in o.parents or o in s.parents:
        how = "is" if o == s else ("is inside" if s in o.parents else "contains")
        raise ValueError(f"output folder {out_dir} {how} the source {src}; choose an output folder apart "
                         f"from the source")


def _swap_in(tmp: Path, final_dir: Path) -> None:
    """Move the finished outputs of ``tmp`` into ``final_dir``, replacing the previous run's
    (renamed aside first, deleted only once the new ones are in place); other files of
    ``final_dir`` are left alone."""
    final_dir.mkdir(parents=True, exist_ok=True)
    old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.pretokenize-old-", dir=final_dir.parent))
    moved = []
    try:
        for name in OUTPUTS:
            if (final_dir / name).exists():
                (final_dir / name).rename(old / name)
                moved.append(name)
        for name in OUTPUTS:
            if (tmp / name).exists():
                (tmp / name).rename(final_dir / name)
    except BaseException:
        for name in moved:   # put the previous outputs back
            if not (final_dir / name).exists():
                (old / name).rename(final_dir / name)
        raise
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _keep_report(tmp: Path, final_dir: Path) -> Path | None:
    """After a failed run: the bad-example list goes to ``final_dir`` when that holds no previous
    output (a first run), else it stays in ``tmp`` (all else there is removed); its path."""
    report = tmp / "bad_examples.jsonl"
    if not report.exists() or report.stat().st_size == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    if not any((final_dir / name).exists() for name in OUTPUTS):
        final_dir.mkdir(parents=True, exist_ok=True)
        report.rename(final_dir / report.name)
        shutil.rmtree(tmp, ignore_errors=True)
        return final_dir / report.name
    for child in tmp.iterdir():
        if child != report:
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
    return report


def _pretokenize_into(out_dir, final_dir, jsonl, tok, vq_model, config, tokens, dimoo, checkpoint, vq, tokenizer,
                      text_len, image_size, system_prompt, shard_size, on_bad, batch_size, val_fraction,
                      split_seed, progress_every, log, t0, base_tasks) -> Summary:
    ds_root = out_dir / records.DATASET_NAME
    summary = Summary(out_dir=str(final_dir))
    report = BadReporter(out_dir / "bad_examples.jsonl", on_bad, log)
    summary.bad = report.bad
    good, summary.lines = read_examples(jsonl, tok.encode, text_len, report, tok.chat if base_tasks else None)
    log(f"pretokenize: {jsonl}: {summary.lines} examples, {len(good)} pass the checks, {len(report.bad)} bad")
    if not good:
        raise NoExamplesError(f"{jsonl}: no usable examples (see the bad-example list)")

    splits = {"train": good}
    if val_fraction > 0 and len(good) >= 2:
        n_val = min(len(good) - 1, max(1, round(val_fraction * len(good))))
        val_idx = set(np.random.default_rng(split_seed).permutation(len(good))[:n_val].tolist())
        splits = {"train": [e for i, e in enumerate(good) if i not in val_idx],
                  "validation": [e for i, e in enumerate(good) if i in val_idx]}

    encoder = ImageEncoder(vq_model, image_size, batch_size)
    meta = {
        "format_version": records.FORMAT_VERSION, "text_len": text_len, "image_size": image_size,
        "num_image_tokens": encoder.num_tokens, "bos_id": tokens.bos_id, "eos_id": tokens.eos_id,
        "image_offset": tokens.image_offset, "codebook_size": tokens.codebook_size, "vq_kind": vq_model.kind,
        "source": str(jsonl.resolve()), "checkpoint": str(Path(checkpoint).resolve()),
        "vq": str(Path(vq).resolve()), "tokenizer": str(Path(tokenizer).resolve()),
        "missing_input_image": f"VQ codes of a black {image_size}x{image_size} image",
        "grid": list(vq_model.grid(image_size, image_size)), "model_kind": config.kind,
    }
    if base_tasks:
        meta["base_tasks"] = True
    if dimoo:
        from ..parallel_a.prompts import EDIT_SYSTEM_PROMPT, system_user_prompt, turn_text
        meta["system_prompt"] = EDIT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        meta["system_ids"] = [int(i) for i in tok.encode(meta["system_prompt"])]
        # the -A objective writes the turn tags from the checkpoint's token table; the sampler
        # tokenizes them as text: both must give the same ids
        probe = turn_text(meta["system_prompt"], "x")
        table = system_user_prompt(tokens, meta["system_ids"], tok.encode("x")).tolist()
        if tok.encode_prompt(probe) != table:
            raise ValueError(f"tokenizer {tokenizer}: {probe!r} tokenizes to {tok.encode_prompt(probe)[:12]}..., not "
                             f"the checkpoint's table {table[:12]}... (BOS, <system>, ..., </user> as single tokens)")
    elif system_prompt is not None:
        raise ValueError("system_prompt is for MMaDA-Parallel-A data (the -M layout has no system turn)")
    progress = Progress(len(good), log, progress_every)
    job = _EncodeJob(splits, encoder, report, progress)

    from .builder import write_records
    try:
        write_records(out_dir, {split: job.generate(split) for split in splits}, num_image_tokens=encoder.num_tokens,
                      metadata=meta, examples_per_shard=shard_size)
    except BaseException as e:
        shutil.rmtree(ds_root, ignore_errors=True)   # no half-written dataset
        stop = _find_cause(e, (BadExampleError, NoExamplesError))
        if stop is not None:
            raise stop from None
        raise
    progress.update(0, force=True)

    summary.written = dict(job.written)
    summary.seconds = time.perf_counter() - t0
    summary.encoded_per_second = progress.rate
    return summary


def _find_cause(e: BaseException, kind) -> BaseException | None:
    """The first exception of ``kind`` in ``e``'s cause/context chain (tfds re-raises wrapped)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None

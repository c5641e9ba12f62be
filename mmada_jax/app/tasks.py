"""Sampling jobs: one :class:`Task` per job, one batch runner for all of them.

A task turns a batch of requests into sampler inputs (:meth:`Task.inputs`), runs its sampler
(:meth:`Task.generate`) and says what each sample is (:meth:`Task.samples`: text, image codes,
where the image and text sit in the trajectory, the record fields). :func:`run_task` does the
rest once for every job: checks the requests first, batches them, gives each sample the PRNG key
of its index (so results do not depend on the batch size), decodes the batch's images in one
call, draws trajectories, writes each sample's folder and reports progress (steps/s, samples/s,
ETA; compile time separately).

Each task has two frozen settings classes: the sampler's (``settings``) and its own options
(``options``: image size, prompt budget, system prompt ...); the command line is derived from both.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from ..distributed import on_process_0
from ..mmada import T2ILayout, T2ISettings, TextSettings, generate_t2i, generate_text
from ..mmada.prompts import mmu_question, t2i_gen_prompt
from ..parallel_a import ImageSettings, edit_prompt, generate_image, image_prompt, output_grid
from ..parallel_a import Settings as SettingsA
from ..parallel_a import generate as generate_a
from ..parallel_a.prompts import EDIT_SYSTEM_PROMPT, T2I_SYSTEM_PROMPT, UNCONDITION, turn_text
from ..parallel_a.sampler import max_text_per_step as max_text_per_step_a
from ..parallel_m import Settings as SettingsM
from ..parallel_m import generate as generate_m
from ..parallel_m import inference_prompt
from ..parallel_m.sampler import max_text_per_step as max_text_per_step_m
from ..sampling.runner import report_compiles
from ..settings import setting
from ..vq.image_io import ImageError, open_rgb
from .outputs import prepare_output, trajectory_frames, write_sample
from .pipeline import Pipeline
from .requests import BadRequest, BadRequests, Request, folder_names


@dataclasses.dataclass
class Sample:
    """What one row of a batch produced: its text, its image codes (decoded by the runner), where
    its image and text sit in its trajectory row, and the task's record fields."""

    text: str
    codes: np.ndarray | None
    record: dict
    image_positions: np.ndarray | None = None
    text_positions: np.ndarray | None = None
    pixels_u8: np.ndarray | None = None        # an image to write instead of decoding codes (mmu: the input)


class Task:
    """The protocol every job implements (``name``, ``settings``/``options`` classes, ``steps``)."""

    name: str
    settings: type
    options: type
    needs_image: bool | None = None            # True: every request needs an input image; False: none may

    def check(self, pipe: Pipeline, requests: Sequence[Request], settings, options) -> None:
        """Raise ValueError if the job cannot run with this pipeline, these requests as a whole and
        these settings (each request alone: :meth:`request_errors`)."""

    def prompt(self, pipe: Pipeline, request: Request, options) -> list[int]:
        """The request's prompt ids that count against :meth:`budget`."""
        return pipe.tokenizer.encode(request.prompt)

    def budget(self, pipe: Pipeline, options) -> int | None:
        """The most prompt ids a request may have (None: no budget)."""
        return None

    def request_errors(self, pipe: Pipeline, request: Request, options, truncate: bool) -> list[str]:
        """What is wrong with one request, found before any weights are loaded: a missing or
        unreadable input image, an image where none is taken, a prompt over its budget."""
        errors = []
        if self.needs_image and request.image is None:
            errors.append(f"{self.name} needs an input image")
        if self.needs_image is False and request.image is not None:
            errors.append(f"{self.name} takes no input image")
        if request.image is not None:
            try:
                open_rgb(request.image).close()
            except ImageError as e:
                errors.append(str(e))
        budget = self.budget(pipe, options)
        n = len(self.prompt(pipe, request, options))
        if budget is not None and n > budget and not truncate:
            errors.append(f"the prompt has {n} tokens, more than the budget of {budget} (raise the budget or "
                          f"pass --truncate)")
        return errors

    def steps(self, settings) -> int:
        raise NotImplementedError

    def grid(self, pipe: Pipeline, options) -> tuple[int, int] | None:
        """The output image's code grid (None: no output image)."""
        return None

    def max_text_per_step(self, settings) -> int:
        """The most text tokens one step decodes (the RL trajectory estimator's text slots; 0: the
        task's rollouts record no steps)."""
        return 0

    def inputs(self, pipe: Pipeline, chunk: Sequence[Request], settings, options, *, seed: int, log) -> Any:
        raise NotImplementedError

    def generate(self, pipe: Pipeline, inputs, settings, keys, trajectory: bool):
        raise NotImplementedError

    def samples(self, pipe: Pipeline, chunk: Sequence[Request], inputs, out, settings, options) -> list[Sample]:
        raise NotImplementedError


def _fit(task: Task, pipe: Pipeline, request: Request, options, log) -> list[int]:
    """The request's prompt ids cut to the task's budget (over-long prompts reach here only with
    --truncate: :meth:`Task.request_errors` stops them otherwise)."""
    ids, budget = task.prompt(pipe, request, options), task.budget(pipe, options)
    if budget is None or len(ids) <= budget:
        return ids
    log(f"warning: prompt {request.name} has {len(ids)} tokens; truncated to {budget}")
    return ids[:budget]


def _note_length(pipe: Pipeline, request: Request, length: int, log) -> None:
    """The RoPE positions are computed for any length (as the reference rebuilds its table), so a
    sequence longer than the config's ``max_sequence_length`` runs; it is past the trained context."""
    if length > pipe.config.max_sequence_length:
        log(f"note: request {request.name}: {length} tokens, longer than the model's max_sequence_length "
            f"{pipe.config.max_sequence_length} (runs; RoPE positions are computed for any length)")


def _square_grid(pipe: Pipeline, resolution: int | None) -> tuple[int, tuple[int, int]]:
    size = resolution or getattr(pipe.vq.config, "image_size", 512)
    return size, pipe.vq.grid(size, size)


def _encode(pipe: Pipeline, paths, size: int) -> np.ndarray:
    """VQ codes of the input images; a request without one gets a black ``size`` x ``size`` image,
    the input parallel SFT's data builder gives examples without one (``train.pretokenize``)."""
    from PIL import Image
    srcs = [p if p is not None else Image.new("RGB", (size, size)) for p in paths]
    return np.asarray(pipe.vq.encode(pipe.vq.load_images(srcs, size=size)))


def _input_codes_a(pipe: Pipeline, path, input_size: int, random_crop: bool, seed: int) -> np.ndarray:
    """An input image for -A: the reference's aspect-ratio crop (centred, or Python ``random``
    seeded with ``seed``), VQ-encoded to its [rows, cols] code grid."""
    pixels = np.asarray(pipe.vq.load_image(path, size=input_size, rng=random.Random(seed) if random_crop else None))
    return np.asarray(pipe.vq.encode(pixels[None]))[0].reshape(pipe.vq.grid(*pixels.shape[:2]))


def _check_a(pipe: Pipeline) -> None:
    if pipe.config.kind != "dimoo":
        raise ValueError(f"{pipe.paths['checkpoint']} is a {pipe.config.kind!r} checkpoint; this sampler needs "
                         f"MMaDA-Parallel-A / Lumina-DiMOO (kind 'dimoo')")
    if pipe.vq is None or pipe.vq.kind != "amused":
        raise ValueError(f"MMaDA-Parallel-A needs the aMUSEd VQ (its checkpoint's vqvae/ folder); got "
                         f"{pipe.paths['vq']} ({getattr(pipe.vq, 'kind', None)})")


# ----------------------------------------------------------------------------- MMaDA-Parallel-M

@dataclasses.dataclass(frozen=True)
class ParallelMOptions:
    resolution: int | None = setting(None, "image side in pixels (default: the VQ's, 512)", minimum=16)
    max_prompt_tokens: int = setting(256, "instruction budget in tokens", minimum=1)
    pad_instruction: int = setting(0, "EOS-pad the instruction (BOS and EOS included) to this many tokens, as "
                                      "parallel SFT lays it out (0: unpadded, as the reference inference)",
                                   minimum=0)


class ParallelM(Task):
    """MMaDA-Parallel-M thinking-aware editing: input image + instruction -> reasoning + image. A
    request without an input image (generation) gets a black one, as in parallel SFT's data."""

    name, settings, options, needs_image = "parallel_m", SettingsM, ParallelMOptions, None

    def steps(self, s):
        return s.text_steps

    def grid(self, pipe, o):
        return _square_grid(pipe, o.resolution)[1]

    def budget(self, pipe, o):
        return min(o.max_prompt_tokens, o.pad_instruction - 2) if o.pad_instruction else o.max_prompt_tokens

    def inputs(self, pipe, chunk, s, o, *, seed, log):
        size, grid = _square_grid(pipe, o.resolution)
        codes = _encode(pipe, [r.image for r in chunk], size)
        pairs = [inference_prompt(pipe.config.tokens, c, _fit(self, pipe, r, o, log), o.pad_instruction)
                 for r, c in zip(chunk, codes)]
        return pairs, grid[0] * grid[1]

    def max_text_per_step(self, s) -> int:
        return max_text_per_step_m(s)

    def generate(self, pipe, inputs, s, keys, trajectory, record_steps=None):
        """``record_steps`` [B, s]: keep the steps RL needs (:mod:`mmada_jax.rl`)."""
        pairs, n = inputs
        return generate_m(pipe.model, [p[0] for p in pairs], [p[1] for p in pairs], num_image_tokens=n,
                          settings=s, seed=keys, return_trajectory=trajectory, record_steps=record_steps)

    def samples(self, pipe, chunk, inputs, out, s, o):
        lay, size = out.layout, _square_grid(pipe, o.resolution)[0]
        return [Sample(pipe.tokenizer.decode(out.text_ids[i]), out.image_codes[i], {"resolution": size},
                       lay.image_positions(), lay.text_positions()) for i in range(len(chunk))]


# ----------------------------------------------------------------------------- MMaDA-Parallel-A

@dataclasses.dataclass(frozen=True)
class ParallelAOptions:
    height: int = setting(512, "output height in pixels", minimum=16)
    width: int = setting(512, "output width in pixels", minimum=16)
    system_prompt: str = setting(EDIT_SYSTEM_PROMPT, "the system turn (default: the reference's editing prompt)")
    input_size: int = setting(512, "the input image is cropped to about this size squared, keeping its "
                                   "aspect-ratio bucket", minimum=16)
    random_crop: bool = setting(False, "draw the crop offset from Python's random seeded with --seed, as the "
                                       "reference (default: centred)")
    text_block_length: int = setting(32, "accepted and ignored, as by the reference", aliases=["--text_block_length"])


class ParallelA(Task):
    """MMaDA-Parallel-A thinking-aware editing (``inference.py``): input image + instruction ->
    reasoning + output image of height x width. Requests of one batch may differ in prompt length
    and input aspect ratio (rows are left-padded)."""

    name, settings, options, needs_image = "parallel_a", SettingsA, ParallelAOptions, True

    def check(self, pipe, requests, s, o):
        _check_a(pipe)

    def steps(self, s):
        return s.text_steps

    def grid(self, pipe, o):
        return output_grid(o.height, o.width)

    def inputs(self, pipe, chunk, s, o, *, seed, log):
        t = pipe.config.tokens
        uncon = pipe.tokenizer.encode_prompt(turn_text(o.system_prompt, UNCONDITION))
        eoa = pipe.tokenizer.encode("</answer>")
        prompts = []
        for r in chunk:
            codes = _input_codes_a(pipe, r.image, o.input_size, o.random_crop, seed)
            ids = pipe.tokenizer.encode_prompt(turn_text(o.system_prompt, r.prompt))
            p = edit_prompt(t, ids, uncon, codes, grid=self.grid(pipe, o), text_len=s.text_len, eoa_ids=eoa)
            _note_length(pipe, r, len(p.full_input_ids), log)
            prompts.append((p, codes.shape))
        return prompts

    def max_text_per_step(self, s) -> int:
        return max_text_per_step_a(s)

    def generate(self, pipe, prompts, s, keys, trajectory, record_steps=None):
        """``record_steps`` [B, s]: keep the steps RL needs (:mod:`mmada_jax.rl`)."""
        return generate_a(pipe.model, [p for p, _ in prompts], settings=s, seed=keys, return_trajectory=trajectory,
                          record_steps=record_steps)

    def samples(self, pipe, chunk, prompts, out, s, o):
        lay = out.layout
        return [Sample(pipe.tokenizer.decode(out.text_ids[i]), out.image_codes[i],
                       {"model": "MMaDA-Parallel-A", "input_grid": list(prompts[i][1])},
                       lay.image_positions(), lay.text_positions()) for i in range(len(chunk))]


@dataclasses.dataclass(frozen=True)
class ImageAOptions:
    height: int = setting(1024, "output height in pixels", minimum=16)
    width: int = setting(1024, "output width in pixels", minimum=16)
    system_prompt: str | None = setting(None, "the system turn (default: DiMOO's text-to-image prompt, or the "
                                              "editing prompt for image-to-image)")
    input_size: int = setting(512, "image-to-image: the input is cropped to about this size squared", minimum=16)
    random_crop: bool = setting(False, "image-to-image: random crop offset seeded with --seed (default: centred)")


class ImageA(Task):
    """Lumina-DiMOO / MMaDA-Parallel-A image generation without reasoning text: text-to-image, or
    image-to-image when the requests carry input images (all or none)."""

    name, settings, options = "image_a", ImageSettings, ImageAOptions

    def check(self, pipe, requests, s, o):
        _check_a(pipe)
        if len({r.image is not None for r in requests}) > 1:
            raise ValueError("give input images for all requests (image-to-image) or for none (text-to-image)")

    def steps(self, s):
        return s.steps

    def grid(self, pipe, o):
        return output_grid(o.height, o.width)

    def inputs(self, pipe, chunk, s, o, *, seed, log):
        i2i = chunk[0].image is not None
        system = o.system_prompt or (EDIT_SYSTEM_PROMPT if i2i else T2I_SYSTEM_PROMPT)
        uncon = pipe.tokenizer.encode_prompt(turn_text(system, UNCONDITION))
        prompts = []
        for r in chunk:
            codes = _input_codes_a(pipe, r.image, o.input_size, o.random_crop, seed) if i2i else None
            ids = pipe.tokenizer.encode_prompt(turn_text(system, r.prompt))
            prompts.append(image_prompt(pipe.config.tokens, ids, uncon, grid=self.grid(pipe, o), input_image_codes=codes))
            _note_length(pipe, r, len(prompts[-1].cond), log)
        return prompts, system

    def generate(self, pipe, inputs, s, keys, trajectory):
        return generate_image(pipe.model, inputs[0], settings=s, seed=keys, return_trajectory=trajectory)

    def samples(self, pipe, chunk, inputs, out, s, o):
        answer = inputs[0][0].answer       # the trajectory holds the answer only
        mode = "i2i" if chunk[0].image is not None else "t2i"
        resolved = s.for_mode(mode == "i2i")
        return [Sample(r.prompt, out.image_codes[i],
                       {"model": "Lumina-DiMOO / MMaDA-Parallel-A", "mode": mode, "system_prompt": inputs[1],
                        "guidance": resolved.guidance, "image_cfg": resolved.image_cfg},
                       answer.image_positions()) for i, r in enumerate(chunk)]


# ----------------------------------------------------------------------------- base MMaDA

@dataclasses.dataclass(frozen=True)
class T2IOptions:
    resolution: int | None = setting(None, "image side in pixels (default: the VQ's, 512)", minimum=16)
    max_text_len: int = setting(128, "text prefix length (the reference's M)", minimum=3)


class T2I(Task):
    """Base MMaDA text-to-image (MaskGIT)."""

    name, settings, options, needs_image = "t2i", T2ISettings, T2IOptions, False

    def steps(self, s):
        return s.steps

    def grid(self, pipe, o):
        return _square_grid(pipe, o.resolution)[1]

    def budget(self, pipe, o):
        return o.max_text_len - 2          # <|t2i|> ... with BOS and EOS

    def inputs(self, pipe, chunk, s, o, *, seed, log):
        grid = self.grid(pipe, o)
        texts = [_fit(self, pipe, r, o, log) for r in chunk]
        layout = T2ILayout(o.max_text_len, grid[0] * grid[1])
        ids, _, uids, _ = t2i_gen_prompt(pipe.config.tokens, texts, layout.num_image_tokens, o.max_text_len)
        return ids, uids, layout

    def generate(self, pipe, inputs, s, keys, trajectory):
        ids, uids, layout = inputs
        return generate_t2i(pipe.model, ids, uids, layout=layout, settings=s, seed=keys, return_trajectory=trajectory)

    def samples(self, pipe, chunk, inputs, out, s, o):
        size = _square_grid(pipe, o.resolution)[0]
        return [Sample(r.prompt, out.image_codes[i], {"resolution": size}, out.layout.image_positions())
                for i, r in enumerate(chunk)]


@dataclasses.dataclass(frozen=True)
class TextOptions:
    resolution: int | None = setting(None, "mmu: input image side in pixels (default: the VQ's, 512)", minimum=16)
    thinking: bool = setting(False, "prepend the <think> instruction")
    max_prompt_tokens: int = setting(512, "prompt budget in tokens", minimum=1)


class Text(Task):
    """LLaDA text generation (chat template), or MMU (``mmu=True``): a question about an input image."""

    settings, options = TextSettings, TextOptions

    def __init__(self, mmu: bool = False):
        self.mmu = mmu
        self.name = "mmu" if mmu else "text"
        self.needs_image = mmu or False

    def steps(self, s):
        return s.resolved().steps

    def prompt(self, pipe, request, o):
        return pipe.tokenizer.chat(request.prompt, o.thinking)

    def budget(self, pipe, o):
        return o.max_prompt_tokens

    def inputs(self, pipe, chunk, s, o, *, seed, log):
        if self.mmu:
            size, _ = _square_grid(pipe, o.resolution)
            pixels = pipe.vq.load_images([r.image for r in chunk], size=size)
            codes = np.asarray(pipe.vq.encode(pixels))
        prompts = []
        for i, r in enumerate(chunk):
            chat = _fit(self, pipe, r, o, log)
            prompts.append(mmu_question(pipe.config.tokens, codes[i] + pipe.config.tokens.image_offset, chat)
                           if self.mmu else np.asarray(chat, np.int32))
        if len({len(p) for p in prompts}) > 1:
            raise ValueError("the prompts of one text/mmu batch must have the same token length; use --batch-size 1")
        return np.stack(prompts), (pipe.vq.to_uint8(pixels) if self.mmu else None)

    def generate(self, pipe, inputs, s, keys, trajectory):
        return generate_text(pipe.model, inputs[0], settings=s, seed=keys, return_trajectory=trajectory)

    def samples(self, pipe, chunk, inputs, out, s, o):
        lay = out.layout
        positions = np.arange(lay.prompt_len, lay.total)
        return [Sample(pipe.tokenizer.decode(out.text_ids[i]), None, {}, None, positions,
                       None if inputs[1] is None else inputs[1][i]) for i in range(len(chunk))]


TASKS = {"parallel_m": ParallelM, "parallel_a": ParallelA, "image_a": ImageA, "t2i": T2I,
         "text": Text, "mmu": lambda: Text(mmu=True)}


# ----------------------------------------------------------------------------- the batch runner

def row_keys(seed: int, indices):
    """One PRNG key per sample, from (seed, sample index): results do not depend on batching."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.asarray(indices))


def run_task(task: Task, pipe: Pipeline, requests: Sequence[Request], out_dir, settings=None, options=None, *,
             batch_size: int = 1, seed: int = 0, trajectory: bool = False, truncate: bool = False,
             overwrite: bool = False, skip_bad: bool = False, bad: Sequence[BadRequest] = (), log=print) -> list[dict]:
    """Run ``requests`` through ``task`` in batches and write one folder per sample under
    ``out_dir`` (named by the request's id, else its position). Returns the written records.

    Before any weights are loaded: the job and every request are checked (images readable,
    prompts within budget) and ``out_dir`` is checked writable and free of earlier results (see
    :func:`~mmada_jax.app.outputs.prepare_output`). Bad requests (those found here plus ``bad``,
    e.g. unreadable lines of a prompts file) stop the run with one message listing them all,
    or with ``skip_bad`` are listed in ``out_dir/bad_requests.jsonl`` and the others run. Each
    batch's files are written as soon as it finishes. Several processes (``jax.distributed``):
    every process runs the sampler on the same requests, process 0 alone checks ``out_dir``,
    logs, decodes and writes (the others return no records)."""
    settings = task.settings() if settings is None else settings
    options = task.options() if options is None else options
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"--seed must lie in [0, 2**32) (PRNG keys are made from 32-bit seeds), got {seed}")
    task.check(pipe, requests, settings, options)
    bad = list(bad)
    good = []
    for r in requests:
        errors = task.request_errors(pipe, r, options, truncate)
        if errors:
            where = f"line {r.line}" if r.line is not None else f"request {r.name}"
            bad.append(BadRequest(f"{where}: {'; '.join(errors)}", dataclasses.asdict(r)))
        else:
            good.append(r)
    if bad and not skip_bad:
        raise BadRequests(bad, hint="\n(--skip-bad runs the good requests and lists these in the output folder)")
    if not good:
        raise ValueError("no request left to run")
    requests = good
    names = folder_names(requests)
    # several processes (jax.distributed): all run the sampler, process 0 alone logs and writes
    main = jax.process_index() == 0
    log = log if main else (lambda *_: None)
    on_process_0(lambda: prepare_output(out_dir, names, overwrite=overwrite, bad=bad), f"--out {out_dir}")
    grid = task.grid(pipe, options)
    steps = task.steps(settings)
    log(f"{task.name}: {len(requests)} request(s), {steps} steps"
        + (f", output grid {grid[0]}x{grid[1]} codes" if grid else "")
        + (f"; {len(bad)} bad request(s) skipped (bad_requests.jsonl)" if bad else ""))
    out_dir = Path(out_dir)
    common = {"task": task.name, "seed": seed, "truncate": truncate, **dataclasses.asdict(settings),
              **dataclasses.asdict(options), **pipe.paths, "grid": list(grid) if grid else None}
    records, compile_seconds, done, start_time = [], [], 0, time.perf_counter()

    def on_compile(seconds):
        compile_seconds.append(seconds)
        log(f"  compiled the sampler in {seconds:.1f}s")

    with report_compiles(on_compile):
        for start in range(0, len(requests), batch_size):
            chunk = list(requests[start:start + batch_size])
            t0 = time.perf_counter()
            inputs = task.inputs(pipe, chunk, settings, options, seed=seed, log=log)
            keys = [r.key if r.key is not None else start + i for i, r in enumerate(chunk)]
            out = task.generate(pipe, inputs, settings, row_keys(seed, keys), trajectory)
            samples = task.samples(pipe, chunk, inputs, out, settings, options)
            coded = [i for i, smp in enumerate(samples) if smp.codes is not None] if main else []
            images = {}
            if coded:
                pixels = pipe.vq.to_uint8(pipe.vq.decode(np.stack([samples[i].codes for i in coded]), grid=grid))
                images = dict(zip(coded, pixels))
            for i, (r, smp) in enumerate(zip(chunk, samples) if main else ()):
                frames = None
                if trajectory:
                    vq = pipe.vq if smp.image_positions is not None else None
                    frames = trajectory_frames(out.trajectory[:, i], tokenizer=pipe.tokenizer, vq=vq,
                                               tokens=pipe.config.tokens, image_positions=smp.image_positions,
                                               grid=grid, text_positions=smp.text_positions, title=task.name,
                                               final_codes=smp.codes)
                record = dict(common, **smp.record, id=r.id, row_key=keys[i], prompt=r.prompt, input_image=r.image)
                if smp.codes is not None:
                    record["image_codes"] = np.asarray(smp.codes).tolist()
                image = images.get(i, smp.pixels_u8)
                records.append(write_sample(out_dir / names[start + i], record, smp.text, image, frames))
            seconds = time.perf_counter() - t0 - sum(compile_seconds)   # the batch minus any compile in it
            compile_seconds.clear()
            done += len(chunk)
            eta = (time.perf_counter() - start_time) / done * (len(requests) - done)
            log(f"  {done}/{len(requests)} samples: {steps / seconds:.1f} steps/s, "
                f"{len(chunk) / seconds:.2f} samples/s, ETA {eta:.0f}s")
    return records

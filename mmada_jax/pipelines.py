"""End-to-end sampling: checkpoint + image tokenizer + text tokenizer -> files a person looks at.

:func:`load_pipeline` loads the three pieces and checks that they fit together (codebook size,
tokenizer length = image offset). The ``run_*`` functions take a list of requests, run them in
batches through the jitted samplers, and write per sample: the output PNG (where there is one),
the text, a JSON record of every setting, and optionally a denoising GIF. Progress goes to
``log``: compile time, then per batch the steps/s and samples/s and an ETA.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import prompting
from .config import ModelConfig
from .hf_io import CheckpointError
from .loading import load_model
from .prompting_a import EDIT_SYSTEM_PROMPT, T2I_SYSTEM_PROMPT, UNCONDITION, turn_text
from .sampling import llada_generate, parallel_generate, t2i_generate
from .sampling.runner import report_compiles
from .tokenizer import TextTokenizer, load_tokenizer
from .visualize import frame_steps, masked_image, save_gif, side_by_side, tokens_to_text


@dataclasses.dataclass
class Pipeline:
    model: Any
    config: ModelConfig
    vq: Any
    tokenizer: TextTokenizer
    paths: dict[str, str]


def load_pipeline(checkpoint, vq_path, tokenizer_path, *, dtype=None, mesh=None) -> Pipeline:
    from .vq import load_vq
    model, config = load_model(checkpoint, dtype=dtype, mesh=mesh)
    vq = load_vq(vq_path) if vq_path is not None else None
    if vq is not None and vq.codebook_size != config.tokens.codebook_size:
        raise CheckpointError(f"the checkpoint {checkpoint} has {config.tokens.codebook_size} image codes but the "
                              f"image tokenizer {vq_path} has {vq.codebook_size}: they do not fit together")
    tokenizer = load_tokenizer(tokenizer_path, config)
    return Pipeline(model, config, vq, tokenizer,
                    {"checkpoint": str(checkpoint), "vq": str(vq_path), "tokenizer": str(tokenizer_path)})


@dataclasses.dataclass
class Request:
    prompt: str
    image: str | None = None
    id: str | None = None


def read_requests(prompt: str | None, prompts_file: str | None, images: Sequence[str] = ()) -> list[Request]:
    """Requests from ``--prompt`` (with ``--image`` files, one request per image) or a JSONL file
    whose lines hold ``prompt`` and optionally ``image`` and ``id``."""
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


def _fit(ids: list[int], budget: int, what: str, truncate: bool, log) -> list[int]:
    if len(ids) <= budget:
        return ids
    if not truncate:
        raise ValueError(f"{what} has {len(ids)} tokens, more than the budget of {budget} "
                         f"(raise the budget or pass --truncate)")
    log(f"warning: {what} has {len(ids)} tokens; truncated to {budget}")
    return ids[:budget]


class _Progress:
    def __init__(self, total: int, steps: int, log):
        self.total, self.steps, self.log = total, steps, log
        self.done, self.start = 0, time.perf_counter()

    def batch(self, n: int, seconds: float):
        self.done += n
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        self.log(f"  {self.done}/{self.total} samples: {self.steps / seconds:.1f} steps/s, "
                 f"{n / seconds:.2f} samples/s, ETA {eta:.0f}s")


def _run_batches(requests, batch_size, steps, log, run_one: Callable):
    progress = _Progress(len(requests), steps, log)
    results = []
    compile_seconds = []

    def on_compile(seconds):
        compile_seconds.append(seconds)
        log(f"  compiled the sampler in {seconds:.1f}s")

    with report_compiles(on_compile):
        for start in range(0, len(requests), batch_size):
            chunk = requests[start:start + batch_size]
            t = time.perf_counter()
            results.extend(run_one(start, chunk))
            # the sampler's time: the batch minus any compile that happened in it
            progress.batch(len(chunk), time.perf_counter() - t - sum(compile_seconds))
            compile_seconds.clear()
    return results


def _write(out_dir: Path, index: int, request: Request, record: dict, text: str,
           image_u8: np.ndarray | None, frames=None) -> dict:
    d = out_dir / (request.id or f"{index:04d}")
    d.mkdir(parents=True, exist_ok=True)
    files = {"text": str(d / "text.txt"), "record": str(d / "record.json")}
    (d / "text.txt").write_text(text + "\n")
    if image_u8 is not None:
        from PIL import Image
        Image.fromarray(image_u8).save(d / "image.png")
        files["image"] = str(d / "image.png")
    if frames:
        save_gif(frames, d / "trajectory.gif")
        files["trajectory"] = str(d / "trajectory.gif")
    record = dict(record, prompt=request.prompt, input_image=request.image, text=text, files=files)
    (d / "record.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def _trajectory_frames(pipe: Pipeline, traj: np.ndarray, image_positions, grid, text_region: slice | None,
                       title: str, max_frames: int = 24):
    """Frames of one sample's trajectory [S, L]: the image (codes at ``image_positions``, masked
    cells grey) decoded at chosen steps beside the text region."""
    t = pipe.config.tokens
    steps = frame_steps(traj.shape[0], max_frames)
    frames = []
    if image_positions is not None:
        region = traj[steps][:, np.asarray(image_positions)]
        masked = region == t.mask_id
        codes = np.where(masked, 0, region - t.image_offset).clip(0, t.codebook_size - 1)
        pixels = pipe.vq.to_uint8(pipe.vq.decode(codes, grid=grid))
    for j, s in enumerate(steps):
        text = tokens_to_text(traj[s, text_region], lambda i: pipe.tokenizer.decode([i], False), t.mask_id) \
            if text_region is not None else ""
        if image_positions is not None:
            image = masked_image(pixels[j], masked[j].reshape(grid))
        else:
            from PIL import Image
            image = Image.new("RGB", (256, 256), "white")
        frames.append(side_by_side(image, text, f"{title} step {s + 1}/{traj.shape[0]}"))
    return frames


def run_parallel(pipe: Pipeline, requests: list[Request], out_dir, *, resolution: int | None = None,
                 text_len: int = 256, text_steps: int = 128, image_steps: int = 30, text_cfg: float = 0.0,
                 image_cfg: float = 4.0, text_guidance: str = "reference", text_temperature: float = 0.0,
                 image_temperature: float = 1.0, remasking: str = "low_confidence", max_prompt_tokens: int = 256,
                 truncate: bool = False, batch_size: int = 1, seed: int = 0, trajectory: bool = False,
                 log=print) -> list[dict]:
    """MMaDA-Parallel-M thinking-aware editing: input image + instruction -> reasoning + image."""
    t = pipe.config.tokens
    size = resolution or getattr(pipe.vq.config, "image_size", 512)
    grid = pipe.vq.grid(size, size)
    n = grid[0] * grid[1]
    settings = dict(num_image_tokens=n, text_len=text_len, text_steps=text_steps, image_steps=image_steps,
                    text_cfg=text_cfg, image_cfg=image_cfg, text_guidance=text_guidance,
                    text_temperature=text_temperature, image_temperature=image_temperature, remasking=remasking)
    for r in requests:
        if r.image is None:
            raise ValueError(f"request {r.id or r.prompt[:40]!r}: the parallel (editing) sampler needs an input image")
    log(f"parallel: {len(requests)} request(s), {n} image tokens ({size}x{size}), text budget {text_len}, "
        f"{text_steps} steps ({image_steps} with image updates)")
    out_dir = Path(out_dir)

    def run_one(start, chunk):
        pixels = pipe.vq.load_images([r.image for r in chunk], size=size)
        codes = np.asarray(pipe.vq.encode(pixels))
        pairs = []
        for r, c in zip(chunk, codes):
            ids = _fit(pipe.tokenizer.encode(r.prompt), max_prompt_tokens, f"prompt {r.prompt[:40]!r}", truncate, log)
            pairs.append(prompting.interleave_inference_prompt(t, c, ids))
        out = parallel_generate(pipe.model, [p[0] for p in pairs], [p[1] for p in pairs],
                                seed=_row_keys(seed, start, len(chunk)), return_trajectory=trajectory, **settings)
        images = pipe.vq.to_uint8(pipe.vq.decode(out.image_codes, grid=grid))
        records = []
        lc = out.ids.shape[1] - (n + 2 + text_len)
        for i, r in enumerate(chunk):
            text = pipe.tokenizer.decode(out.text_ids[i])
            frames = (_trajectory_frames(pipe, out.trajectory[:, i], np.arange(lc + 1, lc + 1 + n), grid,
                                         slice(out.ids.shape[1] - text_len, None), "parallel") if trajectory else None)
            record = dict(sampler="parallel", seed=seed, row_key=start + i, resolution=size, **settings,
                          **pipe.paths, image_codes=out.image_codes[i].tolist())
            records.append(_write(out_dir, start + i, r, record, text, images[i], frames))
        return records

    return _run_batches(requests, batch_size, text_steps, log, run_one)


def _check_a(pipe: Pipeline) -> None:
    if pipe.config.kind != "dimoo":
        raise ValueError(f"{pipe.paths['checkpoint']} is a {pipe.config.kind!r} checkpoint; this sampler needs "
                         f"MMaDA-Parallel-A / Lumina-DiMOO (kind 'dimoo')")
    if pipe.vq is None or pipe.vq.kind != "amused":
        raise ValueError(f"MMaDA-Parallel-A needs the aMUSEd VQ (its checkpoint's vqvae/ folder); got "
                         f"{pipe.paths['vq']} ({getattr(pipe.vq, 'kind', None)})")


def _input_codes_a(pipe: Pipeline, path, input_size: int, random_crop: bool, seed: int) -> np.ndarray:
    """An input image for -A: the reference's aspect-ratio crop (centred, or Python ``random``
    seeded with ``seed``), VQ-encoded to its [rows, cols] code grid."""
    import random
    pixels = np.asarray(pipe.vq.load_image(path, size=input_size, rng=random.Random(seed) if random_crop else None))
    return np.asarray(pipe.vq.encode(pixels[None]))[0].reshape(pipe.vq.grid(*pixels.shape[:2]))


def run_ti2ti(pipe: Pipeline, requests: list[Request], out_dir, *, height: int = 512, width: int = 512,
              timesteps: int = 64, text_steps: int = 128, text_gen_length: int = 256, cfg_scale: float = 0.0,
              cfg_img: float = 4.0, temperature: float = 1.0, text_temperature: float = 0.0,
              remasking: str = "low_confidence", system_prompt: str = EDIT_SYSTEM_PROMPT, input_size: int = 512,
              random_crop: bool = False, restrict_text_to_text_ids: bool = False, final_fill: str = "random",
              batch_size: int = 1, seed: int = 0, trajectory: bool = False, log=print) -> list[dict]:
    """MMaDA-Parallel-A thinking-aware editing (``inference.py``): input image + instruction ->
    reasoning + output image of ``height`` x ``width``. The input is cropped to about
    ``input_size``^2 with the reference's aspect-ratio buckets (centred; ``random_crop`` draws the
    offset from Python's ``random`` seeded with ``seed``, as the reference). Requests of one batch
    may differ in prompt length and input aspect ratio (rows are left-padded)."""
    from .prompting_a import output_grid, ti2ti_layout
    from .sampling.ti2ti import generate_from_prompt

    t = pipe.config.tokens
    _check_a(pipe)
    grid = output_grid(height, width)
    for r in requests:
        if r.image is None:
            raise ValueError(f"request {r.id or r.prompt[:40]!r}: the editing sampler needs an input image")
    settings = dict(text_steps=text_steps, timesteps=timesteps, temperature=temperature,
                    text_temperature=text_temperature, cfg_scale=cfg_scale, cfg_img=cfg_img, remasking=remasking,
                    restrict_text_to_text_ids=restrict_text_to_text_ids, final_fill=final_fill)
    uncon_ids = pipe.tokenizer.encode_prompt(turn_text(system_prompt, UNCONDITION))
    eoa_ids = pipe.tokenizer.encode("</answer>")
    log(f"ti2ti (MMaDA-Parallel-A): {len(requests)} request(s), output {height}x{width} ({grid[0]}x{grid[1]} codes), "
        f"text budget {text_gen_length}, {text_steps} steps ({timesteps} with image updates)")
    out_dir = Path(out_dir)
    max_len = pipe.config.max_sequence_length

    def run_one(start, chunk):
        prompts, input_grids = [], []
        for r in chunk:
            codes = _input_codes_a(pipe, r.image, input_size, random_crop, seed)
            input_grids.append(codes.shape)
            prompt_ids = pipe.tokenizer.encode_prompt(turn_text(system_prompt, r.prompt))
            p = ti2ti_layout(t, prompt_ids, uncon_ids, codes, grid=grid, text_gen_length=text_gen_length,
                             eoa_ids=eoa_ids)
            if len(p.full_input_ids) > max_len:
                raise ValueError(f"request {r.id or r.prompt[:40]!r}: the sequence would have {len(p.full_input_ids)} "
                                 f"tokens ({len(prompt_ids)} prompt, {len(p.input_img_token)} input image), more "
                                 f"than the model's max_sequence_length {max_len}; shorten the prompt or the "
                                 f"text budget, or lower --input-size")
            prompts.append(p)
        out = generate_from_prompt(pipe.model, prompts, seed=_row_keys(seed, start, len(chunk)),
                                   return_trajectory=trajectory, **settings)
        images = pipe.vq.to_uint8(pipe.vq.decode(out.image_codes, grid=grid))
        records = []
        for i, (r, p) in enumerate(zip(chunk, prompts)):
            pad, ind = int(out.pads[i]), p.indices
            text = pipe.tokenizer.decode(out.text_ids[i])
            frames = (_trajectory_frames(pipe, out.trajectory[:, i], p.image_position_mapping + pad, grid,
                                         slice(ind.text_start + pad, ind.text_end + pad), "ti2ti")
                      if trajectory else None)
            record = dict(sampler="ti2ti", model="MMaDA-Parallel-A", seed=seed, row_key=start + i, height=height,
                          width=width, text_gen_length=text_gen_length, **settings, system_prompt=system_prompt,
                          input_size=input_size, random_crop=random_crop, input_grid=list(input_grids[i]),
                          **pipe.paths, image_codes=out.image_codes[i].tolist())
            records.append(_write(out_dir, start + i, r, record, text, images[i], frames))
        return records

    return _run_batches(requests, batch_size, text_steps, log, run_one)


def run_image_a(pipe: Pipeline, requests: list[Request], out_dir, *, height: int = 1024, width: int = 1024,
                timesteps: int = 64, cfg_scale: float | None = None, cfg_img: float = 4.0, temperature: float = 1.0,
                system_prompt: str | None = None, input_size: int = 512, random_crop: bool = False,
                batch_size: int = 1, seed: int = 0, trajectory: bool = False, log=print) -> list[dict]:
    """Lumina-DiMOO / MMaDA-Parallel-A image generation without reasoning text: text-to-image, or
    image-to-image when the requests carry input images (all or none). Defaults: DiMOO's
    (T2I cfg 4.0; I2I cfg_scale 2.5 and cfg_img 4.0; 64 steps)."""
    from .prompting_a import image_prompt, output_grid
    from .sampling.dimoo_image import generate_image

    _check_a(pipe)
    i2i = {r.image is not None for r in requests}
    if len(i2i) > 1:
        raise ValueError("give input images for all requests (image-to-image) or for none (text-to-image)")
    i2i = i2i.pop()
    cfg_scale = (2.5 if i2i else 4.0) if cfg_scale is None else cfg_scale
    weights = (cfg_scale, cfg_img) if i2i else (cfg_scale,)
    system_prompt = system_prompt or (EDIT_SYSTEM_PROMPT if i2i else T2I_SYSTEM_PROMPT)
    grid = output_grid(height, width)
    kind = "i2i" if i2i else "t2i"
    settings = dict(height=height, width=width, timesteps=timesteps, cfg_scale=cfg_scale,
                    cfg_img=cfg_img if i2i else None, temperature=temperature, system_prompt=system_prompt)
    uncon = pipe.tokenizer.encode_prompt(turn_text(system_prompt, UNCONDITION))
    log(f"{kind} (Lumina-DiMOO / MMaDA-Parallel-A): {len(requests)} request(s), {height}x{width} "
        f"({grid[0]}x{grid[1]} codes), {timesteps} steps")
    out_dir = Path(out_dir)

    def run_one(start, chunk):
        prompts = []
        for r in chunk:
            codes = _input_codes_a(pipe, r.image, input_size, random_crop, seed) if i2i else None
            ids = pipe.tokenizer.encode_prompt(turn_text(system_prompt, r.prompt))
            prompts.append(image_prompt(pipe.config.tokens, ids, uncon, grid=grid, input_image_codes=codes))
        out = generate_image(pipe.model, prompts, weights=weights, timesteps=timesteps, temperature=temperature,
                             seed=_row_keys(seed, start, len(chunk)), return_trajectory=trajectory)
        images = pipe.vq.to_uint8(pipe.vq.decode(out.image_codes, grid=grid))
        records = []
        for i, (r, p) in enumerate(zip(chunk, prompts)):
            frames = (_trajectory_frames(pipe, out.trajectory[:, i], p.image_positions, grid, None, kind)
                      if trajectory else None)
            record = dict(sampler=kind, model="Lumina-DiMOO / MMaDA-Parallel-A", seed=seed, row_key=start + i,
                          **settings, **pipe.paths, image_codes=out.image_codes[i].tolist())
            records.append(_write(out_dir, start + i, r, record, r.prompt, images[i], frames))
        return records

    return _run_batches(requests, batch_size, timesteps, log, run_one)


def run_t2i(pipe: Pipeline, requests: list[Request], out_dir, *, resolution: int | None = None,
            max_text_len: int = 128, timesteps: int = 15, guidance_scale: float = 3.5, temperature: float = 1.0,
            temperature_mode: str = "compound", truncate: bool = False, batch_size: int = 1, seed: int = 0,
            trajectory: bool = False, log=print) -> list[dict]:
    """Text-to-image (MaskGIT)."""
    size = resolution or getattr(pipe.vq.config, "image_size", 512)
    grid = pipe.vq.grid(size, size)
    n = grid[0] * grid[1]
    settings = dict(num_image_tokens=n, max_text_len=max_text_len, timesteps=timesteps,
                    guidance_scale=guidance_scale, temperature=temperature, temperature_mode=temperature_mode)
    log(f"t2i: {len(requests)} prompt(s), {n} image tokens ({size}x{size}), {timesteps} steps")
    out_dir = Path(out_dir)

    def run_one(start, chunk):
        texts = [_fit(pipe.tokenizer.encode(r.prompt), max_text_len - 2, f"prompt {r.prompt[:40]!r}", truncate, log)
                 for r in chunk]
        ids, _, uids, _ = prompting.t2i_gen_prompt(pipe.config.tokens, texts, n, max_text_len)
        out = t2i_generate(pipe.model, ids, uids, seed=_row_keys(seed, start, len(chunk)),
                           return_trajectory=trajectory, **settings)
        images = pipe.vq.to_uint8(pipe.vq.decode(out.image_codes, grid=grid))
        records = []
        positions = np.arange(ids.shape[1] - n - 1, ids.shape[1] - 1)   # the image region
        for i, r in enumerate(chunk):
            frames = (_trajectory_frames(pipe, out.trajectory[:, i], positions, grid, None, "t2i")
                      if trajectory else None)
            record = dict(sampler="t2i", seed=seed, row_key=start + i, resolution=size, **settings, **pipe.paths,
                          image_codes=out.image_codes[i].tolist())
            records.append(_write(out_dir, start + i, r, record, r.prompt, images[i], frames))
        return records

    return _run_batches(requests, batch_size, timesteps, log, run_one)


def run_text(pipe: Pipeline, requests: list[Request], out_dir, *, mmu: bool = False, resolution: int | None = None,
             gen_length: int = 128, block_length: int = 128, steps: int = 128, temperature: float = 0.0,
             cfg_scale: float = 0.0, remasking: str = "low_confidence", thinking: bool = False,
             max_prompt_tokens: int = 512, truncate: bool = False, batch_size: int = 1, seed: int = 0,
             trajectory: bool = False, log=print) -> list[dict]:
    """LLaDA text generation (chat template), or MMU: a question about an input image."""
    t = pipe.config.tokens
    settings = dict(gen_length=gen_length, block_length=block_length, steps=steps, temperature=temperature,
                    cfg_scale=cfg_scale, remasking=remasking)
    size = grid = None
    if mmu:
        size = resolution or getattr(pipe.vq.config, "image_size", 512)
        grid = pipe.vq.grid(size, size)
        for r in requests:
            if r.image is None:
                raise ValueError(f"request {r.id or r.prompt[:40]!r}: mmu needs an input image (--image)")
    log(f"{'mmu' if mmu else 'text'}: {len(requests)} prompt(s), {gen_length} tokens in {steps} steps")
    out_dir = Path(out_dir)

    def run_one(start, chunk):
        prompts = []
        if mmu:
            pixels = pipe.vq.load_images([r.image for r in chunk], size=size)
            codes = np.asarray(pipe.vq.encode(pixels))
        for i, r in enumerate(chunk):
            chat = _fit(pipe.tokenizer.chat(r.prompt, thinking), max_prompt_tokens, f"prompt {r.prompt[:40]!r}",
                        truncate, log)
            if mmu:
                head = [t["mmu"], t["soi"]] + (codes[i] + t.image_offset).tolist() + [t["eoi"]]
                chat = head + chat
            prompts.append(np.asarray(chat, np.int32))
        if len({len(p) for p in prompts}) > 1:
            raise ValueError("the prompts of one text/mmu batch must have the same token length; "
                             "use --batch-size 1")
        out = llada_generate(pipe.model, np.stack(prompts), seed=_row_keys(seed, start, len(chunk)),
                             return_trajectory=trajectory, **settings)
        records = []
        for i, r in enumerate(chunk):
            text = pipe.tokenizer.decode(out.text_ids[i])
            frames = None
            if trajectory:
                frames = _trajectory_frames(pipe, out.trajectory[:, i], None, None, slice(len(prompts[i]), None),
                                            "mmu" if mmu else "text")
            record = dict(sampler="mmu" if mmu else "text", seed=seed, row_key=start + i, **settings, **pipe.paths)
            image_u8 = pipe.vq.to_uint8(pixels[i:i + 1])[0] if mmu else None
            records.append(_write(out_dir, start + i, r, record, text, image_u8, frames))
        return records

    return _run_batches(requests, batch_size, steps, log, run_one)


def _row_keys(seed: int, start: int, count: int):
    """One PRNG key per sample, from (seed, sample index): results do not depend on batching."""
    import jax
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(start, start + count))

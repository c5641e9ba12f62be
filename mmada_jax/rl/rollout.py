"""Rollouts for RL: G samples per request through the pipeline's sampler, keeping only the recorded
steps (:mod:`mmada_jax.sampling.recording`), with what the reward reads at each of them decoded:
the text decoded so far (special tokens dropped, each run of still-masked positions written as one
:data:`MASK_MARK`, so a reward sees where the holes are; :func:`plain_text` drops them) and the
image predicted at the step (VQ-decoded, uint8). The final outputs come along for sample sheets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..app.requests import Request
from ..mmada.text import TextLayout
from ..sampling.common import SamplerOutput
from ..tokenizer import SPECIAL_STRINGS

MASK_MARK = SPECIAL_STRINGS["mask"]      # the mask token's own string


def text_so_far(tokenizer, ids, mask_id: int) -> str:
    """The decoded text of ``ids`` with each run of masked positions as one :data:`MASK_MARK`."""
    ids = np.asarray(ids)
    parts, start = [], 0
    masked = ids == mask_id
    for i in range(len(ids) + 1):
        if i == len(ids) or masked[i] != masked[start]:
            if masked[start]:
                parts.append(MASK_MARK)
            else:
                piece = tokenizer.decode(ids[start:i]).strip()
                if piece:
                    parts.append(piece)
            start = i
    return " ".join(parts)


def plain_text(text: str) -> str:
    """A :func:`text_so_far` text without its mask marks (what CLIP-like rewards read)."""
    return " ".join(text.replace(MASK_MARK, " ").split())


@dataclasses.dataclass
class Rollouts:
    """B = len(requests) * G rollouts (rows grouped by request) and their recorded steps."""

    requests: list[Request]           # one per row
    output: SamplerOutput             # ``recording`` holds the recorded steps
    texts: list[list[str]]            # [B][s] the text decoded so far at each recorded step
    images: np.ndarray | None         # [B, s, H, W, 3] uint8, the image predicted at each recorded step (None:
                                      # a text task)
    final_texts: list[str]
    final_images: np.ndarray | None   # [B, H, W, 3] uint8 (None: a text task)


TEXT_VIEWS = ("decoded", "predicted")


def rollout(task, pipe, requests: list[Request], group_size: int, record_steps: np.ndarray, keys, settings,
            options, log=print, text_view: str = "decoded") -> Rollouts:
    """Rollouts of a joint text-and-image task (:class:`~mmada_jax.app.tasks.ParallelM` or
    :class:`~mmada_jax.app.tasks.ParallelA`): each request repeated ``group_size`` times
    (consecutive rows), ``record_steps`` [B, s], one PRNG key per row. ``text_view``: what the
    reward reads of the text at a recorded step: ``decoded`` (the tokens decoded so far, holes
    marked; the paper's reading) or ``predicted`` (the text predicted at the step, x0, every slot
    filled, as the image's)."""
    if text_view not in TEXT_VIEWS:
        raise ValueError(f"text_view {text_view!r}; known: {TEXT_VIEWS}")
    rows = [r for r in requests for _ in range(group_size)]
    inputs = task.inputs(pipe, rows, settings, options, seed=0, log=log)
    out = task.generate(pipe, inputs, settings, keys, False, record_steps=record_steps)
    rec, lay = out.recording, out.layout
    b, s = rec.steps.shape
    n = lay.num_image_tokens
    grid = task.grid(pipe, options)
    decode = lambda codes: pipe.vq.to_uint8(pipe.vq.decode(np.asarray(codes), grid=grid))
    pixels = np.asarray(decode(np.concatenate([rec.image_codes.reshape(b * s, n), out.image_codes])))
    images, finals = pixels[:b * s], pixels[b * s:]
    mask_id = pipe.config.tokens.mask_id
    ids = rec.after[:, :, lay.text_positions()] if text_view == "decoded" else rec.text_ids
    texts = [[text_so_far(pipe.tokenizer, ids[i, j], mask_id) for j in range(s)] for i in range(b)]
    return Rollouts(rows, out, texts, images.reshape(b, s, *images.shape[1:]),
                    [pipe.tokenizer.decode(t) for t in out.text_ids], finals)


JOINT_TASKS = ("parallel_m", "parallel_a")


def _check_prompt_len(requests, lengths, prompt_len: int) -> None:
    too_long = [f"{r.name} ({n} tokens)" for r, n in zip(requests, lengths) if prompt_len and n > prompt_len]
    if too_long:
        raise ValueError(f"prompt_len={prompt_len}: longer prompt(s): {', '.join(too_long[:5])}"
                         f"{' ...' if len(too_long) > 5 else ''}; raise prompt_len")


def check_prompt_len(task, pipe, requests: list[Request], options, prompt_len: int) -> None:
    """Every text / mmu prompt fits ``prompt_len`` tokens (checked before any rollout; mmu prompts
    count their image part, ``<|mmu|> <|soi|> image <|eoi|>``)."""
    head = 0
    if task.name == "mmu":
        from ..app.tasks import _square_grid
        grid = _square_grid(pipe, options.resolution)[1]
        head = grid[0] * grid[1] + 3
    _check_prompt_len(requests, [head + len(task.prompt(pipe, r, options)) for r in requests], prompt_len)


def final_rollout(task, pipe, requests: list[Request], group_size: int, keys, settings, options,
                  log=print, prompt_len: int = 0) -> Rollouts:
    """Rollouts scored on their final outputs only (UniGRPO: one reward slot, s = 1), of any task.

    Joint tasks record their last step (:func:`rollout`). Base MMaDA's: ``t2i`` gives images
    (the texts a reward reads are the prompts), ``text`` and ``mmu`` give texts (no images;
    ``images`` is None). Text prompts of different token lengths are sampled in separate calls
    (one per length) and left-padded to the longest for the learner: ``output.ids`` [B, L],
    ``output.pads`` [B] and ``output.layout`` (:class:`~mmada_jax.mmada.text.TextLayout` of the
    longest prompt) say where each row's response is; ``prompt_len`` > 0 pads to that width instead
    (a fixed shape for the learner; a longer prompt is a ValueError naming it)."""
    rows = [r for r in requests for _ in range(group_size)]
    if task.name in JOINT_TASKS:
        last = np.full((len(rows), 1), task.steps(settings) - 1, np.int32)
        return rollout(task, pipe, requests, group_size, last, keys, settings, options, log)
    if task.name == "t2i":
        inputs = task.inputs(pipe, rows, settings, options, seed=0, log=log)
        out = task.generate(pipe, inputs, settings, keys, False)
        pixels = np.asarray(pipe.vq.to_uint8(pipe.vq.decode(np.asarray(out.image_codes), grid=task.grid(pipe, options))))
        out.pads = np.zeros(len(rows), np.int32)
        return Rollouts(rows, out, [[r.prompt] for r in rows], pixels[:, None], [r.prompt for r in rows], pixels)
    # text / mmu: one sampler call per prompt length, rows put back in order, left-padded
    prompts = [np.asarray(task.inputs(pipe, [r], settings, options, seed=0, log=log)[0][0]) for r in requests]
    _check_prompt_len(requests, [len(p) for p in prompts], prompt_len)
    finals = [None] * len(rows)
    for length in sorted({len(p) for p in prompts}):
        which = [i for i, p in enumerate(prompts) if len(p) == length]
        idx = [i * group_size + g for i in which for g in range(group_size)]
        batch = np.stack([prompts[i] for i in which for _ in range(group_size)])
        out = task.generate(pipe, (batch, None), settings, keys[np.asarray(idx)], False)
        for row, ids in zip(idx, np.asarray(out.ids)):
            finals[row] = ids
    gen = out.layout.gen_length
    longest = max(prompt_len, *(len(p) for p in prompts))
    pads = np.asarray([longest - (len(f) - gen) for f in finals], np.int32)
    ids = np.stack([np.concatenate([np.full(p, pipe.config.tokens.pad_id, np.int32), f]) for p, f in zip(pads, finals)])
    output = SamplerOutput(ids=ids, text_ids=ids[:, longest:], pads=pads, layout=TextLayout(longest, gen))
    texts = [pipe.tokenizer.decode(t) for t in output.text_ids]
    return Rollouts(rows, output, [[t] for t in texts], None, texts, None)

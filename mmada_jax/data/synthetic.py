"""A synthetic image-editing dataset (simple shapes) for tests, demos and smoke training.

Each example is a small scene: a plain background and one to three coloured shapes (circle,
square, triangle), each in one cell of a 2x2 grid ("top left", "top right", "bottom left",
"bottom right"); no two shapes share both colour and kind, so every shape can be named
unambiguously. An edit instruction from templates (recolour, remove, add, move, change the
background) is applied to give the output image, and a templated reasoning text describes the
input scene, the edit and the result. Everything is drawn without anti-aliasing, so pixel colours
are exact and the edit is visible pixel for pixel. The reasoning is a function of the instruction
and the input image only, and so is the output image: a model can learn the task exactly.

A fraction of the examples (``t2i_fraction``, default 10%) are "t2i-style": no input image and a
drawing request as the instruction (half of them), an input image but no instruction (a quarter:
the output is the input unchanged), or neither (a quarter: an unconditional scene).

Example ``i`` depends only on ``(seed, i)`` (its own ``numpy`` generator), so a run with
``num=10`` is a prefix of one with ``num=100`` and the files are byte-identical across runs.

:func:`write_dataset` writes ``OUT/examples.jsonl`` (fields ``id``, ``input_image``,
``instruction``, ``reasoning``, ``output_image``, ``task``; image paths relative to ``OUT``;
absent fields are left out) and the PNGs under ``OUT/images/``. Reasoning texts have at most about
510 characters: with the character-level test tokenizer pretokenize them with ``--text-len 512``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: at least 95 apart in RGB from each other and from the backgrounds (an earlier orange, 70 from
#: yellow, was the image tokenizer's most frequent colour collision)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (240, 200, 30), "purple": (140, 60, 180), "cyan": (40, 200, 210),
}
#: far apart in brightness on purpose: a GroupNorm encoder sees a flat background only up to the
#: scale of its features, and learned to give nearly parallel bright colours (an earlier palette had
#: white, beige and light blue) the same codes
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "gray": (150, 150, 150), "black": (30, 30, 30),
}
SHAPES = ("circle", "square", "triangle")
CELLS = ("top left", "top right", "bottom left", "bottom right")   # row-major over the 2x2 grid
EDIT_TASKS = ("recolor", "remove", "add", "move", "background")
T2I_TASKS = ("t2i", "no_instruction", "unconditional")

TEMPLATES = {
    "recolor": ("Change the {color} {shape} to {new}.", "Make the {color} {shape} {new}.",
                "Recolor the {color} {shape} {new}."),
    "remove": ("Remove the {color} {shape}.", "Delete the {color} {shape}.", "Take away the {color} {shape}."),
    "add": ("Add a {new_color} {new_shape} in the {cell}.", "Put a {new_color} {new_shape} in the {cell} corner.",
            "Draw a {new_color} {new_shape} in the {cell}."),
    "move": ("Move the {color} {shape} to the {cell}.", "Put the {color} {shape} in the {cell} corner.",
             "Shift the {color} {shape} to the {cell}."),
    "background": ("Change the background to {bg}.", "Make the background {bg}.", "Paint the background {bg}."),
    "t2i": ("Draw {scene}.", "An image of {scene}.", "Generate a picture of {scene}."),
}


@dataclasses.dataclass(frozen=True)
class Scene:
    """A background name and the shapes by cell: ``{cell: (kind, colour)}``."""

    background: str
    shapes: tuple[tuple[str, str, str], ...]   # (cell, kind, colour), in CELLS order

    def by_cell(self) -> dict[str, tuple[str, str]]:
        return {cell: (kind, color) for cell, kind, color in self.shapes}

    def with_shapes(self, shapes: dict[str, tuple[str, str]], background: str | None = None) -> "Scene":
        ordered = tuple((c, *shapes[c]) for c in CELLS if c in shapes)
        return Scene(background if background is not None else self.background, ordered)

    def describe(self) -> str:
        """``a red circle in the top left and a blue square in the bottom right on a white background``."""
        parts = [f"{_article(color)} {color} {kind} in the {cell}" for cell, kind, color in self.shapes]
        if not parts:
            body = "nothing"
        elif len(parts) == 1:
            body = parts[0]
        else:
            body = ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{body} on {_article(self.background)} {self.background} background"


@dataclasses.dataclass(frozen=True)
class SyntheticExample:
    """One generated example; images are uint8 [size, size, 3] (``input_image`` None if absent)."""

    id: str
    task: str
    input_scene: Scene | None
    output_scene: Scene
    instruction: str | None
    reasoning: str
    input_image: np.ndarray | None
    output_image: np.ndarray


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def random_scene(rng: np.random.Generator, min_shapes: int = 1, max_shapes: int = 3) -> Scene:
    """A background and ``min_shapes..max_shapes`` shapes in distinct cells with distinct (kind, colour)."""
    n = int(rng.integers(min_shapes, max_shapes + 1))
    cells = sorted(rng.choice(len(CELLS), size=n, replace=False).tolist())
    combos = [(k, c) for k in SHAPES for c in COLORS]
    chosen = rng.choice(len(combos), size=n, replace=False).tolist()
    shapes = {CELLS[i]: combos[j] for i, j in zip(cells, chosen)}
    return Scene(_pick(rng, BACKGROUNDS), ()).with_shapes(shapes)


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """Draw a scene: uint8 [size, size, 3]; each shape fills the middle of its grid cell."""
    if size < 8:
        raise ValueError(f"synthetic image size must be >= 8 pixels, got {size}")
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    half = size / 2
    r = size * 0.16
    for cell, kind, color in scene.shapes:
        row, col = divmod(CELLS.index(cell), 2)
        cx, cy = (col + 0.5) * half, (row + 0.5) * half
        box = [round(cx - r), round(cy - r), round(cx + r), round(cy + r)]
        fill = COLORS[color]
        if kind == "circle":
            draw.ellipse(box, fill=fill)
        elif kind == "square":
            draw.rectangle(box, fill=fill)
        elif kind == "triangle":
            draw.polygon([(box[0], box[3]), (box[2], box[3]), (round(cx), box[1])], fill=fill)
        else:
            raise ValueError(f"unknown shape kind {kind!r}; known: {SHAPES}")
    return np.asarray(img, dtype=np.uint8).copy()


def cell_center(cell: str, size: int) -> tuple[int, int]:
    """Pixel (row, col) at the middle of a grid cell: inside any shape drawn there."""
    row, col = divmod(CELLS.index(cell), 2)
    return int((row + 0.5) * size / 2), int((col + 0.5) * size / 2)


def _feasible_edits(scene: Scene) -> list[str]:
    shapes = scene.by_cell()
    tasks = ["background"]
    if shapes:
        tasks += ["recolor", "remove"]
    if len(shapes) < len(CELLS):
        tasks += ["add"]
        if shapes:
            tasks += ["move"]
    return [t for t in EDIT_TASKS if t in tasks]


def apply_edit(rng: np.random.Generator, scene: Scene, task: str) -> tuple[Scene, str, str]:
    """Pick the edit's arguments; returns (output scene, instruction, what-happens sentence)."""
    shapes = scene.by_cell()
    used = set(shapes.values())
    free = [c for c in CELLS if c not in shapes]
    template = _pick(rng, TEMPLATES[task])
    if task == "background":
        bg = _pick(rng, [b for b in BACKGROUNDS if b != scene.background])
        return (scene.with_shapes(shapes, background=bg), template.format(bg=bg),
                f"Only the background changes from {scene.background} to {bg}; the shapes stay where they are.")
    if task == "add":
        new_shape, new_color = _pick(rng, [(k, c) for k in SHAPES for c in COLORS if (k, c) not in used])
        cell = _pick(rng, free)
        out = dict(shapes)
        out[cell] = (new_shape, new_color)
        return (scene.with_shapes(out), template.format(new_color=new_color, new_shape=new_shape, cell=cell),
                f"The {cell} is empty, so {_article(new_color)} {new_color} {new_shape} is drawn there; "
                f"nothing else changes.")
    cell = _pick(rng, list(shapes))
    kind, color = shapes[cell]
    out = dict(shapes)
    if task == "recolor":
        new = _pick(rng, [c for c in COLORS if c != color and (kind, c) not in used])
        out[cell] = (kind, new)
        return (scene.with_shapes(out), template.format(color=color, shape=kind, new=new),
                f"The {color} {kind} is in the {cell}; it keeps its shape and place and becomes {new}. "
                f"Everything else stays the same.")
    if task == "remove":
        del out[cell]
        return (scene.with_shapes(out), template.format(color=color, shape=kind),
                f"The {color} {kind} is in the {cell}; it is removed and the {scene.background} background "
                f"shows there. Everything else stays the same.")
    if task == "move":
        target = _pick(rng, free)
        del out[cell]
        out[target] = (kind, color)
        return (scene.with_shapes(out), template.format(color=color, shape=kind, cell=target),
                f"The {color} {kind} is in the {cell}; it moves to the empty {target}. "
                f"Everything else stays the same.")
    raise ValueError(f"unknown edit task {task!r}; known: {EDIT_TASKS}")


def make_example(seed: int, index: int, size: int = 64, t2i_fraction: float = 0.1) -> SyntheticExample:
    """Example ``index`` of the dataset with ``seed`` (independent of every other example)."""
    if not 0.0 <= t2i_fraction <= 1.0:
        raise ValueError(f"t2i_fraction must lie in [0, 1], got {t2i_fraction}")
    rng = np.random.default_rng([int(seed), int(index)])
    ex_id = f"syn{index:06d}"
    if rng.random() < t2i_fraction:
        task = T2I_TASKS[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    else:
        task = None
    if task is None:
        scene = random_scene(rng)
        task = _pick(rng, _feasible_edits(scene))
        out, instruction, what = apply_edit(rng, scene, task)
        reasoning = (f"The input image shows {scene.describe()}. The instruction is: {instruction} {what} "
                     f"The edited image shows {out.describe()}.")
        return SyntheticExample(ex_id, task, scene, out, instruction, reasoning,
                                render(scene, size), render(out, size))
    if task == "t2i":
        out = random_scene(rng)
        instruction = _pick(rng, TEMPLATES["t2i"]).format(scene=out.describe())
        reasoning = (f"There is no input image, so I draw a new one. The request asks for {out.describe()}. "
                     f"The image shows {out.describe()}.")
        return SyntheticExample(ex_id, task, None, out, instruction, reasoning, None, render(out, size))
    if task == "no_instruction":
        scene = random_scene(rng)
        reasoning = (f"The input image shows {scene.describe()}. No edit is requested, so the image stays "
                     f"unchanged: it shows {scene.describe()}.")
        img = render(scene, size)
        return SyntheticExample(ex_id, task, scene, scene, None, reasoning, img, img.copy())
    out = random_scene(rng)   # unconditional
    reasoning = f"There is no input image and no instruction. I draw {out.describe()}."
    return SyntheticExample(ex_id, task, None, out, None, reasoning, None, render(out, size))


def example_record(ex: SyntheticExample, image_dir: str = "images") -> dict:
    """The JSONL record of an example (image paths relative to the dataset folder)."""
    rec: dict = {"id": ex.id}
    if ex.input_image is not None:
        rec["input_image"] = f"{image_dir}/{ex.id}_in.png"
    if ex.instruction is not None:
        rec["instruction"] = ex.instruction
    rec["reasoning"] = ex.reasoning
    rec["output_image"] = f"{image_dir}/{ex.id}_out.png"
    rec["task"] = ex.task
    return rec


def write_dataset(out_dir: str | Path, num: int, seed: int = 0, size: int = 64,
                  t2i_fraction: float = 0.1) -> Path:
    """Write ``num`` examples to ``out_dir/examples.jsonl`` and ``out_dir/images/``; returns the JSONL path."""
    if num < 0:
        raise ValueError(f"--num must be >= 0, got {num}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    path = out_dir / "examples.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(num):
            ex = make_example(seed, i, size, t2i_fraction)
            rec = example_record(ex)
            if ex.input_image is not None:
                Image.fromarray(ex.input_image).save(out_dir / rec["input_image"])
            Image.fromarray(ex.output_image).save(out_dir / rec["output_image"])
            f.write(json.dumps(rec) + "\n")
    return path

"""A programmatic judge for the synthetic shapes world (:mod:`mmada_jax.data.synthetic`).

It scores one sample (reasoning text + image) with ParaBench's six metrics, 0..100 each, and
``Overall`` = the mean of those that apply (Image Consistency only for items with an input).

Benchmark item fields (one JSON line, built by :func:`benchmark_item`):

``id``            the example id
``category``      the edit task (``recolor``, ``remove``, ``add``, ``move``, ``background``,
                  ``no_instruction``) or ``"generation"`` (``t2i`` and ``unconditional``)
``task``          the synthetic task name (``t2i``/``unconditional`` for generation items)
``instruction``   the instruction text, or None
``input_image``   a path to the input PNG (relative to the judge's ``root``), or None; the judge
                  uses ``input_scene`` and reads the image only when that is missing
``input_scene``   ground truth: the input scene as a dict (:func:`scene_to_dict`), or None
``output_scene``  ground truth: the correct output scene as a dict
``reasoning``     the reference reasoning text (optional; unused by the judge)

A scene dict is ``{"background": "white", "shapes": [{"cell": "top left", "kind": "circle",
"color": "red"}, ...]}``; :func:`scene_from_dict` also accepts ``dataclasses.asdict(scene)``
(shapes as ``[cell, kind, colour]`` lists).

Slots: a scene is compared slot by slot, the background plus the four grid cells (a cell holds
``(kind, colour)`` or is empty). The slots an edit *touches* are those where the ground-truth
input and output scenes differ (none for ``no_instruction``: then every slot is checked).

Metrics:

* **Text Quality**: 100 when the text parses with the generator's reasoning templates (each scene
  description must round-trip through ``Scene.slots()`` exactly, and an edit's "what happens"
  sentence must be one task's sentence). Otherwise
  ``20 * [no mask markers] + 20 * (fraction of words in the world's vocabulary)``.
* **Text Alignment**: the fraction of slots where the result scene the text states (when the text
  does not parse strictly: the description right after "The edited image shows:" / "The image
  shows:", else the last one) equals the ground-truth output scene. For
  ``unconditional`` items (no request): 100 if the stated scene is a valid scene of the world.
* **Image Consistency** (items with an input): the fraction of untouched slots whose recognised
  content in the output image equals the input scene.
* **Image Alignment**: the fraction of touched slots (all slots for generation items and
  ``no_instruction``) where the recognised image equals the ground-truth output. For
  ``unconditional`` items: 100 if the recognised image is a valid, unambiguous scene.
* **Image Quality**: the fraction of slots recognised unambiguously (see :func:`recognize`).
* **Output Alignment**: the fraction of slots where the recognised image equals the scene the text
  states (0 when the text states no scene).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmada_jax.data import synthetic as syn
from mmada_jax.evaluation.judges import METRICS, overall

SLOTS = ("background",) + syn.CELLS
DEFAULT_MASK_MARKERS = ("<|mdm_mask|>", "_")
UNKNOWN = "?"


# ----------------------------------------------------------------------------- scenes <-> dicts

def scene_to_dict(scene: syn.Scene | None) -> dict | None:
    if scene is None:
        return None
    return {"background": scene.background,
            "shapes": [{"cell": c, "kind": k, "color": col} for c, k, col in scene.shapes]}


def scene_from_dict(d: dict | None) -> syn.Scene | None:
    if d is None:
        return None
    shapes = {}
    for s in d["shapes"]:
        cell, kind, color = (s["cell"], s["kind"], s["color"]) if isinstance(s, dict) else s
        shapes[cell] = (kind, color)
    return syn.Scene(d["background"], ()).with_shapes(shapes)


def scene_slots(scene: syn.Scene) -> dict[str, Any]:
    """``{"background": name, cell: (kind, colour) or None}``."""
    cells = scene.by_cell()
    return {"background": scene.background, **{c: cells.get(c) for c in syn.CELLS}}


def valid_scene(scene: syn.Scene) -> bool:
    """A scene the world can hold: known names, distinct cells, distinct (kind, colour) pairs."""
    if scene.background not in syn.BACKGROUNDS:
        return False
    cells = [c for c, _, _ in scene.shapes]
    combos = [(k, col) for _, k, col in scene.shapes]
    return (all(c in syn.CELLS for c in cells) and all(k in syn.SHAPES and col in syn.COLORS for k, col in combos)
            and len(set(cells)) == len(cells) and len(set(combos)) == len(combos))


def benchmark_item(ex: syn.SyntheticExample, image_dir: str = "images") -> dict:
    """The benchmark line of a synthetic example, ground truth included (see the module docstring)."""
    category = "generation" if ex.task in ("t2i", "unconditional") else ex.task
    return {
        "id": ex.id, "category": category, "task": ex.task, "instruction": ex.instruction,
        "input_image": f"{image_dir}/{ex.id}_in.png" if ex.input_image is not None else None,
        "input_scene": scene_to_dict(ex.input_scene), "output_scene": scene_to_dict(ex.output_scene),
        "reasoning": ex.reasoning,
    }


# ----------------------------------------------------------------------------- text parsing

def _alt(words) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


_COLOR, _BG, _SHAPE, _CELL = _alt(syn.COLORS), _alt(syn.BACKGROUNDS), _alt(syn.SHAPES), _alt(syn.CELLS)
_WHAT_RES = {
    "background": re.compile(rf"Only the background changes from (?P<old>{_BG}) to (?P<bg>{_BG}); "
                             r"the shapes stay where they are\."),
    "add": re.compile(rf"The (?P<cell>{_CELL}) is empty, so an? (?P<new_color>{_COLOR}) (?P<new_shape>{_SHAPE}) "
                      r"is drawn there; nothing else changes\."),
    "recolor": re.compile(rf"The (?P<color>{_COLOR}) (?P<shape>{_SHAPE}) is in the (?P<cell>{_CELL}); it keeps "
                          rf"its shape and place and becomes (?P<new>{_COLOR})\. Everything else stays the same\."),
    "remove": re.compile(rf"The (?P<color>{_COLOR}) (?P<shape>{_SHAPE}) is in the (?P<cell>{_CELL}); it is removed "
                         rf"and the (?P<bg>{_BG}) background shows there\. Everything else stays the same\."),
    "move": re.compile(rf"The (?P<color>{_COLOR}) (?P<shape>{_SHAPE}) is in the (?P<cell>{_CELL}); it moves to "
                       rf"the empty (?P<target>{_CELL})\. Everything else stays the same\."),
}
_SLOT = rf"(?:{_COLOR} {_SHAPE}|{re.escape(syn.NO_SHAPE)})"
_SLOTS_RE = re.compile(rf"({_BG}) background" + "".join(rf"; {re.escape(c)}: ({_SLOT})" for c in syn.CELLS))
_SLOTS = _SLOTS_RE.pattern
_FORMS = {
    "edit": re.compile(rf"The input image shows: (?P<inp>{_SLOTS})\. (?P<what>(?:The|Only) .+) "
                       rf"The edited image shows: (?P<out>{_SLOTS})\."),
    "t2i": re.compile(rf"There is no input image, so I draw a new one\. The image shows: (?P<out>{_SLOTS})\."),
    "no_instruction": re.compile(rf"The input image shows: (?P<inp>{_SLOTS})\. No edit is requested, so the image "
                                 rf"stays unchanged\. The edited image shows: (?P<out>{_SLOTS})\."),
    "unconditional": re.compile(rf"There is no input image and no instruction\. The image shows: (?P<out>{_SLOTS})\."),
}
_RESULT_MARKER = re.compile(r"The (?:edited )?image shows: ")
_VOCAB = None


def _vocab() -> set[str]:
    global _VOCAB
    if _VOCAB is None:
        texts = [t for temps in syn.TEMPLATES.values() for t in temps] + [r.pattern for r in _WHAT_RES.values()]
        texts += [r.pattern for r in _FORMS.values()] + list(syn.COLORS) + list(syn.BACKGROUNDS)
        texts += list(syn.SHAPES) + list(syn.CELLS) + ["a", "an", "nothing", "and", "on", "background"]
        _VOCAB = {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}
    return _VOCAB


def parse_slots(desc: str) -> syn.Scene | None:
    """The scene of a ``Scene.slots()`` string, or None unless it round-trips exactly."""
    m = _SLOTS_RE.fullmatch(desc)
    if m is None:
        return None
    cells = {cell: tuple(slot.split(" ")[::-1]) for cell, slot in zip(syn.CELLS, m.groups()[1:])
             if slot != syn.NO_SHAPE}
    scene = syn.Scene(m.group(1), ()).with_shapes(cells)
    return scene if valid_scene(scene) and scene.slots() == desc else None


@dataclasses.dataclass(frozen=True)
class ParsedReasoning:
    form: str                       # "edit", "t2i", "no_instruction", "unconditional"
    task: str | None                # the edit task of the stated instruction (edit form only)
    input_scene: syn.Scene | None   # the input the text states (edit / no_instruction)
    output_scene: syn.Scene         # the result the text states


def parse_reasoning(text: str) -> ParsedReasoning | None:
    """Parse a reasoning text written with the generator's templates; None if it is not one."""
    text = text.strip()
    for form, rx in _FORMS.items():
        m = rx.fullmatch(text)
        if m is None:
            continue
        out = parse_slots(m.group("out"))
        if out is None:
            return None
        if form in ("unconditional", "t2i"):
            return ParsedReasoning(form, None, None, out)
        inp = parse_slots(m.group("inp"))
        if inp is None:
            return None
        if form == "no_instruction":
            return ParsedReasoning(form, None, inp, out) if inp == out else None
        what = m.group("what")
        for task, rx_what in _WHAT_RES.items():
            if rx_what.fullmatch(what):
                return ParsedReasoning(form, task, inp, out)
        return None
    return None


def stated_scene(text: str) -> syn.Scene | None:
    """The result scene a (possibly malformed) text states: the first well-formed description
    right after a result marker ("The edited image shows:", "The image shows:"); without a
    marker, the last well-formed scene description (a garbled result is never replaced by the
    input's description)."""
    parsed = parse_reasoning(text)
    if parsed is not None:
        return parsed.output_scene
    markers = list(_RESULT_MARKER.finditer(text))
    if markers:
        candidates = [m.group(0) for k in markers if (m := _SLOTS_RE.match(text, k.end()))]
    else:
        candidates = [m.group(0) for m in reversed(list(_SLOTS_RE.finditer(text)))]
    for desc in candidates:
        scene = parse_slots(desc)
        if scene is not None:
            return scene
    return None


# ----------------------------------------------------------------------------- image recognition

COLOR_THRESHOLD = 60.0        # max RGB distance from a measured colour to its palette / background name
EXPLAIN_THRESHOLD = 48.0      # max distance of a pixel from the bg..fg colour segment to count as explained
UNEXPLAINED_MAX = 0.05        # max fraction of unexplained pixels in a cell
FRAME_UNEXPLAINED_MAX = 0.1   # max fraction of background-frame pixels farther than EXPLAIN_THRESHOLD from it
EMPTY_MAX = 0.03              # a cell whose shape mask is under this fraction of the cell is empty
SPECK_MAX = 0.01              # ... and is ambiguous if more than this fraction is not background
# shape prototypes in (fill ratio = mask area / bounding box area, taper = (mean width of the bottom
# third of the box - mean width of the top third) / box width): what render() draws
KIND_FEATURES = {"square": (1.0, 0.0), "circle": (float(np.pi / 4), 0.0), "triangle": (0.5, 2 / 3)}
KIND_TOLERANCE = 0.2          # max feature distance to the nearest prototype
KIND_MARGIN = 0.04            # min lead of the nearest prototype over the second


def load_image(image, root: str | Path | None = None) -> np.ndarray:
    """uint8 [H, W, 3] from an array (uint8, or float in [0, 1]) or an image path."""
    if isinstance(image, (str, Path)):
        from PIL import Image
        path = Path(image)
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {arr.shape}")
    return arr[..., :3]


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    names = list(palette)
    d = np.linalg.norm(np.asarray([palette[n] for n in names], np.float64) - rgb, axis=-1)
    i = int(np.argmin(d))
    return names[i], float(d[i])


def _segment_distance(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each pixel [N, 3] from the RGB segment a..b (blends of the two colours)."""
    ab = b - a
    den = float(ab @ ab)
    t = np.clip((px - a) @ ab / den, 0.0, 1.0) if den > 0 else np.zeros(len(px))
    return np.linalg.norm(px - (a + t[:, None] * ab), axis=-1)


def _denoise(mask: np.ndarray) -> np.ndarray:
    """Drop mask pixels with fewer than 2 mask neighbours (3x3)."""
    p = np.pad(mask.astype(np.int32), 1)
    h, w = mask.shape
    n = sum(p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - mask
    return mask & (n >= 2)


def _classify(box: np.ndarray) -> tuple[str, float, tuple[float, float]]:
    """The kind of a shape mask cropped to its bounding box: (kind or "?", distance, features)."""
    bh, bw = box.shape
    ratio = float(box.mean())
    widths = box.sum(axis=1) / bw
    third = max(1, bh // 3)
    taper = float(widths[-third:].mean() - widths[:third].mean())
    d = {k: float(np.hypot(ratio - r, taper - t)) for k, (r, t) in KIND_FEATURES.items()}
    first, second = sorted(d, key=d.get)[:2]
    ok = d[first] <= KIND_TOLERANCE and d[second] - d[first] >= KIND_MARGIN
    return (first if ok else UNKNOWN), d[first], (ratio, taper)


@dataclasses.dataclass
class Recognition:
    """A scene recovered from pixels: ``slots`` (unknown parts as ``"?"``), which slots are
    ambiguous and why, and the measured shape fill ratios by cell."""

    slots: dict[str, Any]
    ambiguous: dict[str, str]
    ratios: dict[str, float]

    def scene(self) -> syn.Scene | None:
        """The recognised scene, or None if any slot is unknown."""
        if any(v == UNKNOWN or (isinstance(v, tuple) and UNKNOWN in v) for v in self.slots.values()):
            return None
        return syn.Scene(self.slots["background"], ()).with_shapes(
            {c: v for c, v in self.slots.items() if c != "background" and v is not None})


def recognize(image, root: str | Path | None = None) -> Recognition:
    """Recover the scene of an image of the synthetic world (any size, robust to mild noise and blur).

    Background: the median colour of a frame along the border and the two mid lines (where no shape
    is drawn), named by the nearest background colour. Per cell: pixels farther than
    ``EXPLAIN_THRESHOLD`` from the measured background are shape candidates; their median colour
    names the shape's palette colour; the shape mask is the pixels closer to that colour than to the
    background (isolated pixels dropped); the kind is the nearest prototype in (fill ratio = mask
    area / bounding-box area, taper = bottom-third minus top-third mean width): square (1, 0),
    circle (pi/4, 0), triangle (1/2, 2/3). A slot is ambiguous when a colour is farther than
    ``COLOR_THRESHOLD`` from its name, more than ``UNEXPLAINED_MAX`` of its pixels (the frame:
    ``FRAME_UNEXPLAINED_MAX``) are not blends of the background and the shape colour, the shape
    features are farther than ``KIND_TOLERANCE`` from every prototype (or within ``KIND_MARGIN`` of
    two), or the shape touches the cell's edge. Meant for images of at least 32 pixels (the 16-pixel
    render already has shapes touching the cell edges).
    """
    img = load_image(image, root).astype(np.float64)
    h, w, _ = img.shape
    fw = max(1, int(round(0.04 * min(h, w))))
    frame = np.zeros((h, w), bool)
    frame[:fw], frame[-fw:], frame[:, :fw], frame[:, -fw:] = True, True, True, True
    frame[h // 2 - fw:h // 2 + fw] = True
    frame[:, w // 2 - fw:w // 2 + fw] = True
    fpx = img[frame]
    bg_rgb = np.median(fpx, axis=0)
    bg_name, bg_d = _nearest(bg_rgb, syn.BACKGROUNDS)
    slots: dict[str, Any] = {}
    ambiguous: dict[str, str] = {}
    ratios: dict[str, float] = {}
    bad = float(np.mean(np.linalg.norm(fpx - bg_rgb, axis=-1) > EXPLAIN_THRESHOLD))
    slots["background"] = bg_name if bg_d <= COLOR_THRESHOLD else UNKNOWN
    if bg_d > COLOR_THRESHOLD:
        ambiguous["background"] = f"background colour {bg_rgb.round().tolist()} is {bg_d:.0f} from {bg_name}"
    elif bad > FRAME_UNEXPLAINED_MAX:
        ambiguous["background"] = f"{bad:.0%} of the background frame is not {bg_name}"
    for idx, cell in enumerate(syn.CELLS):
        row, col = divmod(idx, 2)
        r0, r1 = row * h // 2, (row + 1) * h // 2
        c0, c1 = col * w // 2, (col + 1) * w // 2
        px = img[r0:r1, c0:c1]
        ch, cw = px.shape[:2]
        flat = px.reshape(-1, 3)
        cand = np.linalg.norm(flat - bg_rgb, axis=-1) > EXPLAIN_THRESHOLD
        if cand.mean() < EMPTY_MAX:
            # an empty cell shows the background: unknown if the background is not one of the world's
            slots[cell] = None if slots["background"] != UNKNOWN else UNKNOWN
            if slots[cell] == UNKNOWN:
                ambiguous[cell] = "plain, but not a background colour of the world"
            elif cand.mean() > SPECK_MAX:
                ambiguous[cell] = f"{cand.mean():.1%} stray non-background pixels"
            continue
        # the shape colour: the median of the candidates farthest from the background (the interior,
        # not the blended edge)
        dist = np.linalg.norm(flat[cand] - bg_rgb, axis=-1)
        fg_rgb = np.median(flat[cand][dist >= np.median(dist)], axis=0)
        color, cd = _nearest(fg_rgb, syn.COLORS)
        mask = (np.linalg.norm(flat - fg_rgb, axis=-1) < np.linalg.norm(flat - bg_rgb, axis=-1)).reshape(ch, cw)
        mask = _denoise(mask)
        if mask.mean() < EMPTY_MAX:
            slots[cell] = None
            ambiguous[cell] = f"{cand.mean():.0%} scattered non-background pixels"
            continue
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        kind, _, features = _classify(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
        ratios[cell] = features[0]
        unexplained = float(np.mean(_segment_distance(flat, bg_rgb, fg_rgb) > EXPLAIN_THRESHOLD))
        reasons = []
        if cd > COLOR_THRESHOLD:
            reasons.append(f"colour {fg_rgb.round().tolist()} is {cd:.0f} from {color}")
        if unexplained > UNEXPLAINED_MAX:
            reasons.append(f"{unexplained:.0%} of the pixels are neither background nor the shape colour")
        if kind == UNKNOWN:
            reasons.append(f"fill ratio {features[0]:.2f} and taper {features[1]:.2f} fit no one shape")
        if rows[0] == 0 or cols[0] == 0 or rows[-1] == ch - 1 or cols[-1] == cw - 1:
            reasons.append("the shape touches the cell edge")
        slots[cell] = (kind, color if cd <= COLOR_THRESHOLD else UNKNOWN)
        if reasons:
            ambiguous[cell] = "; ".join(reasons)
    return Recognition(slots, ambiguous, ratios)


# ----------------------------------------------------------------------------- the judge

def _fmt(v) -> str:
    if v is None:
        return "empty"
    return " ".join(v) if isinstance(v, tuple) else str(v)


def _compare(got: dict, want: dict, slots) -> tuple[float, str]:
    slots = list(slots)
    wrong = [s for s in slots if got[s] != want[s]]
    score = 100.0 * (len(slots) - len(wrong)) / len(slots)
    if not wrong:
        return score, f"all {len(slots)} checked slots match ({', '.join(slots)})"
    return score, "; ".join(f"{s}: {_fmt(got[s])} instead of {_fmt(want[s])}" for s in wrong)


def stated_slots(text: str) -> dict[str, Any]:
    """The result slots a partly decoded text already states: after its last result marker, the
    background and each cell whose statement is complete (a masked position, written as a mask
    marker, breaks a statement). A complete text states all five."""
    markers = list(_RESULT_MARKER.finditer(text))
    if not markers:
        return {}
    return described_slots(text[markers[-1].end():], anchored=True)


def described_slots(text: str, anchored: bool = False) -> dict[str, Any]:
    """The slots a :meth:`~mmada_jax.data.synthetic.Scene.slots`-style description states
    (``white background; top left: red circle; top right: no shape; ...``): the background and
    each cell whose statement is complete. ``anchored``: the background must open the text."""
    found: dict[str, Any] = {}
    if m := (re.match if anchored else re.search)(rf"({_BG}) background(?=;|\.|$)", text):
        found["background"] = m.group(1)
    for cell in syn.CELLS:
        if m := re.search(rf"(?:^|; ){re.escape(cell)}: ({_SLOT})(?=;|\.|$)", text):
            found[cell] = None if m.group(1) == syn.NO_SHAPE else tuple(m.group(1).split(" ")[::-1])
    return found


NOT_STATED = "(not stated)"


def slot_accuracy(slots: dict[str, Any], truth: syn.Scene) -> tuple[float, str]:
    """(0-100, why): the share of the five slots (background, four cells) that ``slots`` gets
    right (a slot it does not state is wrong)."""
    return _compare({s: slots.get(s, NOT_STATED) for s in SLOTS}, scene_slots(truth), SLOTS)


def object_accuracy(slots: dict[str, Any], truth: syn.Scene) -> float:
    """0-100: the share of the background and the truth's shapes that ``slots`` gets right, where
    every shape found in a cell the truth leaves empty adds one more miss. Unlike
    :func:`slot_accuracy`, an image with no shapes earns only its background (slot accuracy gives
    a one-shape request's empty image 80): the reward that does not teach dropping shapes."""
    want = scene_slots(truth)
    shapes = [c for c in syn.CELLS if want[c] is not None]
    extra = sum(want[c] is None and slots.get(c) not in (None, NOT_STATED) for c in syn.CELLS)
    right = sum(slots.get(s, NOT_STATED) == want[s] for s in ("background", *shapes))
    return 100.0 * right / (1 + len(shapes) + extra)


def output_alignment(text: str, image, root: str | Path | None = None) -> float:
    """Output Alignment as a reward (0-100), on complete and partly decoded texts alike: the share
    of the five result slots that the text states (:func:`stated_slots`) AND the image shows. On a
    well-formed complete text this is the judge's Output Alignment; a text that states nothing yet
    scores 0. Needs no ground truth."""
    stated = stated_slots(text)
    if not stated:
        return 0.0
    got = recognize(image, root).slots
    return 100.0 * sum(got[slot] == value for slot, value in stated.items()) / len(SLOTS)


class SyntheticJudge:
    """Scores a sample of the synthetic shapes world (see the module docstring for the metrics).

    ``mask_markers``: substrings that mark an unfilled (masked) position of the text.
    ``root``: the folder relative image paths are resolved against.
    """

    metrics = METRICS

    def __init__(self, mask_markers=DEFAULT_MASK_MARKERS, root: str | Path | None = None):
        self.mask_markers = tuple(mask_markers)
        self.root = root

    def text_quality(self, text: str) -> tuple[float, str]:
        masks = sum(text.count(m) for m in self.mask_markers if m)
        parsed = parse_reasoning(text) if masks == 0 else None
        if parsed is not None:
            return 100.0, f"a well-formed {parsed.form} reasoning"
        words = re.findall(r"[A-Za-z]+", text)
        known = sum(w.lower() in _vocab() for w in words) / len(words) if words else 0.0
        score = 20.0 * (masks == 0) + 20.0 * known
        why = [f"{masks} mask markers left"] if masks else []
        why.append(f"does not parse with the reasoning templates; {known:.0%} of the words are in the vocabulary")
        return score, "; ".join(why)

    def score(self, item: dict, text: str, image) -> dict:
        task = item.get("task") or item.get("category")
        gt_out = scene_from_dict(item["output_scene"])
        gt_in = scene_from_dict(item.get("input_scene"))
        if gt_in is None and item.get("input_image") is not None:   # no ground truth: read the input image
            gt_in = recognize(item["input_image"], self.root).scene()
        want = scene_slots(gt_out)
        scores: dict[str, float] = {}
        reasons: dict[str, str] = {}

        scores["Text Quality"], reasons["Text Quality"] = self.text_quality(text)

        stated = stated_scene(text)
        if stated is None:
            scores["Text Alignment"], reasons["Text Alignment"] = 0.0, "the text states no result scene"
        elif task == "unconditional":
            ok = valid_scene(stated) and 1 <= len(stated.shapes) <= 3
            scores["Text Alignment"] = 100.0 * ok
            reasons["Text Alignment"] = "a valid scene" if ok else "not a valid scene of the world"
        else:
            scores["Text Alignment"], reasons["Text Alignment"] = _compare(scene_slots(stated), want, SLOTS)

        rec = recognize(image, self.root)
        touched = [s for s in SLOTS if gt_in is not None and scene_slots(gt_in)[s] != want[s]]
        if gt_in is not None:
            untouched = [s for s in SLOTS if s not in touched]
            scores["Image Consistency"], reasons["Image Consistency"] = _compare(
                rec.slots, scene_slots(gt_in), untouched)

        if task == "unconditional":
            scene = rec.scene()
            ok = scene is not None and not rec.ambiguous and valid_scene(scene) and 1 <= len(scene.shapes) <= 3
            scores["Image Alignment"] = 100.0 * ok
            reasons["Image Alignment"] = "a valid scene" if ok else "not a valid, unambiguous scene of the world"
        else:
            scores["Image Alignment"], reasons["Image Alignment"] = _compare(rec.slots, want, touched or SLOTS)

        clear = [s for s in SLOTS if s not in rec.ambiguous]
        scores["Image Quality"] = 100.0 * len(clear) / len(SLOTS)
        reasons["Image Quality"] = ("every slot recognised unambiguously" if not rec.ambiguous else
                                    "; ".join(f"{s}: {r}" for s, r in rec.ambiguous.items()))

        if stated is None:   # (output_alignment computes this alone, for rewards)
            scores["Output Alignment"], reasons["Output Alignment"] = 0.0, "the text states no scene to compare"
        else:
            scores["Output Alignment"], reasons["Output Alignment"] = _compare(rec.slots, scene_slots(stated), SLOTS)

        scores["Overall"] = overall(scores)
        reasons["Overall"] = f"mean of {len(scores) - 1} metrics"
        return {"scores": scores, "reasons": reasons}


class BaseTaskJudge:
    """The demo world's base MMaDA tasks (``python -m train.synthetic --benchmark DIR --base-task``):
    ``Scene Accuracy``, the share (0-100) of the five scene slots that a ``t2i`` item's image shows
    as its ``output_scene`` has them (pixel recognition), or that an ``mmu`` item's text describes as
    its ``input_scene`` has them (:func:`described_slots`); ``Overall`` equals it."""

    metrics = ("Scene Accuracy", "Overall")

    def __init__(self, root: str | Path | None = None, **_):
        self.root = root

    def score(self, item: dict, text: str, image) -> dict:
        task = item.get("task") or item.get("category")
        if task == "t2i":
            score, why = slot_accuracy(recognize(image, self.root).slots, scene_from_dict(item["output_scene"]))
        elif task == "mmu":
            score, why = slot_accuracy(described_slots(text), scene_from_dict(item["input_scene"]))
        else:
            raise ValueError(f"item {item.get('id')!r}: the synthetic_base judge scores t2i and mmu items, "
                             f"not {task!r}")
        return {"scores": {"Scene Accuracy": score, "Overall": score},
                "reasons": {"Scene Accuracy": why, "Overall": "= Scene Accuracy"}}


BASE_TASKS = ("t2i", "mmu")
MMU_QUESTION = syn.MMU_QUESTION


def write_base_benchmark(out_dir: str | Path, num: int, task: str, seed: int = 0, size: int = 64) -> Path:
    """``num`` items of a base MMaDA task of the world to ``out_dir/benchmark.jsonl``: ``t2i`` (a
    drawing request of a random scene; ground truth ``output_scene``) or ``mmu`` (an image of a
    random scene, the question :data:`MMU_QUESTION`, ground truth ``input_scene`` and the
    ``answer``: :func:`~mmada_jax.data.synthetic.mmu_answer`). Item ``i`` depends only on (seed, i)."""
    if task not in BASE_TASKS:
        raise ValueError(f"base task {task!r}; known: {BASE_TASKS}")
    if num < 0:
        raise ValueError(f"--num must be >= 0, got {num}")
    out_dir = Path(out_dir)
    path = out_dir / "benchmark.jsonl"
    if path.exists():
        raise ValueError(f"{path} exists: write the benchmark to another folder")
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(num):
            rng = np.random.default_rng([seed, i, BASE_TASKS.index(task)])
            scene = syn.random_scene(rng)
            item = {"id": f"{task}{i:06d}", "category": task, "task": task}
            if task == "t2i":
                template = syn.TEMPLATES["t2i"][int(rng.integers(len(syn.TEMPLATES["t2i"])))]
                item.update(instruction=template.format(scene=scene.describe()), input_image=None,
                            output_scene=scene_to_dict(scene))
            else:
                item.update(instruction=MMU_QUESTION, input_image=f"images/{item['id']}_in.png",
                            input_scene=scene_to_dict(scene), answer=syn.mmu_answer(scene))
                Image.fromarray(syn.render(scene, size)).save(out_dir / item["input_image"])
            f.write(json.dumps(item) + "\n")
    return path


def write_benchmark(out_dir: str | Path, num: int, seed: int = 0, size: int = 64,
                    t2i_fraction: float = 0.1, generation: int | None = None) -> Path:
    """Write ``num`` benchmark items to ``out_dir/benchmark.jsonl`` and their input images to
    ``out_dir/images/`` (an existing benchmark is never replaced); returns the JSONL path.

    ``generation`` = M: ``num`` editing items and M generation items instead (the first of each
    among the examples of ``seed``; the other t2i-style examples are skipped)."""
    if num < 0 or (generation is not None and generation < 0):
        raise ValueError(f"--num and --generation must be >= 0, got {num} and {generation}")
    if generation and t2i_fraction <= 0:
        raise ValueError("--generation needs --t2i-fraction > 0 (generation items are the t2i-style examples)")
    out_dir = Path(out_dir)
    path = out_dir / "benchmark.jsonl"
    if path.exists():
        raise ValueError(f"{path} exists: write the benchmark to another folder")
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    want = {"edit": num, "generation": generation} if generation is not None else None
    with open(path, "w", encoding="utf-8") as f:
        i, written = 0, 0
        while (written < num) if want is None else any(want.values()):
            ex = syn.make_example(seed, i, size, t2i_fraction)
            i += 1
            item = benchmark_item(ex, image_dir="images")
            if want is not None:
                group = "edit" if ex.task in syn.EDIT_TASKS else item["category"]
                if not want.get(group):
                    continue
                want[group] -= 1
            if item["input_image"] is not None:
                Image.fromarray(ex.input_image).save(out_dir / item["input_image"])
            f.write(json.dumps(item) + "\n")
            written += 1
    return path

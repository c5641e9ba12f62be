"""Command-line flags derived from settings classes: one flag per field (``--text-len`` for
``text_len``, plus the reference's names as aliases), its help and choices from the field, its
default from the field's default, so the CLI never restates a default.

A subcommand may serve several tasks (``parallel``: MMaDA-Parallel-M or -A). Flags of fields that
only some of its tasks have are grouped as such, and giving one for another task is an error
naming the flag; the help text lists each task's default where they differ.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

#: the repository (the tiny test checkpoints and fixtures the commands run without --checkpoint)
ROOT = Path(__file__).resolve().parents[2]
TINY = {"checkpoint": ROOT / "tests/golden/mmada_tiny", "vq": ROOT / "tests/golden/magvitv2_tiny",
        "tokenizer": ROOT / "tests/fixtures/tiny_tokenizer", "image": ROOT / "tests/fixtures/demo_input.png",
        "prompt": "Make the sky at sunset orange."}
TINY_A = dict(TINY, checkpoint=ROOT / "tests/golden/dimoo_tiny", vq=ROOT / "tests/golden/amused_vq_tiny",
              tokenizer=ROOT / "tests/fixtures/tiny_tokenizer_a")
#: the trained demo MMaDA-Parallel-M of the synthetic shapes world; ``example`` is a one-item
#: benchmark of the world (instruction, input image, ground truth) that the main command runs
#: the default model: the shapes-world demo after ParaRL (its SFT starting point, demo/parallel_m_shapes, holds the example)
DEMO = {"checkpoint": ROOT / "demo/parallel_m_shapes_pararl",
        "example": ROOT / "demo/parallel_m_shapes/example/benchmark.jsonl"}


def demo_example() -> tuple[dict, Path]:
    """The demo's example request: (its benchmark item, the folder its image paths are relative to)."""
    from ..jsonl import objects
    path = DEMO["example"]
    item = next(obj for _, obj in objects(path))
    return item, path.parent


#: a checkpoint's sampling defaults (:func:`checkpoint_defaults`)
SAMPLING_FILE = "sampling.yaml"
#: per subcommand: the tasks it serves, by --model (m: MMaDA / MMaDA-Parallel-M, a: -A / Lumina-DiMOO)
SUBCOMMANDS = {"parallel": {"m": "parallel_m", "a": "parallel_a"}, "t2i": {"m": "t2i", "a": "image_a"},
               "mmu": {"m": "mmu"}, "text": {"m": "text"}}


def subcommand_tasks(command: str) -> dict:
    """{model letter: task} of a subcommand."""
    from .tasks import TASKS
    return {model: TASKS[name]() for model, name in SUBCOMMANDS[command].items()}


def choose_task(command: str, args: argparse.Namespace, kind: str):
    """The task of ``command`` for a checkpoint of ``kind`` (and ``args.model``), with its settings
    and options from the flags; a flag of another task, or --model disagreeing with the
    checkpoint, is a ValueError naming it."""
    tasks = subcommand_tasks(command)
    model = "a" if kind == "dimoo" and "a" in tasks else "m"
    chosen = getattr(args, "model", None)
    if chosen is not None and chosen != model:
        raise ValueError(f"--model {chosen} but {args.checkpoint} is a {kind!r} checkpoint "
                         f"({'MMaDA-Parallel-A / Lumina-DiMOO' if model == 'a' else 'MMaDA'})")
    task = tasks[model]
    context = f"{args.checkpoint}, a {kind!r} checkpoint ({task.name})"
    if task.needs_image is False and getattr(args, "image", None):
        raise ValueError(f"--image: not for {context}")
    defaults = checkpoint_defaults(args.checkpoint, task)
    settings, options = settings_from_args(task, args, [t for m, t in tasks.items() if m != model], context,
                                           defaults)
    return task, settings, options


def checkpoint_defaults(checkpoint, task) -> dict:
    """The sampling defaults a checkpoint carries for ``task``: its ``sampling.yaml`` holds
    ``{task name: {field: value}}`` (the settings a trained model was made for: its text budget,
    its instruction padding ...); flags given on the command line win. An unknown field is a
    ValueError naming the file."""
    import yaml
    if checkpoint is None:
        return {}
    path = Path(checkpoint) / SAMPLING_FILE
    if not path.is_file():   # a training run carries its budgets in its TrainConfig
        from ..checkpoints import open_checkpoint
        from ..hf_io import CheckpointError
        try:
            ckpt = open_checkpoint(checkpoint, image_tokenizer=False)
        except (CheckpointError, FileNotFoundError, ValueError):
            return {}        # not a checkpoint at all: the command that loads it says why
        return run_sampling_defaults(ckpt).get(task.name, {})
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{task name: {{setting: value}}}}")
    ours = data.get(task.name, {})
    unknown = sorted(set(ours) - set(_fields(task)))
    if unknown:
        raise ValueError(f"{path}: {task.name}: unknown settings {unknown}; known: {sorted(_fields(task))}")
    return ours


def run_sampling_defaults(ckpt) -> dict:
    """The sampling defaults of an opened training run or training checkpoint (a
    :class:`~mmada_jax.checkpoints.Checkpoint`), ``{task name: {setting: value}}``: the budgets it
    was trained with (-M SFT: ``text_len``, and ``pad_instruction`` = the padded instruction length;
    a ParaRL run: the sampler settings and options of its rollouts), so a run samples as it
    trained without flags; ``{}`` for any other checkpoint.
    :func:`~mmada_jax.export.export_run` writes them as ``sampling.yaml``."""
    from ..checkpoints import TRAINING
    if ckpt.format != TRAINING:
        return {}
    train = ckpt.train_config
    if isinstance(train.get("sampling"), dict):    # a ParaRL run (mmada_jax.rl.config)
        return {train.get("task", "parallel_m"): {**train["sampling"], **(train.get("options") or {})}}
    if ckpt.kind != "mmada":
        return {}
    return {"parallel_m": {"text_len": int(train["text_len"]),
                           "pad_instruction": int(train.get("instruction_len") or train["text_len"])}}


def _fields(task) -> dict[str, dataclasses.Field]:
    return {f.name: f for cls in (task.settings, task.options) for f in dataclasses.fields(cls)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _type(f: dataclasses.Field):
    kind = str(f.type)
    return bool if "bool" in kind else int if "int" in kind else float if "float" in kind else str


def add_settings(parser: argparse.ArgumentParser, tasks: dict[str, object]) -> None:
    """Add the flags of the ``tasks`` ({label: task}) to ``parser`` (every default None: the
    task's own default applies unless the flag is given)."""
    per_field: dict[str, dict[str, dataclasses.Field]] = {}
    for label, task in tasks.items():
        for name, f in _fields(task).items():
            per_field.setdefault(name, {})[label] = f
    groups = {}
    for name, per in per_field.items():
        f = next(iter(per.values()))
        flags = [_flag(name)] + sorted({a for fld in per.values() for a in fld.metadata["aliases"]} - {_flag(name)})
        defaults = {label: fld.default for label, fld in per.items()}
        if len(set(map(repr, defaults.values()))) == 1:
            default_text = f"default: {f.default}"
        else:
            default_text = "default: " + ", ".join(f"{d} for {label}" for label, d in defaults.items())
        if len(per) == len(tasks) or len(tasks) == 1:
            group = parser
        else:
            title = " and ".join(per) + " only"
            group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        help_text = f"{f.metadata['help']} ({default_text})".replace("%", "%%")
        if _type(f) is bool:
            group.add_argument(*flags, dest=name, action="store_const", const=True, default=None, help=help_text)
        else:
            group.add_argument(*flags, dest=name, type=_type(f), default=None, choices=f.metadata["choices"],
                               help=help_text)


def settings_from_args(task, args: argparse.Namespace, other_tasks=(), context: str = "",
                       defaults: dict | None = None) -> tuple[object, object]:
    """(settings, options) of ``task`` from the parsed flags: given flags replace ``defaults``
    (a checkpoint's, :func:`checkpoint_defaults`), which replace the task's own; a flag that only
    ``other_tasks`` have is a ValueError naming it (and ``context``)."""
    ours = _fields(task)
    foreign = {name for other in other_tasks for name in _fields(other)} - set(ours)
    given = [name for name in sorted(foreign) if getattr(args, name, None) is not None]
    if given:
        raise ValueError(f"{', '.join(_flag(n) for n in given)}: not for {context or task.name}")
    from ..settings import resolve
    defaults = defaults or {}
    pick = lambda cls: {**{f.name: defaults[f.name] for f in dataclasses.fields(cls) if f.name in defaults},
                        **{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                           if getattr(args, f.name, None) is not None}}
    return resolve(task.settings, **pick(task.settings)), resolve(task.options, **pick(task.options))

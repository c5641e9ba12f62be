"""A checkpoint's sampling defaults (sampling.yaml): they replace the task's, flags replace them."""

from __future__ import annotations

import argparse

import pytest

from mmada_jax.app.cli import SAMPLING_FILE, checkpoint_defaults, settings_from_args
from mmada_jax.app.tasks import TASKS


def _args(**given):
    task = TASKS["parallel_m"]()
    names = {f for cls in (task.settings, task.options) for f in cls.__dataclass_fields__}
    return argparse.Namespace(**{n: given.get(n) for n in names})


def test_defaults_then_flags(tmp_path):
    (tmp_path / SAMPLING_FILE).write_text("parallel_m: {text_len: 112, image_cfg: 0.0, pad_instruction: 112}\n"
                                          "parallel_a: {height: 64}\n")
    task = TASKS["parallel_m"]()
    defaults = checkpoint_defaults(tmp_path, task)
    assert defaults == {"text_len": 112, "image_cfg": 0.0, "pad_instruction": 112}
    settings, options = settings_from_args(task, _args(), defaults=defaults)
    assert settings.text_len == 112 and settings.image_cfg == 0.0 and options.pad_instruction == 112
    assert settings.text_steps == task.settings().text_steps          # not in the file: the task's default
    settings, _ = settings_from_args(task, _args(text_len=64), defaults=defaults)
    assert settings.text_len == 64                                     # a flag wins
    assert checkpoint_defaults(tmp_path / "elsewhere", task) == {}


def test_unknown_setting_names_the_file(tmp_path):
    (tmp_path / SAMPLING_FILE).write_text("parallel_m: {text_length: 112}\n")
    with pytest.raises(ValueError, match=f"{SAMPLING_FILE}.*text_length"):
        checkpoint_defaults(tmp_path, TASKS["parallel_m"]())
    (tmp_path / SAMPLING_FILE).write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="expected"):
        checkpoint_defaults(tmp_path, TASKS["parallel_m"]())

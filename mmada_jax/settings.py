"""Settings as frozen dataclasses: each setting has ONE name and ONE default, written once in its
field together with its help text, its allowed values and the reference's names for it.

Samplers take their settings object (plus keyword overrides); the command line derives its flags,
defaults and help from the same fields (:func:`mmada_jax.app.cli.add_settings`), so nothing is
repeated between the library, the application and the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence


def setting(default: Any, help: str, *, aliases: Sequence[str] = (), choices: Sequence[Any] | None = None,
            minimum: float | None = None):
    """A settings field: ``default``; ``help`` for the CLI; ``aliases``: other flag names (the
    reference's, e.g. ``--cfg_img``); ``choices``: the allowed values; ``minimum``: the smallest
    allowed value (both checked by :func:`check`)."""
    return dataclasses.field(default=default, metadata={"help": help, "aliases": tuple(aliases), "minimum": minimum,
                                                        "choices": None if choices is None else tuple(choices)})


def check(settings) -> None:
    """ValueError naming the first setting that is out of range: not one of its ``choices``,
    below its ``minimum``, a non-finite number; then the class's own ``check()`` (relations
    between settings, e.g. image steps <= text steps)."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
        if choices is not None and value not in choices:
            raise ValueError(f"{f.name} must be one of {list(choices)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value!r}")
        if minimum is not None and value is not None and value < minimum:
            raise ValueError(f"{f.name} must be at least {minimum}, got {value!r}")
    if hasattr(settings, "check"):
        settings.check()


def resolve(cls, settings=None, **overrides):
    """``settings`` (default: ``cls()``) with ``overrides`` applied and checked (:func:`check`);
    an unknown override is a TypeError naming it."""
    settings = cls() if settings is None else settings
    if not isinstance(settings, cls):
        raise TypeError(f"expected {cls.__qualname__} settings, got {type(settings).__qualname__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown {cls.__qualname__} setting(s) {unknown}; known: {sorted(names)}")
    settings = dataclasses.replace(settings, **overrides)
    check(settings)
    return settings


def image_steps_within_text_steps(settings) -> None:
    """The joint samplers update the image on ``image_steps`` of their ``text_steps`` steps."""
    if settings.image_steps > settings.text_steps:
        raise ValueError(f"image_steps ({settings.image_steps}) cannot exceed text_steps ({settings.text_steps}): "
                         f"the image is updated on some of the text steps")

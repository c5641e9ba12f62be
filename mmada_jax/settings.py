"""Settings as frozen dataclasses: each setting has ONE name and ONE default, written once in its
field together with its help text, its allowed values and the reference's names for it.

Samplers take their settings object (plus keyword overrides); the command line derives its flags,
defaults and help from the same fields (:func:`mmada_jax.app.cli.add_settings`), so nothing is
repeated between the library, the application and the CLI.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


def setting(default: Any, help: str, *, aliases: Sequence[str] = (), choices: Sequence[Any] | None = None):
    """A settings field: ``default``; ``help`` for the CLI; ``aliases``: other flag names (the
    reference's, e.g. ``--cfg_img``); ``choices``: the allowed values (checked on construction)."""
    return dataclasses.field(default=default, metadata={"help": help, "aliases": tuple(aliases),
                                                        "choices": None if choices is None else tuple(choices)})


def check_choices(settings) -> None:
    """ValueError naming the setting whose value is not one of its ``choices``."""
    for f in dataclasses.fields(settings):
        choices = f.metadata.get("choices")
        value = getattr(settings, f.name)
        if choices is not None and value not in choices:
            raise ValueError(f"{f.name} must be one of {list(choices)}, got {value!r}")


def resolve(cls, settings=None, **overrides):
    """``settings`` (default: ``cls()``) with ``overrides`` applied and its choices checked; an
    unknown override is a TypeError naming it."""
    settings = cls() if settings is None else settings
    if not isinstance(settings, cls):
        raise TypeError(f"expected {cls.__qualname__} settings, got {type(settings).__qualname__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown {cls.__qualname__} setting(s) {unknown}; known: {sorted(names)}")
    settings = dataclasses.replace(settings, **overrides)
    check_choices(settings)
    return settings

"""Name -> function tables (as tunix's registries): advantage estimators, policy losses, rewards."""

from __future__ import annotations

from typing import Callable


def registrar(table: dict[str, Callable]) -> Callable[[str], Callable]:
    """``@register("name")`` for ``table``."""
    def register(name: str):
        def add(fn):
            table[name] = fn
            return fn
        return add
    return register


def lookup(table: dict[str, Callable], name: str, what: str) -> Callable:
    """``table[name]``, or a ValueError naming ``what`` and the known names."""
    if name not in table:
        raise ValueError(f"{what} {name!r}; known: {sorted(table)}")
    return table[name]

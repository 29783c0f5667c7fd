"""Registries by short name: a new task, method, adaptation or tracker is a module plus one registration.

A registry made with `section=` contributes its entries' `Config` models to that recipe section (config/schema.py
builds the recipe's schema from `SECTIONS`), so config/ imports no plug-in. `load_plugins` imports the built-in
plug-in packages and any installed package's `lftrain.plugins` entry points, once."""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from lftrain.errors import InputError

T = TypeVar("T")

# Where the built-in plug-ins register themselves; named here, not imported, so the layers below them can ask
# for every plug-in without depending on one.
BUILTIN_PLUGINS = ("lftrain.tasks", "lftrain.methods", "lftrain.models.adaptation", "lftrain.training.tracking")


class Registry(Generic[T]):
    def __init__(self, kind: str, *, section: str | None = None) -> None:
        self.kind = kind
        self.default: str | None = None  # the name a recipe section gets when it names none
        self._items: dict[str, T] = {}
        self.version = 0  # bumped on each registration: schemas built from the registry know when to rebuild
        if section is not None:
            SECTIONS[section] = self

    def register(self, name: str, *, default: bool = False) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            obj.type_name = name  # type: ignore[attr-defined]  (a registered class knows the name recipes use)
            self.version += 1
            if default:
                self.default = name
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove a registration (tests that define a plug-in of their own clean up with it)."""
        del self._items[name]
        self.version += 1

    def get(self, name: str | None) -> T:
        """The plug-in registered as `name` (None: the default one)."""
        name = name or self.default
        if name is None:
            raise InputError(f"no {self.kind} named, and none is the default")
        if name not in self._items:
            near = difflib.get_close_matches(name, self._items, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise InputError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._items))}){hint}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
        """The registered names, sorted; `where`: only those whose plug-in it accepts (e.g. what a task declares)."""
        return sorted(n for n, obj in self._items.items() if where is None or where(obj))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


SECTIONS: dict[str, Registry] = {}  # recipe section (task, adaptation, method) -> the registry of its types


@functools.cache
def load_plugins() -> None:
    """Import the built-in plug-ins and every installed `lftrain.plugins` entry point (each registers itself)."""
    for module in BUILTIN_PLUGINS:
        importlib.import_module(module)
    for ep in entry_points(group="lftrain.plugins"):
        ep.load()

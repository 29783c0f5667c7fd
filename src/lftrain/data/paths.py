"""Resolve user paths, including `pkg:NAME/sub/path` for files shipped inside installed packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lftrain.errors import InputError


def package_dir(name: str) -> Path:
    """The directory of an installed package, found without importing (importing may run code)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package '{name}' is not installed (pip install it, or give a local path)")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_path(path: str) -> Path:
    """`pkg:NAME/rest` -> the file inside the installed package NAME; anything else -> expanded path."""
    if path.startswith("pkg:"):
        name, _, rest = path[4:].partition("/")
        return package_dir(name.replace("-", "_")) / rest
    return Path(path).expanduser()

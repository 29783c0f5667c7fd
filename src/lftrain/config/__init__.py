"""Recipe schema, loading, overrides and error messages."""

from lftrain.config.loader import dump_recipe, load_recipe, resolve_recipe

__all__ = ["dump_recipe", "load_recipe", "resolve_recipe"]

"""Read a recipe: YAML safe-load only, dotted overrides, and errors that name the key, line and fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lftrain.errors import RecipeError

# Names people bring from other tools, mapped to ours, so the hint is right even when spelling is far.
_ALIASES = {
    "learning_rate": "lr", "num_epochs": "epochs", "num_train_epochs": "epochs", "epoch": "epochs",
    "per_device_train_batch_size": "micro_batch_size", "train_batch_size": "batch_size",
    "gradient_accumulation_steps": "micro_batch_size", "lr_scheduler_type": "scheduler",
    "warmup": "warmup_ratio", "model_name_or_path": "path", "output_dir": "dir", "max_seq_length": "max_length",
    "label_column": "label", "text_column": "text", "bf16": "precision", "fp16": "precision",
}

# Keys of earlier versions, and what replaced them: named in the error, since no spelling is near.
_REPLACED = {f"train.{k}": "train.accel (auto | off; see docs/performance.md)" for k in (
    "fast_dropout", "first_token_only", "unpad", "cache_frozen", "cache_precision", "sparse_embedding_grads")}


def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """Safe-load YAML (no Python tags, no code) into a mapping, or raise RecipeError naming the line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{source}:{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections (model, task, data, ...), "
                          f"got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML (`1e-4` is a number, `[a, b]` a list)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override '{item}': expected key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"override '{item}': '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _model_at(root: type[BaseModel], data: dict[str, Any], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of `loc` (to suggest sibling field names)."""
    model: Any = root
    node: Any = data
    for part in loc[:-1]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        node = node.get(part) if isinstance(node, dict) else None
        if field is None:
            return None
        model = _section_class(field.annotation, node)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _section_class(annotation: Any, node: Any) -> Any:
    """Resolve a (possibly discriminated-union) annotation to the concrete section class for `node`."""
    import typing

    args = typing.get_args(annotation)
    if not args:
        return annotation
    candidates = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    for arg in args:  # Annotated[Union[...], Field] -> look inside
        candidates += [a for a in typing.get_args(arg) if isinstance(a, type) and issubclass(a, BaseModel)]
    if isinstance(node, dict):
        for cand in candidates:
            type_field = cand.model_fields.get("type")
            if type_field is not None and type_field.default == node.get("type"):
                return cand
    return candidates[0] if candidates else annotation


def _suggest(key: str, choices: list[str]) -> str:
    """The nearest valid key, matching misspellings of other tools' names too (lerning_rate -> lr)."""
    names = {c: c for c in choices} | {a: t for a, t in _ALIASES.items() if t in choices}
    near = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    return f"; did you mean '{names[near[0]]}'?" if near else f" (valid keys: {', '.join(choices)})"


def format_validation_error(exc: ValidationError, root: type[BaseModel], data: dict[str, Any],
                            source: str, lines: dict[tuple[str, ...], int]) -> str:
    """One line per problem: `file:line: path: what is wrong (and the nearest valid key)`."""
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _union_tags(root)))
        path = ".".join(str(p) for p in loc)
        line = lines.get(tuple(str(p) for p in loc)) or lines.get(tuple(str(p) for p in loc[:-1]))
        where = f"{source}:{line}" if line else source
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(root, data, loc)
            hint = _suggest(str(loc[-1]), list(owner.model_fields)) if owner else ""
            if path in _REPLACED:
                hint = f": replaced by {_REPLACED[path]}"
            out.append(f"{where}: unknown key '{path}'{hint}")
        elif kind == "missing":
            out.append(f"{where}: missing required key '{path}'")
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            out.append(f"{where}: {path}.type: unknown type {ctx.get('tag')!r}; expected one of "
                       f"{ctx.get('expected_tags')}")
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
            out.append(f"{where}: {path}: {err['msg']} (got {shown})")
    return "\n".join(out)


def _union_tags(root: type[BaseModel]) -> set[str]:
    """Tags pydantic inserts into error locations for discriminated unions (the registered type names)."""
    from lftrain.registry import SECTIONS

    return {name for registry in SECTIONS.values() for name in registry.names()}


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None):
    """Load and validate a recipe from a YAML file (or an already-parsed mapping) plus overrides."""
    from lftrain.config.schema import recipe_model

    Recipe = recipe_model()  # noqa: N806  (every registered task, adaptation and method)
    source = str(path) if path is not None else "<recipe>"
    text = ""
    if data is None:
        if path is None:
            raise RecipeError("no recipe given")
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"{p}: recipe file not found")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise RecipeError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        data = parse_yaml(text, source)
    data = apply_overrides(data, list(overrides or []))
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, Recipe, data, source, _line_map(text))) from None
    if recipe.output.dir is None and path is not None:
        recipe.output.dir = str(Path("runs") / Path(path).stem)
    return recipe


def resolve_recipe(recipe, overrides: list[str] | None = None):
    """A Recipe from what the Python API accepts: a YAML path, a mapping, or a Recipe (each plus overrides)."""
    import copy

    from lftrain.config.schema import Recipe

    if isinstance(recipe, Recipe):
        return recipe if not overrides else load_recipe(data=recipe.model_dump(mode="json"), overrides=overrides)
    if isinstance(recipe, dict):
        return load_recipe(data=copy.deepcopy(recipe), overrides=overrides)
    return load_recipe(recipe, overrides)


def dump_recipe(recipe: BaseModel) -> str:
    """The resolved recipe as YAML, every default written out, so a run records exactly what it ran."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

"""The recipe reference in Markdown, generated from the schema so the docs cannot drift from the code.

    python -m lftrain.config.reference               # print it
    python -m lftrain.config.reference --write docs/recipes.md   # refresh the block in docs/recipes.md
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

START, END = "<!-- recipe-reference:start -->", "<!-- recipe-reference:end -->"


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(names) + (" \\| null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default if field.default_factory is None else field.default_factory()
    if isinstance(value, BaseModel):
        return ""
    return f"`{value}`" if value is not None else "`null`"


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        doc = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {_type_name(field.annotation)} | {_default(field)} | {doc} |")
        inner = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        section = inner[0] if len(inner) == 1 else field.annotation  # an optional section: its keys all the same
        if isinstance(section, type) and issubclass(section, BaseModel):  # a nested section
            rows += _table(section, f"{prefix}{name}.")[2:]
    return rows


def recipe_reference() -> str:
    from lftrain.config.schema import recipe_model
    from lftrain.registry import SECTIONS

    Recipe = recipe_model()  # noqa: N806
    out = ["Every key a recipe accepts (unknown keys are errors). Generated from the schema by "
           "`python -m lftrain.config.reference`.", ""]
    registries = SECTIONS
    for section, field in Recipe.model_fields.items():
        annotation = field.annotation
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1 and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
            annotation = inner[0]  # an optional section (tune): document its keys all the same
        if section in registries:
            for name, obj in registries[section].items():
                out += [f"### `{section}` — type `{name}`", "", *( [obj.__doc__.strip().splitlines()[0], ""]
                                                                   if obj.__doc__ else []),
                        *_table(obj.Config, f"{section}."), ""]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += [f"### `{section}`", "", *_table(annotation, f"{section}."), ""]
        else:
            doc = " ".join((field.description or "").split())
            out += [f"### `{section}`", "", f"{_type_name(annotation)}, default {_default(field)}. {doc}", ""]
    return "\n".join(out).rstrip() + "\n"


def write_into(path: Path) -> None:
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{recipe_reference()}{END}{tail}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_into(Path(sys.argv[2]))
    else:
        print(recipe_reference())

"""Search spaces: draw a trial's values, check every value against the recipe, and write them as overrides."""

from __future__ import annotations

import json
from typing import Any

import yaml

from lftrain.config.tune import ParamSpace, TuneConfig
from lftrain.errors import RecipeError


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def suggest(trial, name: str, spec: ParamSpace) -> Any:
    """The value of recipe field `name` for this Optuna trial (a retried trial gets its stored value back)."""
    kind, v = spec.kind, spec.values
    if kind == "uniform":
        return trial.suggest_float(name, v[0], v[1], step=spec.step)
    if kind == "log_uniform":
        return trial.suggest_float(name, v[0], v[1], log=True)
    if kind == "int":
        return trial.suggest_int(name, v[0], v[1], step=int(spec.step or 1))
    if kind == "log_int":
        return trial.suggest_int(name, v[0], v[1], log=True)
    if all(_scalar(c) for c in v):
        return trial.suggest_categorical(name, v)
    # Optuna stores scalar choices only; lists (e.g. LoRA target modules) travel as their JSON text.
    return json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in v]))


def decode(spec: ParamSpace, stored: Any) -> Any:
    """A value as Optuna stores it (trial.params) back into the recipe's value."""
    if spec.kind == "choice" and not all(_scalar(c) for c in spec.values):
        return json.loads(stored)
    return stored


def override(name: str, value: Any) -> str:
    """`key=value` in the syntax `lft train` overrides use (values are parsed as YAML), exact for floats."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    elif text.endswith("..."):  # scalars are dumped as a document: "1.0e-05\n..."
        text = text[:-3].strip()
    return f"{name}={text}"


def corner_values(spec: ParamSpace) -> list[Any]:
    """Values that together reach every edge of the space: both ends of a range, every choice."""
    return list(spec.values)


def check_space(recipe_data: dict[str, Any], tune: TuneConfig, source: str) -> None:
    """Validate the recipe with each value at each edge of each range, before any trial starts, so a
    misspelt field (`train.lerning_rate`) or an out-of-range value (`train.lr: {uniform: [0, 1e-3]}`) is
    reported by the recipe's own error messages, naming the tune key."""
    from lftrain.config.loader import load_recipe

    for name, spec in tune.space.items():
        for value in corner_values(spec):
            try:
                load_recipe(data=json.loads(json.dumps(recipe_data)), overrides=[override(name, value)])
            except RecipeError as exc:
                detail = str(exc).replace("<recipe>: ", "")
                raise RecipeError(f"{source}: tune.space.{name}: the value {value!r} makes the recipe invalid: "
                                  f"{detail}") from None

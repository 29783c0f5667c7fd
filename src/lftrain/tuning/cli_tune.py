"""`lft tune RECIPE` and `lft tune --report STUDY` (a plugin of lftrain.cli; nothing heavy imported here)."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any


def add_parsers(sub, epilog: str) -> None:
    t = sub.add_parser("tune", help="hyperparameter search over recipe fields (Optuna; resumable)", epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Search the fields named in the recipe's tune: section with Optuna (TPE by "
                       "default) and prune weak trials from their evaluations. Each trial is an ordinary run "
                       "directory under the study directory (tune.dir, default <output.dir>-tune). Run it again "
                       "to continue an interrupted study; start it on several machines with a shared "
                       "tune.storage (PostgreSQL) to search in parallel. Ends by writing best.yaml and report/. "
                       "See docs/tuning.md.")
    t.add_argument("recipe", nargs="?", help="recipe YAML file with a tune: section")
    t.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="override recipe keys, e.g. tune.trials=30 train.epochs=1 (values are parsed as YAML)")
    t.add_argument("--search", metavar="FILE", help="YAML file with the tune section (replaces the recipe's own)")
    t.add_argument("--report", metavar="STUDY", help="only (re)write the report of the study directory STUDY: "
                   "best.yaml, report/trials.csv, optimisation history, importances, parallel coordinates")


def run(args) -> int | None:
    if args.command != "tune":
        return None
    from lftrain import api
    from lftrain.errors import InputError
    from lftrain.tuning.report import summary_text

    if args.report:
        if args.recipe or args.overrides or args.search:
            raise InputError("lft tune --report STUDY takes the study directory only")
        rep = api.tune_report(args.report)
    else:
        if not args.recipe:
            raise InputError("lft tune: give a RECIPE to search, or --report STUDY")
        rep = api.tune(args.recipe, args.overrides, search=args.search)
    print(summary_text(rep), flush=True)
    return 0


def _search_section(path: str | Path) -> dict[str, Any]:
    """The tune section in a separate file (either the section's keys, or a mapping with a `tune:` key)."""
    from pydantic import ValidationError

    from lftrain.config.loader import _line_map, format_validation_error, parse_yaml
    from lftrain.errors import RecipeError
    from lftrain.tuning.config import TuneConfig

    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: search file not found")
    text = p.read_text(encoding="utf-8")
    data = parse_yaml(text, str(p))
    lines = _line_map(text)
    if set(data) == {"tune"}:
        data = data["tune"]
        lines = {k[1:]: v for k, v in lines.items() if k[:1] == ("tune",)}
    try:
        TuneConfig.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, TuneConfig, data, str(p), lines)) from None
    return data


def load_tune_recipe(recipe, overrides: list[str] | None, search: str | Path | None):
    """The resolved recipe a search runs, and a name for its source (for error messages)."""
    from lftrain.config import load_recipe
    from lftrain.config.schema import Recipe
    from lftrain.tuning.space import override

    extra = [override("tune", _search_section(search))] if search else []
    overrides = [*extra, *(overrides or [])]
    if isinstance(recipe, Recipe):
        return load_recipe(data=recipe.model_dump(mode="json"), overrides=overrides), "<recipe>"
    if isinstance(recipe, dict):
        return load_recipe(data=copy.deepcopy(recipe), overrides=overrides), "<recipe>"
    return load_recipe(recipe, overrides), str(recipe)

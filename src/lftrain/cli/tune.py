"""`lft tune RECIPE` and `lft tune --report STUDY` (a plugin of lftrain.cli; nothing heavy imported here)."""

from __future__ import annotations

import argparse


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

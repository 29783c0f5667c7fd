"""`lft data check RECIPE` and `lft data fix RECIPE --output DIR` (a CLI plugin, see lftrain.cli.PLUGINS)."""

from __future__ import annotations

import argparse

from lftrain.errors import EXIT_INPUT


def add_parsers(sub, epilog: str) -> None:
    d = sub.add_parser("data", help="check a recipe's data (duplicates, leakage, noise, ...) or write a cleaned copy",
                       epilog=epilog, description="Data quality checks and cleaning. See docs/data-checks.md.")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    c = dsub.add_parser("check", help="run every data check and write a data card", epilog=epilog,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Run the data checks on RECIPE's data as training would see it: exact and "
                        "near-duplicates, train<->eval/test leakage, conflicting labels, class balance, truncation, "
                        "label-noise suspects, 13-gram contamination, PII and licences. Prints one table and writes "
                        "data_card.md/.json, data_check.json (every affected row) and noise_suspects.csv to DIR. "
                        "Exits with 2 when a check listed in data.checks.block fires.")
    c.add_argument("recipe", help="recipe YAML file")
    c.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override recipe keys")
    c.add_argument("--output", metavar="DIR", help="where to write the reports (default: <output.dir>-data-check)")
    f = dsub.add_parser("fix", help="write a cleaned copy of the data and a log of every removed row", epilog=epilog,
                        description="Write cleaned copies of RECIPE's data files to DIR (the originals are never "
                        "touched): exact and near-duplicates and leaked training rows removed, every removed row "
                        "logged in removed.jsonl, and DIR/recipe.yaml: the same recipe on the cleaned files.")
    f.add_argument("recipe", help="recipe YAML file")
    f.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override recipe keys")
    f.add_argument("--output", required=True, metavar="DIR", help="new (or empty) directory for the cleaned data")
    f.add_argument("--keep-near-duplicates", action="store_true", help="remove exact duplicates only")
    f.add_argument("--drop-conflicts", action="store_true", help="remove every row of a text with conflicting labels")
    f.add_argument("--drop-noise", action="store_true", help="remove the label-noise suspects too")
    f.add_argument("--drop-contaminated", action="store_true",
                   help="remove training rows sharing an n-gram with eval/test or a benchmark")


def run(args) -> int | None:
    if args.command != "data":
        return None
    from lftrain import api

    if args.data_command == "check":
        report = api.check_data(args.recipe, args.overrides, output=args.output)
        return EXIT_INPUT if report.blocking else 0
    api.fix_data(args.recipe, args.output, args.overrides, near=not args.keep_near_duplicates,
                 conflicts=args.drop_conflicts, noise=args.drop_noise, contaminated=args.drop_contaminated)
    return 0

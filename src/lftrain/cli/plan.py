"""`lft plan RECIPE`: the predicted peak memory of a recipe's training, before any weight loads (a plugin of
lftrain.cli; nothing heavy imported here)."""

from __future__ import annotations

import argparse


def add_parsers(sub, epilog: str) -> None:
    t = sub.add_parser("plan", help="predict a recipe's peak training memory before loading any weight",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Predict the peak memory (RAM on the CPU, GPU memory on a GPU) of training "
                       "RECIPE, by component (weights, adapters, gradients, optimizer, activations, logits, ...), "
                       "from config.json alone, and whether it fits the memory free (or train.memory_limit_mb). "
                       "When it does not, names the recipe changes that would fit. Exit 0 if it fits, 2 if not.")
    t.add_argument("recipe", help="recipe YAML file")
    t.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="override recipe keys as `lft train` takes them, e.g. train.micro_batch_size=4")
    t.add_argument("--no-time", action="store_true", help="skip the few-second timed probe of one block")


def run(args) -> int | None:
    if args.command != "plan":
        return None
    from lftrain.config import load_recipe
    from lftrain.errors import EXIT_INPUT
    from lftrain.plan import predict, render

    plan = predict(load_recipe(args.recipe, args.overrides), probe_time=not args.no_time)
    print(render(plan), flush=True)
    return EXIT_INPUT if plan.fits is False else 0

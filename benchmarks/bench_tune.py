"""Hyperparameter search on a small demo job: TPE + median pruning against the recipe's defaults and against
random search with the same number of trials, and the compute pruning saved (docs/tuning.md).

MiniLM-L6, full fine-tuning, on fixed random subsets of the Rotten Tomatoes snippets (1,200 train / 400 eval /
1,000 test), 1 epoch, max_length 64, an evaluation every 8 steps. Each part is one short job, resumable (the
studies are SQLite, trials are run directories under runs/tune_demo/); `summary` prints the table from them:

    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_tune.py defaults
    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_tune.py tpe
    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_tune.py random
    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_tune.py tpe-loss   # choose and prune by eval loss
    .venv/bin/python benchmarks/bench_tune.py summary
"""

from __future__ import annotations

import bz2
import csv
import json
import logging
import random
import sys
from pathlib import Path

from _common import REPO_ROOT, rotten_tomatoes_source, write_results

OUT = REPO_ROOT / "runs" / "tune_demo"  # git-ignored; the figures go into docs/tuning.md
TRIALS = 12
PARTS = ("tpe", "random", "tpe-loss")
SPACE = {"train.lr": {"log_uniform": [1.0e-5, 3.0e-4]},
         "train.warmup_ratio": {"uniform": [0.0, 0.2]},
         "model.dropout": {"uniform": [0.0, 0.2]}}


def _subset() -> dict[str, Path]:
    """Fixed random subsets of the fresh/rotten snippets, written once (same rows for every part)."""
    files = {name: OUT / "data" / f"{name}.csv" for name in ("train", "eval", "test")}
    if all(f.is_file() for f in files.values()):
        return files
    src = rotten_tomatoes_source()
    with bz2.open(src, "rt", encoding="utf-8") as f:
        rows = [{"text": r["text"], "category": r["category"]} for r in csv.DictReader(f)
                if r["category"] in ("fresh", "rotten")]
    seen, unique = set(), []
    for r in rows:  # distinct texts only, so no snippet is in two splits
        if r["text"] not in seen:
            seen.add(r["text"])
            unique.append(r)
    random.Random(0).shuffle(unique)
    sizes = {"train": 1200, "eval": 400, "test": 1000}
    start = 0
    files["train"].parent.mkdir(parents=True, exist_ok=True)
    for name, n in sizes.items():
        with open(files[name], "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "category"])
            w.writeheader()
            w.writerows(unique[start:start + n])
        start += n
    return files


def _recipe(part: str) -> dict:
    import yaml

    from lftrain.config.schema import EvalConfig

    recipe = yaml.safe_load((REPO_ROOT / "recipes" / "rotten-tomatoes-minilm.yaml").read_text())
    files = _subset()
    recipe["data"] = {"train": str(files["train"]), "eval": str(files["eval"]), "test": str(files["test"]),
                      "unknown_labels": "error", "cache_dir": str(OUT / "cache")}
    recipe["task"]["max_length"] = 64
    recipe["train"].update(epochs=1, eval_every=8, threads=2)
    # The final-evaluation extras (latency timing, bootstrap intervals, HTML report) cost time and change no
    # metric; off where this tree has them.
    extras = {"latency": False, "bootstrap_samples": 0, "report": False}
    recipe["eval"] = {k: v for k, v in extras.items() if k in EvalConfig.model_fields}
    recipe["output"] = {"dir": str(OUT / part)}
    recipe["name"] = f"tune-demo-{part}"
    return recipe


def run_defaults() -> None:
    from lftrain import api
    from lftrain.training.rundir import RunDir

    if RunDir(OUT / "defaults").is_finished():
        return
    api.train(_recipe("defaults"))


def run_search(sampler: str, metric: str | None = None) -> None:
    """`metric=loss`: choose and prune by eval loss, which moves from the first step, where accuracy sits on the
    majority-class plateau for many trials (and the median pruner never prunes a tie)."""
    from lftrain import api

    part = f"{sampler}-{metric}" if metric else sampler
    recipe = _recipe(part)
    pruner = "median" if sampler == "tpe" else "none"  # random search as usually run: every trial to the end
    recipe["tune"] = {"space": SPACE, "trials": TRIALS, "sampler": sampler, "pruner": pruner, "metric": metric,
                      "startup_trials": 4, "seed": 0, "dir": str(OUT / f"{part}-study")}
    api.tune(recipe)


def _test_accuracy(run_dir: str | Path) -> float | None:
    status = json.loads((Path(run_dir) / "run.json").read_text())
    return status.get("results", {}).get("test", {}).get("accuracy")


def _best_eval(run_dir: str | Path) -> float:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return max(r["accuracy"] for r in rows if r.get("event") == "eval" and r.get("split") == "eval"
               and not r.get("final"))


def summary() -> dict:
    from lftrain.tuning.report import write_report

    results = {"defaults": {"eval_accuracy": _best_eval(OUT / "defaults"),
                            "test_accuracy": _test_accuracy(OUT / "defaults")}}
    for sampler in PARTS:
        if not (OUT / f"{sampler}-study" / "study.json").is_file():
            continue
        rep = write_report(OUT / f"{sampler}-study")
        results[sampler] = {"best_trial": rep.best_trial, "eval_accuracy": _best_eval(rep.best_run_dir),
                            "test_accuracy": _test_accuracy(rep.best_run_dir), "params": rep.best_params,
                            "counts": rep.counts, "compute": rep.compute,
                            "seconds": round(sum(r["seconds"] or 0 for r in rep.trials), 1)}
    write_results(OUT / "results.json", results)
    print(f"{'':10} {'eval acc':>9} {'test acc':>9} {'trial-epochs':>13} {'trial seconds':>14}  values")
    d = results["defaults"]
    print(f"{'defaults':10} {d['eval_accuracy']:>9.4f} {d['test_accuracy']:>9.4f} {1:>13.2f} {'':>14}  "
          "train.lr=5e-05 train.warmup_ratio=0.06 model.dropout=(model's own, 0.1)")
    for sampler in [p for p in PARTS if p in results]:
        r = results[sampler]
        k = r["compute"]
        print(f"{sampler:10} {r['eval_accuracy']:>9.4f} {r['test_accuracy']:>9.4f} "
              f"{k['trial_epochs_run']:>6.2f} of {k['trial_epochs_without_pruning']:>5.2f} {r['seconds']:>14.1f}  "
              + " ".join(f"{p}={v:.3g}" for p, v in r["params"].items()))
    for part in [p for p in ("tpe", "tpe-loss") if p in results]:
        k = results[part]["compute"]
        print(f"pruning ({part}): {results[part]['counts']['pruned']} of {TRIALS} trials pruned; "
              f"{k['trial_epochs_run']:.2f} trial-epochs run instead of {k['trial_epochs_without_pruning']:.2f} "
              f"({100 * k['saved_fraction']:.1f}% saved; {k['steps_run']} of {k['steps_without_pruning']} steps)")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import transformers

    transformers.logging.set_verbosity_error()
    part = sys.argv[1] if len(sys.argv) > 1 else "summary"
    {"defaults": run_defaults, "tpe": lambda: run_search("tpe"), "random": lambda: run_search("random"),
     "tpe-loss": lambda: run_search("tpe", "loss"), "summary": summary}[part]()

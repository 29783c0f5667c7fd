"""Rotten Tomatoes, 64 labels per class, one seed: supervised only against DAPT + self-training.

Trains the recipes/rotten-tomatoes-dapt-selftrain.yaml recipe without its stages (supervised only) and with them
(masked-LM on the pool, a supervised teacher, self-training), on the files benchmarks/semi_supervised_data.py
writes, and prints each model's test accuracy and the pseudo-label statistics (docs/semi-supervised.md). The
5-seed table is bench_semi_supervised.py's.

    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_dapt_selftrain.py --work runs/rt-semi
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import yaml
from _common import REPO_ROOT as ROOT
from semi_supervised_data import write_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "rt-semi")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--st-only", action="store_true", help="reuse the finished supervised run, DAPT model and DAPT "
                   "teacher in --work; run only the self-training students (as the recipe's stage says)")
    a = p.parse_args()
    import lftrain.api as api

    files = write_split(a.work / "data", 64, a.seed, 3000, 1000)
    recipe = yaml.safe_load((ROOT / "recipes" / "rotten-tomatoes-dapt-selftrain.yaml").read_text())
    recipe["data"].update(train=str(files["train"]), test=str(files["test"]), unlabeled=str(files["pool"]),
                          cache_dir=str(a.work / "cache"))
    recipe["train"].update(seed=a.seed, threads=a.threads)
    recipe["eval"] = {"bootstrap_samples": 0, "latency": False}

    if a.st_only:
        return students_only(a, recipe)
    sup = copy.deepcopy(recipe)
    sup.pop("stages")
    sup["data"].pop("unlabeled")
    sup["output"]["dir"] = str(a.work / "supervised")
    staged = copy.deepcopy(recipe)
    staged["output"]["dir"] = str(a.work / "dapt-selftrain")
    rows, seconds = [], {}
    for name, r in (("supervised only", sup), ("dapt + self-training", staged)):
        t0 = time.perf_counter()
        result = api.train(r)
        seconds[name] = time.perf_counter() - t0
        if name == "supervised only":
            rows.append((name, result.metrics["test"]["accuracy"], result.metrics["test"]["macro_f1"]))
    index = json.loads((a.work / "dapt-selftrain" / "stages.json").read_text())
    for e in index[1:]:
        label = {"supervised": "dapt + supervised (teacher)", "self-training": "dapt + self-training"}[e["method"]]
        rows.append((label, e["results"]["test"]["accuracy"], e["results"]["test"]["macro_f1"]))
    print(f"\nRotten Tomatoes, k=64 per class, seed {a.seed}, test n=1000, pool 3000 unlabelled reviews")
    print(f"{'method':<30} {'test accuracy':>14} {'macro F1':>9}")
    for name, acc, f1 in rows:
        print(f"{name:<30} {acc:>14.4f} {f1:>9.4f}")
    for e in index:
        if "pseudo_labels" in e:
            print(f"pseudo-labels ({e['name']}): {json.dumps(e['pseudo_labels'])}")
    if "eval" in index[0].get("results", {}):
        print(f"dapt LM eval: {index[0]['results']['eval']}")
    print("wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


def students_only(a, recipe: dict) -> None:
    """Self-training from the supervised-only teacher (base encoder) and from the DAPT teacher (DAPT encoder)."""
    import lftrain.api as api

    stage = recipe["stages"][1]
    staged = a.work / "dapt-selftrain" / "stages"
    runs = {"self-training": (recipe["model"]["path"], a.work / "supervised"),
            "dapt + self-training": (str(staged / "01-dapt" / "model"), staged / "02-selftrain-teacher")}
    tag = f"{stage['method']['selection']}"
    for name, (start, teacher) in runs.items():
        r = copy.deepcopy(recipe)
        r.pop("stages")
        r["model"]["path"] = start
        r["method"] = {**stage["method"], "teacher": str(teacher)}
        r["train"].update(stage.get("train", {}))
        r["output"]["dir"] = str(a.work / f"{name.replace(' + ', '-')}-{tag}")
        t0 = time.perf_counter()
        result = api.train(r)
        test = result.metrics["test"]
        rnd = json.loads((Path(r["output"]["dir"]) / "stages.json").read_text())[-1]
        print(f"RESULT {name:<24} test accuracy {test['accuracy']:.4f}  macro F1 {test['macro_f1']:.4f}  "
              f"({time.perf_counter() - t0:.0f}s)  pseudo-labels {json.dumps(rnd.get('pseudo_labels'))}", flush=True)


if __name__ == "__main__":
    main()

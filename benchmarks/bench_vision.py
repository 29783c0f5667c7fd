"""EfficientNet-Lite0 on Fashion-MNIST: ImageNet pre-training against random initialisation, same budget.

Runs the two recipes through the real CLI (each one `lft train` in a subprocess; a finished run is not
trained again) and prints one table from their run directories: test accuracy and macro-F1 with 95% bootstrap
intervals, training time and speed, and the accuracy difference.

    python benchmarks/bench_vision.py                      # both runs (~6-7 min each on 2 cores), then the table
    python benchmarks/bench_vision.py --only pretrained    # one of them (e.g. under a shared CPU lock)
    python benchmarks/bench_vision.py --table              # only the table, from runs already made
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import write_results

REPO = Path(__file__).resolve().parent.parent
RECIPES = {"pretrained": "recipes/fashion-mnist-efficientnet-lite0.yaml",
           "random": "recipes/fashion-mnist-efficientnet-lite0-scratch.yaml"}


def run_dir(root: Path, name: str) -> Path:
    return root / f"fashion-mnist-{name}"


def train(root: Path, name: str, threads: int | None) -> None:
    out = run_dir(root, name)
    status = out / "run.json"  # the run directory's status file (lftrain.training.rundir.STATUS)
    if status.is_file() and json.loads(status.read_text()).get("status") == "finished":
        print(f"{name}: already finished in {out}", file=sys.stderr)
        return
    cmd = [sys.executable, "-m", "lftrain", "train", RECIPES[name], f"output.dir={out}"]
    if threads:
        cmd.append(f"train.threads={threads}")
    subprocess.run(cmd, cwd=REPO, check=True)


def row(root: Path, name: str) -> dict | None:
    out = run_dir(root, name)
    if not (out / "evidence.json").is_file():
        return None
    ev = json.loads((out / "evidence.json").read_text())["splits"]["test"]
    end = next(r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
               if r.get("event") == "train_end")
    ci = ev.get("intervals", {})
    return {"name": name, "n": ev["metrics"]["n"], "accuracy": ev["metrics"]["accuracy"],
            "accuracy_ci": [ci["accuracy"]["low"], ci["accuracy"]["high"]] if "accuracy" in ci else None,
            "macro_f1": ev["metrics"]["macro_f1"], "train_seconds": end["train_runtime"],
            "samples_per_second": end["train_samples_per_second"], "steps": end["step"]}


def table(rows: list[dict]) -> str:
    lines = ["| init | test n | accuracy [95% CI] | macro-F1 | train time | samples/s | steps |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = f" [{r['accuracy_ci'][0]:.4f}, {r['accuracy_ci'][1]:.4f}]" if r["accuracy_ci"] else ""
        lines.append(f"| {r['name']} | {r['n']} | {r['accuracy']:.4f}{ci} | {r['macro_f1']:.4f} | "
                     f"{r['train_seconds']:.0f} s | {r['samples_per_second']:.1f} | {r['steps']} |")
    by = {r["name"]: r for r in rows}
    if len(by) == 2:
        gain = 100 * (by["pretrained"]["accuracy"] - by["random"]["accuracy"])
        lines.append(f"\npre-trained minus random init: {gain:+.1f} accuracy points (target: pre-trained >= 88%)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="runs/bench-vision", help="where the two run directories go")
    p.add_argument("--only", choices=sorted(RECIPES), help="train only this one")
    p.add_argument("--table", action="store_true", help="do not train; print the table of existing runs")
    p.add_argument("--threads", type=int, help="train.threads for both runs")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    root = (REPO / args.root).resolve()
    if not args.table:
        for name in [args.only] if args.only else list(RECIPES):
            train(root, name, args.threads)
    rows = [r for r in (row(root, n) for n in RECIPES) if r]
    print(table(rows))
    if args.json:
        write_results(Path(args.json), rows)


if __name__ == "__main__":
    main()

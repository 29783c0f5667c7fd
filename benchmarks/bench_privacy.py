"""Accuracy under differential privacy on the demo task: ε ∈ {1, 3, 8, ∞} (∞ = the same recipe without privacy).

Every setting trains recipes/rotten-tomatoes-minilm.yaml (MiniLM-L6, Rotten Tomatoes fresh/rotten) with the same
overrides and reads back what the run wrote: test accuracy and macro-F1 with their bootstrap intervals
(evidence.json), the ε spent and the noise multiplier (manifest.json) and the training speed (metrics.jsonl). To fit
a CPU budget the defaults train the classification head on the frozen encoder's mean-pooled embedding (per-example
gradients of the whole encoder make a private step ~20x slower on a CPU; `--adaptation lora|full` trains more) for
the recipe's 2 epochs at batch 64, with no out-of-distribution, latency or data-check passes; `--train-share` takes
a seeded share of the training rows (`data.train.weight`, after the split: eval and test stay the recipe's).

    python benchmarks/bench_privacy.py                       # the table of docs/privacy.md
    for e in inf 8 3 1; do python benchmarks/bench_privacy.py --epsilons $e --merge; done   # the same, in 4 jobs
    python benchmarks/bench_privacy.py --epsilons 8 --max-steps 5 --out /tmp/probe.json   # a quick probe
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

from _common import write_results

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "rotten-tomatoes-minilm.yaml"


def overrides(args, epsilon: float, out_dir: Path) -> list[str]:
    o = [f"output.dir={out_dir}", f"train.threads={args.threads}", f"train.epochs={args.epochs}",
         f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", f"adaptation={ADAPTATIONS[args.adaptation]}",
         "eval.ood=null", "eval.latency=false", "data.checks.run=false"]
    if args.adaptation == "head":
        o.append("task.pooling=mean")  # the sentence embedding all-MiniLM-L6-v2 was trained to produce
    o.append(f"data.train={{path: {_train_source()}, weight: {args.train_share}}}")
    if args.max_steps:
        o.append(f"train.max_steps={args.max_steps}")
    if math.isfinite(epsilon):
        o += [f"train.privacy.epsilon={epsilon}", f"train.privacy.max_grad_norm={args.clip}"]
    return o


# `head`: a linear classifier on the frozen encoder's mean-pooled embedding (770 weights learn: DP-SGD's noise grows
# with the square root of the trainable count)
ADAPTATIONS = {"full": "{type: full}", "lora": "{type: lora}",
               "head": "{type: freeze, top_layers: 0}"}


def _train_source() -> str:
    import yaml

    return yaml.safe_load(RECIPE.read_text())["data"]["train"]


def one_setting(args, epsilon: float, root: Path) -> dict:
    from lftrain import api

    out_dir = root / (f"eps-{epsilon:g}" if math.isfinite(epsilon) else "eps-inf")
    t0 = time.perf_counter()
    result = api.train(str(RECIPE), overrides(args, epsilon, out_dir), new_run=True)
    wall = time.perf_counter() - t0
    run = Path(result.run_dir)
    evidence = json.loads((run / "evidence.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    test = evidence["splits"]["test"]
    end = next(r for r in reversed([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()])
               if r.get("event") == "train_end")
    privacy = manifest.get("privacy") or {}
    return {"epsilon_target": epsilon if math.isfinite(epsilon) else None,
            "epsilon_spent": privacy.get("epsilon_spent"), "delta": privacy.get("delta"),
            "noise_multiplier": privacy.get("noise_multiplier"), "sample_rate": privacy.get("sample_rate"),
            "steps": end["step"], "train_rows": manifest["data_stats"]["train_rows"],
            "test_rows": test["metrics"].get("n"),
            "accuracy": test["metrics"]["accuracy"], "accuracy_ci": _ci(test, "accuracy"),
            "macro_f1": test["metrics"]["macro_f1"], "macro_f1_ci": _ci(test, "macro_f1"),
            "train_seconds": end["train_runtime"], "samples_per_second": end["train_samples_per_second"],
            "wall_seconds": wall}


def _ci(split: dict, name: str) -> list[float] | None:
    ci = split.get("intervals", {}).get(name)
    return [ci["low"], ci["high"]] if ci else None


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epsilons", default="1,3,8,inf", help="comma-separated; inf = no privacy")
    ap.add_argument("--train-share", type=float, default=1.0, help="data.train weight: a seeded share of the rows")
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--clip", type=float, default=1.0, help="train.privacy.max_grad_norm")
    ap.add_argument("--adaptation", default="head", choices=sorted(ADAPTATIONS),
                    help="per-example gradients of a whole MiniLM cost ~20x the time on a CPU: docs/privacy.md")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None, help="probe: stop every run after this many steps")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_privacy.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows --out already holds for other ε (run the settings as separate jobs)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as tmp:
        for eps in epsilons:
            rows.append(one_setting(args, eps, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    if args.merge and Path(args.out).is_file():
        done = {r["epsilon_target"] for r in rows}
        rows = [r for r in json.loads(Path(args.out).read_text())["rows"] if r["epsilon_target"] not in done] + rows
    rows.sort(key=lambda r: math.inf if r["epsilon_target"] is None else r["epsilon_target"])
    base = next((r for r in rows if r["epsilon_target"] is None), None)
    for r in rows:
        r["speed_vs_non_private"] = r["samples_per_second"] / base["samples_per_second"] if base else None
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "merge")}
    settings["epsilons"] = ",".join("inf" if r["epsilon_target"] is None else f"{r['epsilon_target']:g}" for r in rows)
    result = {"benchmark": "bench_privacy", "recipe": str(RECIPE.relative_to(REPO)), "settings": settings,
              "machine": machine(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    write_results(Path(args.out), result)
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    lines = ["| ε target | ε spent (δ) | noise multiplier | test accuracy [95% CI] | test macro-F1 [95% CI] | "
             "samples/s | vs non-private |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = f"{r['epsilon_target']:g}" if r["epsilon_target"] is not None else "∞ (no privacy)"
        spent = f"{r['epsilon_spent']:.3f} ({r['delta']:g})" if r["epsilon_spent"] is not None else "—"
        sigma = f"{r['noise_multiplier']:.3f}" if r["noise_multiplier"] is not None else "—"
        acc, f1 = (f"{r[k]:.4f}" + (f" [{r[k + '_ci'][0]:.3f}, {r[k + '_ci'][1]:.3f}]" if r[k + "_ci"] else "")
                   for k in ("accuracy", "macro_f1"))
        speed = f"{r['speed_vs_non_private']:.2f}×" if r["speed_vs_non_private"] else "—"
        lines.append(f"| {eps} | {spent} | {sigma} | {acc} | {f1} | {r['samples_per_second']:.1f} | {speed} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""1 process against 2 data-parallel processes (DDP and FSDP, gloo) on this machine, in one run.

The recipe is the shipped MiniLM-L6 / Rotten Tomatoes one, cut to a fixed number of optimiser steps; the
effective batch (32) is the same in every configuration, so each row does the same optimisation. The
throughput is lftrain's own `train_samples_per_second` (training steps only: evaluation, loading and
saving excluded), read from the run's metrics.jsonl.

    python benchmarks/bench_distributed.py [--steps 30] [--out benchmarks/results/distributed.txt]

On a 2-core machine expect no gain: one process already uses both cores (2 threads), and two processes
of one thread each add an all-reduce of every gradient (22.7M fp32 values, 91 MB) through gloo on the
same cores, plus a second copy of the model, optimiser and tokenised data in memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, child_env, default_threads, format_table

RECIPE = REPO_ROOT / "recipes" / "rotten-tomatoes-minilm.yaml"


def run(label: str, workdir: Path, steps: int, nproc: int | None, strategy: str, threads: int) -> dict:
    out = workdir / label
    overrides = [f"train.max_steps={steps}", f"train.strategy={strategy}", f"train.threads={threads}",
                 f"train.eval_every={steps}", "train.log_every=5", "eval.latency=false", "eval.report=false",
                 "eval.bootstrap_samples=0", "eval.splits=[]", f"output.dir={out}",
                 f"data.cache_dir={workdir / 'cache'}"]
    cmd = [sys.executable, "-m", "lftrain", "train", str(RECIPE), *overrides]
    cmd += ["--nproc", str(nproc)] if nproc else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=child_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{label}: exit {proc.returncode}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    end = next(r for r in records if r["event"] == "train_end")
    losses = [r["loss"] for r in records if r["event"] == "train"]
    return {"label": label, "sps": end["train_samples_per_second"], "train_s": end["train_runtime"],
            "wall_s": wall, "last_loss": losses[-1]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = p.parse_args()
    cores = default_threads()
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        work = Path(tmp)
        run("warm-up (tokenise once)", work, 1, None, "auto", cores)
        rows = [run(f"1 process x {cores} threads", work, args.steps, None, "auto", cores),
                run(f"2 processes x {max(1, cores // 2)} thread(s), DDP", work, args.steps, 2, "ddp",
                    max(1, cores // 2)),
                run(f"2 processes x {max(1, cores // 2)} thread(s), FSDP", work, args.steps, 2, "fsdp",
                    max(1, cores // 2))]
    base = rows[0]["sps"]
    table = format_table(["configuration", "samples/s (train steps)", "vs 1 process", "train s", "wall s",
                          "last logged loss"],
                         [[r["label"], f"{r['sps']:.1f}", f"{r['sps'] / base:.2f}x", f"{r['train_s']:.1f}",
                           f"{r['wall_s']:.1f}", f"{r['last_loss']:.4f}"] for r in rows])
    header = (f"MiniLM-L6 full fine-tuning, Rotten Tomatoes, effective batch 32, {args.steps} steps, {cores} cores, "
              "precision auto\n")
    print(header + table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + "\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Two variants of lftrain's training step, timed on the same batches in one process.

Whole runs carry the machine's drift (single runs of one system moved by up to 13% within the hour), so a change of
a few percent cannot be judged from them. This script builds the benchmark's job twice in one process, through the
orchestrator's own phases: variant A and variant B, each from the job's recipe plus its own overrides (`--a`, `--b`,
e.g. `train.accel=off`) and levers left out (`--a-skip`, `--b-skip`, a name of `lftrain.accel.LEVERS`). Both start
from the same weights; every batch of the epoch is stepped by both, alternating which goes first, and timed. The
ratio of their times cancels the drift. With no variant given the two are the same: that control shows the
harness's own bias.

    python benchmarks/ab_steps.py --setting full --a train.accel=off      # every lever against none
    python benchmarks/ab_steps.py --setting lora --b-skip dropout         # one lever against all of them
    python benchmarks/ab_steps.py --setting full --steps 60 --json ab.json   # the control
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import format_table, in_workdir, lft_child_env, prepare_rotten_tomatoes, write_results
from bench_adaptation import SETTINGS, add_job_arguments
from bench_trainer import job_config, write_recipe


def summarize(times: dict[str, list[float]], skip: int) -> dict[str, Any]:
    a, b = times["A"][skip:], times["B"][skip:]
    if not a:
        raise RuntimeError(f"only {len(times['A'])} steps ran; nothing is left after skipping {skip}")
    return {"steps": len(a), "skipped": skip,
            "A_median_ms": 1e3 * statistics.median(a), "B_median_ms": 1e3 * statistics.median(b),
            "A_mean_ms": 1e3 * statistics.mean(a), "B_mean_ms": 1e3 * statistics.mean(b),
            "B_over_A_total": sum(b) / sum(a),
            "B_over_A_median_pair": statistics.median(y / x for x, y in zip(a, b))}


# --------------------------------------------------------------------------- child (the measured process)


def build_variant(recipe: Path, overrides: list[str], skip: list[str], out: Path):
    """One variant through the orchestrator's phases, up to the context fit() would get."""
    from lftrain.config import load_recipe
    from lftrain.orchestrator import run as orchestrator

    p = orchestrator.prepare_inputs(load_recipe(recipe, [*overrides, f"output.dir={out}"]))
    s = orchestrator.open_session(p, new_run=True, allow_recipe_change=False)
    s.accel_skip = frozenset(skip)
    b = orchestrator.build_model(s)
    return orchestrator.fit_context(s, b, orchestrator.build_optimiser(s, b))


def child_main(config: Path, result: Path) -> int:
    from lftrain.data.batching import epoch_batches
    from lftrain.training.loop import _train_step

    cfg = json.loads(config.read_text())
    recipe = Path(cfg["recipe"])
    ctx = {v: build_variant(recipe, cfg[v.lower()], cfg[f"{v.lower()}_skip"], config.parent / f"run-{v}")
           for v in "AB"}
    train = ctx["A"].cfg
    batches = epoch_batches(ctx["A"].task.lengths(ctx["A"].train_data), train.batch_size, train.seed, 0,
                            train.group_by_length)[: cfg["steps"]]
    for c in ctx.values():
        c.model.train()
    times: dict[str, list[float]] = {"A": [], "B": []}
    for i, batch in enumerate(batches):
        for v in ("AB" if i % 2 == 0 else "BA"):
            t0 = time.perf_counter()
            _train_step(ctx[v], batch, train.micro_batch_size or train.batch_size)
            times[v].append(time.perf_counter() - t0)
    result.write_text(json.dumps({"times_s": times}))
    return 0


# --------------------------------------------------------------------------- parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from lftrain.accel import LEVERS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="full", choices=list(SETTINGS))
    for v in ("a", "b"):
        p.add_argument(f"--{v}", action="append", default=[], metavar="KEY=VALUE",
                       help=f"a recipe override of variant {v.upper()}")
        p.add_argument(f"--{v}-skip", action="append", default=[], choices=list(LEVERS),
                       help=f"a lever variant {v.upper()} leaves out")
    p.add_argument("--steps", type=int, default=319, help="batches, each stepped by both variants (319: an epoch)")
    p.add_argument("--skip", type=int, default=10, help="first batches left out of the figures (warm-up)")
    p.add_argument("--workdir", type=Path, help="where data and the runs go (default: a temp dir, removed)")
    add_job_arguments(p)
    p.add_argument("--_config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps <= args.skip:
        p.error("--steps must exceed --skip")
    args.epochs, args.peer_pad_multiple = 1.0, None  # job_config's fields; --steps bounds the run
    return args


def _describe(args: argparse.Namespace, v: str) -> str:
    return " ".join([*getattr(args, v), *(f"skip {s}" for s in getattr(args, f"{v}_skip"))]) or "(as is)"


def measure(args: argparse.Namespace, workdir: Path) -> int:
    import yaml

    files = prepare_rotten_tomatoes(workdir)
    spec = SETTINGS[args.setting]
    job = {**job_config(args, workdir, files.n_train, files.n_test),
           "lr": args.lora_lr if spec["type"] == "lora" else args.lr}
    rundir = workdir / f"ab-{args.setting}"
    rundir.mkdir(parents=True, exist_ok=True)
    recipe = write_recipe(job, rundir)
    data = yaml.safe_load(recipe.read_text())
    recipe.write_text(yaml.safe_dump({**data, "adaptation": spec}, sort_keys=False))
    cfg = {"recipe": str(recipe), "steps": args.steps, "a": args.a, "b": args.b, "a_skip": args.a_skip,
           "b_skip": args.b_skip}
    config, result = rundir / "config.json", rundir / "times.json"
    config.write_text(json.dumps(cfg))
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_config", str(config), "--_result", str(result)]
    proc = subprocess.run(cmd, env=lft_child_env(job["threads"]), cwd=rundir, stdout=sys.stderr,
                          stderr=sys.stderr, check=False)
    if proc.returncode != 0 or not result.is_file():
        print(f"the lftrain child failed (exit {proc.returncode}); its output is above", file=sys.stderr)
        return 1
    times = json.loads(result.read_text())["times_s"]
    summary = summarize(times, args.skip)
    rows = [[v, f"{summary[f'{v}_median_ms']:.1f}", f"{summary[f'{v}_mean_ms']:.1f}", _describe(args, v.lower())]
            for v in ("A", "B")]
    print(f"== {args.setting} ({job['precision']}): {summary['steps']} batches, each stepped by A and B "
          f"(first {args.skip} left out)")
    print(format_table(["variant", "median ms", "mean ms", "settings"], rows))
    print(f"B / A: total time {summary['B_over_A_total']:.4f}, median of per-batch ratios "
          f"{summary['B_over_A_median_pair']:.4f}")
    if args.json:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_results(args.json, {"benchmark": "ab_steps", "timestamp": stamp, "config": {**job, **cfg},
                                         "summary": summary, "times_s": times})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._config:
        return child_main(args._config, args._result)
    return in_workdir(args.workdir, "lft-ab-", lambda workdir: measure(args, workdir))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())

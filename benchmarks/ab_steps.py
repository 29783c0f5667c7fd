"""Two variants of lftrain's training step, timed on the same batches in one process.

Whole runs carry the machine's drift: single runs of one system moved by up to 13% within the hour on the
benchmark host, so a change worth 1-3% cannot be judged from them. This script runs one lftrain job (one of
bench_adaptation's settings) and takes every batch's step twice, once under variant A and once under variant B,
alternating which goes first, and times each. Both variants see the same batches, process, allocator and moment
of the machine, so the ratio of their times cancels the drift. Each batch updates the model twice, so the losses
are not a real run's; what a step costs is.

A variant sets module attributes before each of its steps, e.g. `--b lftrain.models.unpad.ROWS_MULTIPLE=32`;
an attribute that only one variant names keeps its original value in the other. With neither `--a` nor `--b`
the two variants are the same: that control shows the harness's own bias (B/A 0.996 over an epoch of full
fine-tuning).

Run (from the repository root, with the project venv; an epoch of full fine-tuning, 2 x 319 steps, takes ~5
minutes on 2 cores):

    python benchmarks/ab_steps.py --setting full --b lftrain.models.unpad.ROWS_MULTIPLE=32
    python benchmarks/ab_steps.py --setting lora --steps 100 --json ab.json      # the control
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import format_table, in_workdir, lft_child_env, prepare_rotten_tomatoes
from bench_adaptation import SETTINGS, add_job_arguments
from bench_trainer import job_config, train_lft_wrapping_steps


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """'package.module.NAME=value' -> (module, name, value); the value is a Python literal."""
    target, sep, value = text.partition("=")
    module, dot, name = target.strip().rpartition(".")
    if not sep or not dot or not name:
        raise ValueError(f"expected module.NAME=value, got {text!r}")
    try:
        return module, name, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{text!r}: the value must be a Python literal ({exc})") from exc


def variant_setters(a: list[str], b: list[str]):
    """Two functions that put the attributes in variant A's and B's state (originals where a variant is silent)."""
    parsed = {"A": [parse_assignment(t) for t in a], "B": [parse_assignment(t) for t in b]}
    modules = {m: importlib.import_module(m) for m, _, _ in parsed["A"] + parsed["B"]}
    for m, name, _ in parsed["A"] + parsed["B"]:
        if not hasattr(modules[m], name):
            raise ValueError(f"{m} has no attribute {name}")
    originals = {(m, name): getattr(modules[m], name) for m, name, _ in parsed["A"] + parsed["B"]}

    def setter(which: str):
        state = {**originals, **{(m, name): v for m, name, v in parsed[which]}}

        def apply() -> None:
            for (m, name), value in state.items():
                setattr(modules[m], name, value)
        return apply

    return setter("A"), setter("B")


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


def child_main(config: Path, result: Path) -> int:
    cfg = json.loads(config.read_text())
    first, second = variant_setters(cfg["a"], cfg["b"])
    times: dict[str, list[float]] = {"A": [], "B": []}

    def wrap(step: Any) -> Any:
        def twice(*args: Any, **kwargs: Any) -> Any:
            order = [("A", first), ("B", second)]
            if len(times["A"]) % 2:
                order.reverse()
            out = None
            for name, apply in order:
                apply()
                t0 = time.perf_counter()
                out = step(*args, **kwargs)
                times[name].append(time.perf_counter() - t0)
            first()  # whatever runs between steps (evaluation, checkpoints) sees variant A
            return out
        return twice

    train_lft_wrapping_steps(cfg, result.parent, cfg["steps"], wrap)
    result.write_text(json.dumps({"times_s": times}))
    return 0


# --------------------------------------------------------------------------- parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="full", choices=list(SETTINGS))
    p.add_argument("--a", action="append", default=[], metavar="MODULE.NAME=VALUE", help="variant A's settings")
    p.add_argument("--b", action="append", default=[], metavar="MODULE.NAME=VALUE", help="variant B's settings")
    p.add_argument("--steps", type=int, default=319, help="batches, each stepped by both variants (319: an epoch)")
    p.add_argument("--skip", type=int, default=10, help="first batches left out of the figures (warm-up)")
    p.add_argument("--workdir", type=Path, help="where data and the run go (default: a temp dir, removed)")
    add_job_arguments(p)
    p.add_argument("--_config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        variant_setters(args.a, args.b)  # fail here, not after the data is prepared
    except (ValueError, ImportError) as exc:
        p.error(str(exc))
    if args.steps <= args.skip:
        p.error("--steps must exceed --skip")
    args.epochs, args.peer_pad_multiple = 1.0, None  # job_config's fields; --steps bounds the run
    return args


def measure(args: argparse.Namespace, workdir: Path) -> int:
    files = prepare_rotten_tomatoes(workdir)
    spec = SETTINGS[args.setting]
    cfg = {**job_config(args, workdir, files.n_train, files.n_test), "adaptation": spec, "setting": args.setting,
           "lr": args.lora_lr if spec["type"] == "lora" else args.lr, "a": args.a, "b": args.b, "steps": args.steps}
    rundir = workdir / f"ab-{args.setting}"
    rundir.mkdir(parents=True, exist_ok=True)
    config, result = rundir / "config.json", rundir / "times.json"
    config.write_text(json.dumps(cfg))
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_config", str(config), "--_result", str(result)]
    proc = subprocess.run(cmd, env=lft_child_env(cfg["threads"]), cwd=rundir, stdout=sys.stderr,
                          stderr=sys.stderr, check=False)
    if proc.returncode != 0 or not result.is_file():
        print(f"the lftrain child failed (exit {proc.returncode}); its output is above", file=sys.stderr)
        return 1
    times = json.loads(result.read_text())["times_s"]
    summary = summarize(times, args.skip)
    rows = [[v, f"{summary[f'{v}_median_ms']:.1f}", f"{summary[f'{v}_mean_ms']:.1f}", " ".join(getattr(args, v.lower()))
             or "(as is)"] for v in ("A", "B")]
    print(f"== {args.setting}: {summary['steps']} batches, each stepped by A and B (first {args.skip} left out)")
    print(format_table(["variant", "median ms", "mean ms", "settings"], rows))
    print(f"B / A: total time {summary['B_over_A_total']:.4f}, median of per-batch ratios "
          f"{summary['B_over_A_median_pair']:.4f}")
    if args.json:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        args.json.write_text(json.dumps({"benchmark": "ab_steps", "timestamp": stamp, "config": cfg,
                                         "summary": summary, "times_s": times}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._config:
        return child_main(args._config, args._result)
    return in_workdir(args.workdir, "lft-ab-", lambda workdir: measure(args, workdir))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())

"""Where a training step's time goes, in lftrain and in the peer, side by side.

bench_trainer.py and bench_adaptation.py say how much faster lftrain trains; this script says why, and how
far the ratio could go. For each setting (bench_adaptation's `full`, `freeze4`, `lora`), it runs a window of
training steps of each system under torch.profiler, each system in its own child process, one after the other,
on the same data, and prints the milliseconds a step spends in each kind of work:

  matmuls         aten::mm, addmm, bmm, baddbmm: the maths both systems must do
  random draws    bernoulli_, uniform_, random_, normal_ (dropout)
  casts, copies   copy_, _to_copy, to (autocast's casts, layout copies)
  optimizer       the fused AdamW kernel
  other ops       every other aten operator (element-wise work, norms, softmax, GELU, indexing, ...)
  outside ops     time in neither: Python, autograd bookkeeping, the profiler's own records

and two ratios, both per real (unpadded) token since the windows hold different batches: the window's (the
peer's time / lftrain's, both with the profiler on), and the ceiling, the ratio lftrain would reach if
everything but its matmuls took no time (the peer's time / lftrain's matmul time). Profiled
steps are slower than plain ones, a window of steps is not the whole run, and the two systems shuffle
differently, so their windows hold different batches (80 steps average most of that out). A step is timed
from lftrain's fetching of its batch and from the peer's `on_step_begin` (after its batch is collated) to the
end of the optimizer step. bench_*.py measure speed; this script measures composition.

Run (from the repository root, with the project venv; ~2 minutes per setting on 2 cores):

    python benchmarks/profile_steps.py --settings full,lora --json benchmarks/results/profile_steps.json
    python benchmarks/profile_steps.py --settings lora --window 20:60
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import child_env, format_table, in_workdir, lft_child_env, prepare_rotten_tomatoes, write_results
from bench_adaptation import SETTINGS, add_job_arguments, apply_peer_adaptation
from bench_trainer import build_hf_trainer, job_config, train_lft_wrapping_steps

CATEGORIES = {
    "matmuls": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "random draws": ("aten::bernoulli_", "aten::uniform_", "aten::random_", "aten::normal_"),
    "casts, copies": ("aten::copy_", "aten::_to_copy", "aten::to"),
    "optimizer": ("aten::_fused_adamw_", "aten::_fused_adam_"),
}
ORDER = (*CATEGORIES, "other ops", "outside ops")
SYSTEMS = {"hf": "HF Trainer", "lft": "lftrain"}


def category(op: str) -> str:
    for name, ops in CATEGORIES.items():
        if op in ops:
            return name
    return "other ops" if op.startswith("aten::") else "outside ops"


class StepWindow:
    """Profiles steps [first, last) (1-based): call `begin()` before a step and `end()` after it."""

    def __init__(self, first: int, last: int, top: int = 15) -> None:
        import torch

        self.first, self.last, self.n, self.seconds, self.t0, self.tokens = first, last, 0, 0.0, 0.0, 0
        self.top = top  # operators listed by their own time (`top_ops`)
        self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def begin(self) -> None:
        self.n += 1
        if self.n == self.first:
            self.profiler.__enter__()
        self.t0 = time.perf_counter()

    def count(self, tokens: int) -> None:
        """The real (unpadded) tokens of the step under way."""
        if self.first <= self.n < self.last:
            self.tokens += tokens

    def end(self) -> None:
        if self.first <= self.n < self.last:
            self.seconds += time.perf_counter() - self.t0
        if self.n == self.last - 1:
            self.profiler.__exit__(None, None, None)

    def summary(self) -> dict[str, Any]:
        if self.n < self.last - 1:
            raise RuntimeError(f"the run stopped after {self.n} steps, before the window's end ({self.last - 1})")
        steps = self.last - self.first
        events = self.profiler.key_averages()
        # What was timed as a step must be one optimizer step: a system that split a batch into micro-batches
        # (two calls of lftrain's step function per update) would otherwise be compared per half step.
        updates = sum(e.count for e in events if e.key.startswith("Optimizer.step#"))
        if updates != steps:
            raise RuntimeError(f"the window timed {steps} steps but the profiler saw {updates} optimizer steps")
        ms = collections.defaultdict(float)
        ops = collections.defaultdict(float)
        for event in events:
            own = event.self_cpu_time_total / 1e3 / steps
            ms[category(event.key)] += own
            ops[event.key] += own
        step_ms = 1e3 * self.seconds / steps
        ms["outside ops"] += max(0.0, step_ms - sum(ms.values()))  # wall time no operator accounts for
        top = sorted(ops.items(), key=lambda kv: -kv[1])[:self.top]
        return {"steps": steps, "step_ms": step_ms, "tokens_per_step": self.tokens / steps,
                "ms": {k: ms.get(k, 0.0) for k in ORDER}, "top_ops": [{"op": k, "ms": v} for k, v in top]}


# --------------------------------------------------------------------------- children (one per system)


def run_lft_child(cfg: dict[str, Any], out: Path, window: StepWindow) -> None:
    def wrap(step: Any) -> Any:
        lengths: list = []

        def timed(ctx: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
            if not lengths:
                lengths.append(ctx.task.lengths(ctx.train_data))
            window.begin()
            window.count(int(lengths[0][batch].sum()))
            try:
                return step(ctx, batch, *args, **kwargs)
            finally:
                window.end()
        return timed

    train_lft_wrapping_steps(cfg, out.parent, window.last + 1, wrap)


def run_hf_child(cfg: dict[str, Any], out: Path, window: StepWindow) -> None:
    from transformers import TrainerCallback

    class Window(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            window.begin()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            window.end()

    trainer, _, _ = build_hf_trainer(cfg, out.parent / "hf-run", lambda m, c: apply_peer_adaptation(m, c["adaptation"]),
                                     callbacks=[Window()])
    trainer.args.max_steps = window.last + 1
    step = trainer.training_step

    def counted(model: Any, inputs: dict, *args: Any, **kwargs: Any) -> Any:
        window.count(int(inputs["attention_mask"].sum()))
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = counted
    trainer.train()


def child_main(system: str, config: Path, result: Path) -> int:
    cfg = json.loads(config.read_text())
    window = StepWindow(*cfg["window"], top=cfg.get("top", 15))
    (run_hf_child if system == "hf" else run_lft_child)(cfg, result, window)
    result.write_text(json.dumps(window.summary(), indent=2))
    return 0


def run_child(system: str, cfg: dict[str, Any], rundir: Path) -> dict[str, Any]:
    rundir.mkdir(parents=True, exist_ok=True)
    config, result = rundir / "config.json", rundir / "profile.json"
    config.write_text(json.dumps(cfg))
    result.unlink(missing_ok=True)
    # lftrain's child gets the allocator `lft train` re-executes itself on (tcmalloc, else jemalloc)
    env = lft_child_env(cfg["threads"]) if system == "lft" else child_env(cfg["threads"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", system, "--_config", str(config),
           "--_result", str(result)]
    proc = subprocess.run(cmd, env=env, cwd=rundir, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"{SYSTEMS[system]} child failed (exit {proc.returncode}); its output is above")
    return json.loads(result.read_text())


# --------------------------------------------------------------------------- report


def report(name: str, res: dict[str, dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The table, and the ratios per real token (the windows hold different batches)."""
    hf, lft = res["hf"], res["lft"]
    rows = [[k, f"{hf['ms'][k]:.1f}", f"{lft['ms'][k]:.1f}"] for k in ORDER]
    rows.append(["whole step", f"{hf['step_ms']:.1f}", f"{lft['step_ms']:.1f}"])
    rows.append(["real tokens per step", f"{hf['tokens_per_step']:.0f}", f"{lft['tokens_per_step']:.0f}"])
    per_token = {s: r["step_ms"] / r["tokens_per_step"] for s, r in res.items()}
    ratios = {"window": per_token["hf"] / per_token["lft"],
              "ceiling": per_token["hf"] / (lft["ms"]["matmuls"] / lft["tokens_per_step"])}
    table = format_table(["ms per step", "HF", "lftrain"], rows)
    return (f"== {name} ({lft['steps']} steps per system, profiler on)\n{table}\n"
            f"ratio per real token in these windows {ratios['window']:.2f}x; ceiling (lftrain's matmuls alone) "
            f"{ratios['ceiling']:.2f}x"), ratios


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="full,lora", help=f"comma-separated subset of {','.join(SETTINGS)}")
    p.add_argument("--window", default="20:100", help="steps FIRST:LAST to profile (1-based, LAST excluded)")
    p.add_argument("--workdir", type=Path, help="where data and runs go (default: a temp dir, removed)")
    p.add_argument("--train-limit", type=int, help="stratified subsample of N training rows")
    p.add_argument("--top", type=int, default=15, help="operators to list by their own time per step (JSON top_ops)")
    add_job_arguments(p)
    p.add_argument("--_child", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    p.add_argument("--_config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if not args.settings or set(args.settings) - set(SETTINGS):
        p.error(f"--settings takes a subset of {','.join(SETTINGS)}")
    try:
        args.first, args.last = (int(x) for x in args.window.split(":"))
    except ValueError:
        p.error("--window takes FIRST:LAST, e.g. 20:100")
    if not 1 <= args.first < args.last:
        p.error("--window needs 1 <= FIRST < LAST")
    args.epochs, args.peer_pad_multiple = 1.0, None  # job_config's fields; the window bounds the run
    return args


def profile(args: argparse.Namespace, workdir: Path) -> int:
    files = prepare_rotten_tomatoes(workdir, args.train_limit)
    base = job_config(args, workdir, files.n_train, files.n_test)
    results, ratios = {}, {}
    for name in args.settings:
        spec = SETTINGS[name]
        cfg = {**base, "lr": args.lora_lr if spec["type"] == "lora" else args.lr, "adaptation": spec,
               "setting": name, "window": [args.first, args.last], "top": args.top}
        results[name] = {s: run_child(s, cfg, workdir / name / s) for s in SYSTEMS}
        text, ratios[name] = report(name, results[name])
        print(text, flush=True)
    if args.json:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_results(args.json, {"benchmark": "profile_steps", "timestamp": stamp,
                                         "config": {**base, "window": [args.first, args.last]},
                                         "results": results, "ratios": ratios})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child:
        return child_main(args._child, args._config, args._result)
    return in_workdir(args.workdir, "lft-profile-", lambda workdir: profile(args, workdir))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())

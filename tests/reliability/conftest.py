"""Harness of the reliability suite: real `lft train` processes, real signals, runs compared bit for bit.

Children are forked from a forkserver that has already imported torch/transformers/lftrain
(tests/reliability/child.py), so the ~30 training processes of the suite cost seconds, not minutes.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import make_tiny_bert, toy_rows, write_csv, write_recipe

_CTX = None


def _mp():
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(["tests.reliability.child"])
    return _CTX


@dataclass
class Result:
    code: int  # exit code; -N when killed by signal N
    log: str


def start(argv: list[str], log: Path, faults: dict | None = None):
    from tests.reliability import child

    p = _mp().Process(target=child.main, args=([str(a) for a in argv], str(log), faults or {}))
    p.start()
    return p


def lft(*argv, log: Path, faults: dict | None = None, timeout: float = 180) -> Result:
    """Run `lft ARGV` in a child process (with an optional fault) and wait for it."""
    offset = log.stat().st_size if log.exists() else 0
    p = start(list(argv), log, faults)
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise AssertionError(f"lft {' '.join(map(str, argv))} did not finish in {timeout}s:\n{log.read_text()}")
    return Result(p.exitcode, log.read_text()[offset:])


# Settings that keep each run short: few rows, the end-of-run extras off where this tree has them.
_FAST_EVAL = {"latency": False, "report": False, "bootstrap_samples": 0, "temperature_scaling": False}


def fast_eval() -> dict:
    from lftrain.config.schema import EvalConfig

    return {k: v for k, v in _FAST_EVAL.items() if k in EvalConfig.model_fields}


def recipe(model: Path, train: Path, out: Path, *, cache: Path, **train_cfg) -> dict:
    cfg = {"epochs": 2, "lr": 2e-3, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32",
           "log_every": 1, "eval_every": 10, "save_every": 6, "keep_checkpoints": 2, "log_samples": True,
           "num_workers": 0, **train_cfg}
    return {"model": {"path": str(model)},
            "task": {"type": "text-classification", "text": "text", "label": "label", "max_length": 32},
            "data": {"train": str(train), "test_fraction": 0.15, "eval_fraction": 0.15, "cache_dir": str(cache)},
            "train": cfg, "eval": fast_eval(), "output": {"dir": str(out)}}


class Lab:
    """A tiny model, a data file and helpers to write recipes and run them; one per test module."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root, self.model = root, model
        self.train = write_csv(root / "train.csv", toy_rows(200))  # 140 train rows: 18 steps/epoch, 36 in all
        self.cache = root / "cache"
        self._ref: dict[tuple, Path] = {}

    def recipe(self, name: str, *, train: Path | None = None, model: Path | None = None, **train_cfg) -> Path:
        out = self.root / name
        return write_recipe(self.root / f"{name}.yaml", recipe(model or self.model, train or self.train, out,
                                                                 cache=self.cache, **train_cfg))

    def run(self, name: str, *extra: str, faults: dict | None = None, **train_cfg) -> Result:
        r = self.recipe(name, **train_cfg) if not (self.root / f"{name}.yaml").exists() or train_cfg else \
            self.root / f"{name}.yaml"
        return lft("train", r, *extra, log=self.root / f"{name}.log", faults=faults)

    def reference(self, **train_cfg) -> Path:
        """An uninterrupted run with these settings (computed once per module)."""
        key = tuple(sorted(train_cfg.items()))
        if key not in self._ref:
            name = f"ref{len(self._ref)}"
            res = self.run(name, **train_cfg)
            assert res.code == 0, res.log
            self._ref[key] = self.root / name
        return self._ref[key]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    root = tmp_path_factory.mktemp("rel")
    return Lab(root, make_tiny_bert(root / "bert", dropout=0.1))


# ---- comparing runs ---------------------------------------------------------------------------------------
def records(run: Path, event: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == event]


def train_losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records(run, "train")]


def samples(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]


def final_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*"))[-1]


def assert_same_run(ref: Path, other: Path) -> None:
    """Bitwise-equal final weights, optimiser state and per-step losses; the same examples at every step."""
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(other / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weights differ: {k} (max |diff| {(a[k] - b[k]).abs().max().item():.3g})"
    ca, cb = final_checkpoint(ref), final_checkpoint(other)
    assert ca.name == cb.name
    for name in ("model.safetensors",):
        sa, sb = load_file(ca / name), load_file(cb / name)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    oa = torch.load(ca / "optimizer.pt", weights_only=True)
    ob = torch.load(cb / "optimizer.pt", weights_only=True)
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), f"optimizer state {i}.{k} differs"
    assert train_losses(ref) == train_losses(other)  # every step, nothing skipped or repeated
    assert [(r["step"], r["loss"]) for r in records(ref, "eval")] == \
        [(r["step"], r["loss"]) for r in records(other, "eval")]
    assert samples(ref) == samples(other)  # the same examples in the same order, each step exactly once


def complete_checkpoints(run: Path) -> list[str]:
    root = run / "checkpoints"
    return sorted(p.name for p in root.glob("step-*") if (p / "MANIFEST.json").is_file()) if root.is_dir() else []


def wait_for(pred, timeout: float = 120) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False

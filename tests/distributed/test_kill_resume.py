"""`lft train --nproc 2`: SIGKILL torchrun mid-run (the workers must die with it), resume, and end where an
uninterrupted 2-process run ends (weights and the whole loss trajectory)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from safetensors.torch import load_file

from lftrain import api
from lftrain.training.faults import KILL_AT_STEP
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

KILL_STEP = 10  # saves every 4 steps: step-8 is on disk, steps 9-10 are lost and must be trained again


def _complete_steps(run):
    root = run / "checkpoints"
    return [int(p.name.split("-")[1]) for p in root.iterdir()
            if p.name.startswith("step-") and (p / "MANIFEST.json").exists()] if root.is_dir() else []


def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "train"]


def _workers_gone(run, timeout=30.0):
    """The killed run's workers must not train on as orphans: rank 0's run lock is free once they are dead."""
    import fcntl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fd = os.open(run / ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.2)
        finally:
            os.close(fd)
    return False


@pytest.mark.slow  # ~1 min: two processes killed and resumed (`make test-slow`; not in CI: .ci/run runs the demo only)
@pytest.mark.parametrize("strategy", ["ddp"])
def test_killed_distributed_run_resumes_to_the_same_weights(tiny_bert, tmp_path, strategy):
    train = write_csv(tmp_path / "train.csv", toy_rows(300))
    settings = {"epochs": 2, "save_every": 4, "log_every": 1, "lr": 1e-3, "strategy": strategy,
                "batch_size": 9}  # 9 over 2 ranks: uneven shards, padded micro-batches
    ref_run, cut_run = tmp_path / "ref", tmp_path / "cut"
    quick = {"latency": False, "bootstrap_samples": 0, "report": False, "splits": []}  # not what is tested here
    cut = write_recipe(tmp_path / "cut.yaml", {**tiny_recipe(tiny_bert, train, cut_run, **settings), "eval": quick})
    # the uninterrupted reference goes through the Python API: train(recipe, nproc=2) launches torchrun too
    done = api.train({**tiny_recipe(tiny_bert, train, ref_run, **settings), "eval": quick}, nproc=2)
    assert done.run_dir == ref_run and done.steps > 8

    # both ranks stop after step 10 and rank 0 SIGKILLs torchrun (training/faults.py): mid-epoch, between saves,
    # on any machine; the workers must then die with their launcher
    killed = run_lft("train", str(cut), "--nproc", "2", env={KILL_AT_STEP: str(KILL_STEP)})
    status = json.loads((cut_run / "run.json").read_text())["status"]
    # lft exits with torchrun's status, -SIGKILL as a byte (a worker's crash would make torchrun exit 1)
    assert killed.returncode == -signal.SIGKILL & 0xFF and status != "finished", \
        f"the run was not killed at step {KILL_STEP} (exit {killed.returncode}, status {status}):\n" \
        + killed.stderr[-3000:]
    assert _workers_gone(cut_run), "workers outlived their launcher"
    assert max(_complete_steps(cut_run)) == 8
    assert _losses(cut_run)[-1][0] == KILL_STEP  # logged, then lost: the resume must drop and redo steps 9-10

    resumed = run_lft("train", str(cut), "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step-00000008" in resumed.stderr

    a, b = load_file(ref_run / "model" / "model.safetensors"), load_file(cut_run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after kill + resume"
    assert _losses(ref_run) == _losses(cut_run)  # the same trajectory, step by step, nothing skipped or repeated
    manifest = json.loads((cut_run / "manifest.json").read_text())
    assert manifest["distributed"]["world_size"] == 2

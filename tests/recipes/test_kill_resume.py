"""SIGKILL a real training process, resume it, and get exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
import signal

from safetensors.torch import load_file

from lftrain.training.faults import KILL_AT_STEP
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

KILL_STEP = 10  # saves every 4 steps: step-8 is on disk, steps 9-10 are lost and must be trained again


def _complete_checkpoints(run):
    root = run / "checkpoints"
    return [p for p in root.iterdir() if p.name.startswith("step-") and (p / "MANIFEST.json").exists()] \
        if root.is_dir() else []


def losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "train"]


def test_killed_run_resumes_to_identical_weights(tiny_bert, tmp_path):
    train = write_csv(tmp_path / "train.csv", toy_rows(400))
    settings = {"epochs": 3, "save_every": 4, "keep_checkpoints": 2, "log_every": 1, "lr": 1e-3}
    ref_run, cut_run = tmp_path / "ref", tmp_path / "cut"
    ref = write_recipe(tmp_path / "ref.yaml", tiny_recipe(tiny_bert, train, ref_run, **settings))
    cut = write_recipe(tmp_path / "cut.yaml", tiny_recipe(tiny_bert, train, cut_run, **settings))
    assert run_lft("train", str(ref)).returncode == 0

    # the run SIGKILLs itself after step 10 (training/faults.py): mid-epoch, between saves, on any machine
    killed = run_lft("train", str(cut), env={KILL_AT_STEP: str(KILL_STEP)})
    status = json.loads((cut_run / "run.json").read_text())["status"]
    assert killed.returncode == -signal.SIGKILL and status != "finished", \
        f"the run was not killed at step {KILL_STEP} (exit {killed.returncode}, status {status}):\n" \
        + killed.stderr[-3000:]
    assert max(int(p.name.split("-")[1]) for p in _complete_checkpoints(cut_run)) == 8
    assert losses(cut_run)[-1][0] == KILL_STEP  # logged, then lost: the resume must drop and redo steps 9-10

    resumed = run_lft("train", str(cut))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step-00000008" in resumed.stderr

    a = load_file(ref_run / "model" / "model.safetensors")
    b = load_file(cut_run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after kill + resume"
    assert losses(ref_run) == losses(cut_run)  # the same trajectory, step by step, nothing skipped or repeated

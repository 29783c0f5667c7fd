"""Kill `lft tune` (SIGKILL, a real subprocess) in the middle of a trial; running it again continues the study:
finished trials stay, the killed trial runs again with the same values and resumes its run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna

from tests.conftest import run_lft, write_recipe
from tests.tuning.conftest import tune_recipe


def _has_checkpoint(run) -> bool:
    root = run / "checkpoints"
    return root.is_dir() and any((p / "MANIFEST.json").exists() for p in root.iterdir() if p.name.startswith("step-"))


def test_killed_search_resumes(tiny_bert, tmp_path):
    recipe = tune_recipe(tmp_path, tiny_bert, rows=80, sampler="random", pruner="none")
    recipe["train"].update(epochs=2, save_every=2)
    path = write_recipe(tmp_path / "tune.yaml", recipe)
    study_dir = tmp_path / "runs" / "toy-tune"
    victim = study_dir / "trials" / "trial-0001"

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lftrain", "tune", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not _has_checkpoint(victim):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "lft tune ended before trial 1 started"
    killed_unfinished = json.loads((victim / "run.json").read_text())["status"] != "finished"

    again = run_lft("tune", str(path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trials 1 were interrupted" in again.stderr
    if killed_unfinished:  # the usual case: the retry continues the killed run from its checkpoint
        assert "resumed from step-" in again.stderr

    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{study_dir / 'study.db'}")
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE"}
    assert study.trials[2].params == study.trials[1].params  # the retry runs the killed trial's values
    assert "trial 0:" not in again.stderr  # the finished trial is not run again
    dirs = sorted(p.name for p in (study_dir / "trials").iterdir())
    assert dirs == ["trial-0000", "trial-0001", "trial-0003"]
    retry = json.loads((victim / "trial.json").read_text())
    assert retry["trial"] == 2 and retry["retry_of"] == 1
    for d in dirs:
        assert json.loads((study_dir / "trials" / d / "run.json").read_text())["status"] == "finished"
    assert "best trial" in again.stdout and (study_dir / "best.yaml").is_file()

"""A private run killed and resumed ends with the uninterrupted run's weights and reports the ε of all its steps:
the Poisson batches are a function of (seed, epoch), the noise comes from the RNG state every checkpoint keeps, and
the accountant's history is a function of the step count."""

from __future__ import annotations

import json
import signal

from safetensors.torch import load_file

from lftrain.training.faults import KILL_AT_STEP
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

KILL_STEP = 10  # saves every 4 steps: step-8 is on disk, steps 9-10 are lost and must be trained again


def _recipe(model, train, out):
    r = tiny_recipe(model, train, out, epochs=2, save_every=4, keep_checkpoints=2, lr=1e-3, batch_size=8)
    r["train"]["privacy"] = {"epsilon": 4.0, "delta": 1e-3}
    r["data"]["checks"] = {"run": False}
    return r


def test_killed_private_run_resumes_to_the_same_weights_and_epsilon(tiny_bert, tmp_path):
    train = write_csv(tmp_path / "train.csv", toy_rows(400))
    ref_run, cut_run = tmp_path / "ref", tmp_path / "cut"
    recipes = {}
    for name in ("ref", "cut"):
        recipes[name] = write_recipe(tmp_path / f"{name}.yaml", _recipe(tiny_bert, train, tmp_path / name))
    assert run_lft("train", str(recipes["ref"])).returncode == 0

    # the run SIGKILLs itself after step 10 (training/faults.py): between saves, on any machine
    killed = run_lft("train", str(recipes["cut"]), env={KILL_AT_STEP: str(KILL_STEP)})
    assert killed.returncode == -signal.SIGKILL, \
        f"the run was not killed at step {KILL_STEP} (exit {killed.returncode}):\n" + killed.stderr[-3000:]
    root = cut_run / "checkpoints"
    assert max(int(p.name.split("-")[1]) for p in root.iterdir()
               if p.name.startswith("step-") and (p / "MANIFEST.json").exists()) == 8

    resumed = run_lft("train", str(recipes["cut"]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step-00000008" in resumed.stderr

    a = load_file(ref_run / "model" / "model.safetensors")
    b = load_file(cut_run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    ref = json.loads((ref_run / "manifest.json").read_text())["privacy"]
    cut = json.loads((cut_run / "manifest.json").read_text())["privacy"]
    assert cut["steps"] == ref["steps"] == ref["planned_steps"]
    assert cut["epsilon_spent"] == ref["epsilon_spent"] and 3.9 < cut["epsilon_spent"] <= 4.0

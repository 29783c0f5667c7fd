"""Scenario 8: a non-finite loss stops training within the step (or skips it, by policy), logged, with no
checkpoint after the last finite step.

The NaN is real, not mocked: the model's [UNK] embedding row is NaN and exactly one training row contains an
unknown word, so exactly one batch per epoch produces a NaN loss."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import toy_rows, write_csv, write_recipe
from tests.reliability.conftest import complete_checkpoints, lft, recipe, records


@pytest.fixture(scope="module")
def poisoned(lab):
    model = lab.root / "nan-bert"
    shutil.copytree(lab.model, model)
    w = load_file(model / "model.safetensors")
    key = next(k for k in w if k.endswith("word_embeddings.weight"))
    w[key][1] = float("nan")  # [UNK]
    save_file(w, model / "model.safetensors", metadata={"format": "pt"})
    rows = toy_rows(120)
    rows[37]["text"] += " zyzzyva"  # not in the vocabulary -> [UNK]
    data = write_csv(lab.root / "nan.csv", rows)
    return model, data


def _recipe(lab, poisoned, name: str, policy: str):
    model, data = poisoned
    r = recipe(model, data, lab.root / name, cache=lab.cache, nonfinite=policy, save_every=1, eval_every=None)
    r["data"].update(eval_fraction=0.0, test_fraction=0.0)
    r["eval"]["splits"] = []
    return write_recipe(lab.root / f"{name}.yaml", r)


def test_stop_policy(lab, poisoned):
    run = lab.root / "nan-stop"
    res = lft("train", _recipe(lab, poisoned, "nan-stop", "stop"), log=lab.root / "nan-stop.log")
    assert res.code == 5, res.log  # EXIT_TRAINING
    bad = records(run, "nonfinite")
    assert len(bad) == 1 and bad[0]["loss"] == "nan" and bad[0]["policy"] == "stop"
    step = bad[0]["step"]
    assert f"step {step}: loss nan is not finite; training stopped before updating the weights" in res.log
    assert complete_checkpoints(run)[-1] == f"step-{step - 1:08d}"  # save_every 1: the last finite step, no later
    final = load_file(run / "checkpoints" / f"step-{step - 1:08d}" / "model.safetensors")
    assert all(torch.isfinite(v).all() for k, v in final.items() if "word_embeddings" not in k)
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_skip_policy(lab, poisoned):
    run = lab.root / "nan-skip"
    res = lft("train", _recipe(lab, poisoned, "nan-skip", "skip"), log=lab.root / "nan-skip.log")
    assert res.code == 0, res.log
    bad = records(run, "nonfinite")
    assert len(bad) == 2  # two epochs, one poisoned batch in each
    state = json.loads((run / "run.json").read_text())["state"]
    assert state["skipped_steps"] == 2
    assert "update skipped (2 skipped so far" in res.log
    final = load_file(run / "model" / "model.safetensors")
    assert all(torch.isfinite(v).all() for k, v in final.items() if "word_embeddings" not in k)
    losses = [r["loss"] for r in records(run, "train")]
    assert sum(not math.isfinite(x) for x in losses) == 2  # the skipped steps' losses are logged as they were

"""Stage chaining: each stage starts from the previous one's weights; a resumed run skips finished stages."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lftrain import api
from lftrain.config import load_recipe
from lftrain.errors import RecipeError
from lftrain.orchestrator.stages import expand
from tests.conftest import run_lft, write_recipe
from tests.semi.conftest import fast_recipe


def _two_stages(tiny_bert, labelled, out) -> dict:
    recipe = fast_recipe(tiny_bert, labelled, out, epochs=1)
    # stage 2: one step at a vanishing learning rate, so its weights must equal stage 1's if it started there
    recipe["stages"] = [{"name": "first", "train": {"epochs": 2}},
                        {"name": "second", "train": {"max_steps": 1, "lr": 1e-12, "weight_decay": 0.0}}]
    return recipe


def test_stages_chain_weights_and_resume_skips_finished(tiny_bert, semi_files, tmp_path):
    labelled, _ = semi_files
    out = tmp_path / "run"
    result = api.train(_two_stages(tiny_bert, labelled, out))

    first, second = out / "stages" / "01-first", out / "stages" / "02-second"
    assert load_recipe(second / "recipe.yaml").model.path == str(first / "model")
    w1, w2 = load_file(first / "model" / "model.safetensors"), load_file(second / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-6, rtol=0)  # the second stage began from the first
    # the run's model/ is the last stage's, and the run answers like any run
    assert load_file(out / "model" / "model.safetensors").keys() == w2.keys()
    index = json.loads((out / "stages.json").read_text())
    assert [e["name"] for e in index] == ["first", "second"] and all(e["status"] == "finished" for e in index)
    assert "accuracy" in result.metrics["test"]
    rows = api.predict(out, input=str(labelled))
    assert len(rows) == 40 and rows[0]["label"] in ("neg", "pos")

    # interrupted during stage 2: its directory gone, the run not finished -> stage 1 is skipped, 2 runs again
    import shutil

    shutil.rmtree(second)
    status = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**status, "status": "running"}))
    mtime = (first / "model" / "model.safetensors").stat().st_mtime_ns
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", _two_stages(tiny_bert, labelled, out))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished earlier, skipped" in proc.stderr and "stages:" in proc.stdout
    index = json.loads((out / "stages.json").read_text())
    assert index[0].get("skipped") and not index[1].get("skipped")
    assert (first / "model" / "model.safetensors").stat().st_mtime_ns == mtime
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_bad_stage_key_fails_before_anything_is_written(tiny_bert, semi_files, tmp_path):
    labelled, _ = semi_files
    recipe = fast_recipe(tiny_bert, labelled, tmp_path / "run")
    recipe["stages"] = [{"name": "a"}, {"name": "b", "train": {"epochz": 1}}]
    with pytest.raises(RecipeError, match="stage 'b'.*epochz"):
        api.train(recipe)
    assert not (tmp_path / "run").exists()


def test_self_training_expands_into_teacher_and_rounds(tiny_bert, semi_files, tmp_path):
    labelled, pool = semi_files
    recipe = fast_recipe(tiny_bert, labelled, tmp_path / "run")
    recipe["data"]["unlabeled"] = str(pool)
    recipe["stages"] = [{"name": "dapt", "method": {"type": "mlm"}},
                        {"name": "st", "method": {"type": "self-training", "rounds": 2, "student_dropout": 0.2}}]
    stages = expand(load_recipe(data=recipe))
    names = [s.name for s in stages]
    assert names == ["dapt", "st-teacher", "st-round1", "st-round2"]
    dapt_model = str(stages[0].dir / "model")
    assert stages[1].recipe.method.type == "supervised" and stages[1].recipe.model.path == dapt_model
    assert stages[2].recipe.method.teacher == str(stages[1].dir)
    assert stages[3].recipe.method.teacher == str(stages[2].dir)
    assert stages[3].recipe.model.path == dapt_model  # a fresh student from the adapted encoder
    assert stages[3].recipe.model.dropout == 0.2

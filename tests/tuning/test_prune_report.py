"""Pruning really stops a trial's training early, and the report of such a study is complete and usable."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

from lftrain import api
from lftrain.config import load_recipe
from tests.tuning.conftest import tune_recipe


@pytest.fixture(scope="module")
def pruned_study(tiny_bert_nodrop, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prune")
    recipe = tune_recipe(tmp, tiny_bert_nodrop, rows=200, startup_trials=2, pruner="median")
    recipe["train"]["epochs"] = 2
    study_dir = tmp / "runs" / "toy-tune"
    study_dir.mkdir(parents=True)
    # Fix the values: two learning rates that learn, then one so small nothing moves, which must be pruned.
    study = optuna.create_study(storage=f"sqlite:///{study_dir / 'study.db'}", study_name="toy", direction="maximize")
    for lr in (1e-2, 5e-3, 1e-7):
        study.enqueue_trial({"train.lr": lr})
    return api.tune(recipe), study_dir


def test_pruning_stops_the_weak_trial(pruned_study):
    rep, study_dir = pruned_study
    states = {r["trial"]: r["state"] for r in rep.trials}
    assert states == {0: "complete", 1: "complete", 2: "pruned"}
    run = study_dir / "trials" / "trial-0002"
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished"  # an ordinary, finished run directory ...
    assert status["state"]["stopped_early"] is True
    assert status["step"] < status["total_steps"]  # ... that stopped training early
    trial = json.loads((run / "trial.json").read_text())
    assert trial["state"] == "pruned" and trial["pruned_at_step"] == status["step"]
    evals = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"split": "eval"' in line and '"final"' not in line]
    assert max(evals) == status["step"]  # no evaluation (and no training) after the pruning decision
    full = json.loads((study_dir / "trials" / "trial-0000" / "run.json").read_text())
    assert full["step"] == full["total_steps"]
    assert rep.compute["steps_run"] < rep.compute["steps_without_pruning"]
    assert 0 < rep.compute["saved_fraction"] < 1


def test_report_best_recipe_and_pictures(pruned_study):
    rep, study_dir = pruned_study
    again = api.tune_report(study_dir)  # `lft tune --report STUDY` calls this
    assert again.best_trial == rep.best_trial in (0, 1)
    best = load_recipe(study_dir / "best.yaml")  # a valid, ready-to-run recipe
    assert best.tune is None
    assert best.train.lr == pytest.approx(rep.best_params["train.lr"])
    assert best.output.dir.endswith("toy-best")
    assert "tune" not in yaml.safe_load((study_dir / "best.yaml").read_text())
    for kind in ("history", "importances", "parallel_coordinates", "intermediate"):
        png = study_dir / "report" / f"{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", kind
    html = (study_dir / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    csv_lines = (study_dir / "report" / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and "train.lr" in csv_lines[0]


def test_resumed_study_with_budget_met_trains_nothing(pruned_study, monkeypatch):
    rep, study_dir = pruned_study
    recipe = load_recipe(study_dir / "recipe.yaml")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished study must not train again")

    monkeypatch.setattr(api, "train", no_training)
    again = api.tune(recipe)
    assert again.counts["complete"] + again.counts["pruned"] == 3


def test_cli_report(pruned_study, capsys):
    from lftrain.cli import main

    rep, study_dir = pruned_study
    assert main(["tune", "--report", str(study_dir)]) == 0
    out = capsys.readouterr().out
    assert f"best trial {rep.best_trial}" in out and "best.yaml" in out and "saved)" in out
    assert main(["tune", "--report", str(study_dir / "trials")]) == 2  # not a study directory: input error

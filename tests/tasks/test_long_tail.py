"""Long-tailed classes: `task.imbalance` turns on the logit-adjusted loss and macro-F1 checkpoint selection when
the classes are imbalanced, and only then; the loss is the hand-computed one; a real run reports per-class support."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lftrain.config import load_recipe
from lftrain.data.examples import Examples
from lftrain.tasks import build_task
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe


def _task(imbalance: str, counts: dict[str, int]):
    task = build_task(load_recipe(data={"model": {"path": "m"}, "data": {"train": "x"},
                                        "task": {"type": "text-classification", "imbalance": imbalance}}).task)
    labels = [name for name, n in counts.items() for _ in range(n)]
    train = Examples("train", {"text": [f"t{i}" for i in range(len(labels))], "label": labels},
                     [("x", i, i) for i in range(len(labels))])
    task.fit_labels(train)
    return task


@pytest.mark.parametrize("imbalance,counts,adjusted", [
    ("auto", {"a": 50, "b": 5, "c": 3}, True),      # 50/3 >= 10: a long tail
    ("auto", {"a": 50, "b": 40, "c": 30}, False),   # balanced enough: today's loss
    ("logit-adjust", {"a": 5, "b": 5}, True),       # asked for
    ("off", {"a": 500, "b": 1}, False),
])
def test_auto_adjusts_only_imbalanced_classes(imbalance, counts, adjusted):
    task = _task(imbalance, counts)
    assert (task.log_prior is not None) == adjusted
    assert task.selection_metric("accuracy", explicit=False) == ("macro_f1" if adjusted else "accuracy")
    assert task.selection_metric("accuracy", explicit=True) == "accuracy"  # a recipe's own choice stands


def test_the_adjusted_loss_is_cross_entropy_of_logits_plus_the_log_prior():
    task = _task("auto", {"a": 60, "b": 3, "c": 1})
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([1, 2])
    names = task.labels.names
    prior = np.array([{"a": 60, "b": 3, "c": 1}[n] for n in names], dtype=np.float64) / 64
    expected = F.cross_entropy(logits + torch.tensor(np.log(prior), dtype=torch.float32), labels, reduction="sum")
    got = task.loss_sum(type("Out", (), {"logits": logits})(), {"labels": labels})
    assert torch.allclose(got, expected) and not torch.allclose(got, F.cross_entropy(logits, labels, reduction="sum"))


def test_an_imbalanced_run_selects_by_macro_f1_and_reports_support(tiny_bert, tmp_path):
    rows = toy_rows(300)
    rows = [r for i, r in enumerate(rows) if r["label"] == "pos" or i % 20 == 1]  # ~150 pos, ~8 neg
    recipe = tiny_recipe(tiny_bert, write_csv(tmp_path / "train.csv", rows), tmp_path / "run", epochs=3)
    recipe["data"]["test_fraction"] = 0.3
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logit-adjusted loss, checkpoints by macro-F1" in proc.stderr
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    test = [r for r in lines if r.get("split") == "test" and r.get("final")][-1]
    assert sum(c["support"] for c in test["per_class"].values()) == test["n"]
    assert "<h2>Per class</h2>" in (tmp_path / "run" / "report.html").read_text()


def test_rare_classes_are_repeated_by_the_square_root_of_their_shortfall():
    counts = {"a": 90, "b": 9, "c": 1}  # shares .9, .09, .01 of 100 rows; 1/K = 1/3
    task = _task("auto", counts)
    labels = [name for name, n in counts.items() for _ in range(n)]
    train = Examples("train", {"text": [f"t{i}" for i in range(100)], "label": labels},
                     [("x", i, i) for i in range(100)])
    stats: dict = {}
    out = task.balance(train, seed=0, stats=stats)
    got = {n: out.fields["label"].count(n) for n in counts}
    # a: not repeated; b: sqrt((1/3)/.09) = 1.92 copies each (9 rows -> 9 to 18); c: sqrt(33.3) = 5.77 -> 5 or 6
    assert got["a"] == 90 and 9 <= got["b"] <= 18 and got["c"] in (5, 6)
    assert stats["rare_class_repeats"]["taken"] == len(out)
    names = task.labels.names
    assert np.allclose(np.exp(task.log_prior), [got[n] / len(out) for n in names])  # the loss's prior: what it sees
    assert _task("off", counts).balance(train, seed=0, stats={}) is train

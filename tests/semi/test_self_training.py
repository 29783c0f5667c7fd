"""Self-training: pseudo-label selection on constructed probabilities, and the rounds end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lftrain import api
from lftrain.errors import RecipeError
from lftrain.methods.self_training import select, selection_stats
from tests.semi.conftest import fast_recipe

# 8 rows, 2 classes: class 0 often confident, class 1 rarely
PROBS = np.array([[0.99, 0.01], [0.95, 0.05], [0.92, 0.08], [0.60, 0.40],
                  [0.10, 0.90], [0.30, 0.70], [0.45, 0.55], [0.97, 0.03]])


def test_fixed_threshold_keeps_confident_rows_with_their_argmax():
    idx, labels = select(PROBS, threshold=0.9)
    assert idx.tolist() == [0, 1, 2, 4, 7]
    assert labels.tolist() == [0, 0, 0, 1, 0]


def test_adaptive_threshold_lowers_the_bar_of_a_poorly_learnt_class():
    # sigma = [4 confident class-0, 1 class-1] -> beta = [1, 0.25] -> tau = [0.9, 0.25/1.75*0.9 = 0.1286]
    idx, labels = select(PROBS, threshold=0.9, selection="adaptive")
    assert idx.tolist() == [0, 1, 2, 4, 5, 6, 7]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 0]


def test_balance_caps_each_class_at_the_rarest_keeping_the_most_confident():
    idx, labels = select(PROBS, threshold=0.9, balance=True)
    assert idx.tolist() == [0, 4] and labels.tolist() == [0, 1]  # 1 per class: the 0.99 and the 0.90
    idx, _ = select(PROBS, threshold=0.5, max_per_class=2)
    assert idx.tolist() == [0, 4, 5, 7]  # class 0: the 0.99 and 0.97; class 1: the 0.90 and 0.70


def test_quantile_keeps_each_classs_most_confident_share():
    # class 0 predicted for rows 0,1,2,3,7 (conf .99 .95 .92 .60 .97); class 1 for 4,5,6 (.90 .70 .55)
    idx, labels = select(PROBS, threshold=0.99, selection="quantile", fraction=0.4)
    assert idx.tolist() == [0, 4, 7]  # top 40%: 2 of 5 (quantile .6 -> >= .958) and 1 of 3 (>= .82)
    assert labels.tolist() == [0, 1, 0]


def test_nothing_confident_selects_nothing():
    idx, labels = select(np.full((3, 2), 0.5), threshold=0.9, selection="adaptive", balance=True)
    assert len(idx) == 0 and len(labels) == 0


def test_stats_count_per_class_and_score_against_known_truth():
    idx, labels = select(PROBS, threshold=0.9)
    truth = np.array([0, 0, 1, 0, 1, -1, 1, 0])  # row 2 wrong; row 5 unknown
    stats = selection_stats(labels, ["neg", "pos"], 8, truth, PROBS.argmax(1), idx)
    assert stats["per_class"] == {"neg": 4, "pos": 1} and stats["selected"] == 5
    assert stats["pseudo_label_accuracy"] == pytest.approx(4 / 5)
    assert stats["teacher_pool_accuracy"] == pytest.approx(6 / 7)  # row 2 wrong of the 7 known


def test_two_rounds_from_a_supervised_teacher(tiny_bert, semi_files, tmp_path):
    labelled, pool = semi_files
    out = tmp_path / "st"
    recipe = fast_recipe(tiny_bert, labelled, out, epochs=3, lr=1e-2)
    recipe["data"]["unlabeled"] = str(pool)
    recipe["method"] = {"type": "self-training", "threshold": 0.6, "rounds": 2, "balance": True}
    result = api.train(recipe)

    index = json.loads((out / "stages.json").read_text())
    assert [e["name"] for e in index] == ["self-training-teacher", "self-training-round1", "self-training-round2"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    pseudo = [x for x in lines if x["event"] == "pseudo_labels"]
    assert len(pseudo) == 2  # one per round
    for p in pseudo:
        assert p["pool"] == 60 and sum(p["per_class"].values()) == p["selected"]
        assert len(set(p["per_class"].values())) == 1  # balance: equal counts
        assert "pseudo_label_accuracy" in p if p["selected"] else True
    assert pseudo[1]["teacher"].endswith("self-training-round1/model")
    assert "accuracy" in result.metrics["test"]


def test_self_training_without_unlabelled_data_fails_before_anything_runs(tiny_bert, semi_files, tmp_path):
    labelled, _ = semi_files
    recipe = fast_recipe(tiny_bert, labelled, tmp_path / "st", max_steps=1)
    recipe["method"] = {"type": "self-training"}
    with pytest.raises(RecipeError, match="data.unlabeled"):
        api.train(recipe)
    assert not (tmp_path / "st").exists()

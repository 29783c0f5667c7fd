"""The new tasks' scores on hand-computed cases: strict IOB2 entities, SQuAD's EM/F1 and span decoding, multi-label
thresholds, regression correlations."""

from __future__ import annotations

import numpy as np
import pytest

from lftrain.evaluation.multilabel import multilabel_metrics, tune_thresholds
from lftrain.evaluation.regression import regression_metrics
from lftrain.evaluation.spans import entities, entity_scores
from lftrain.evaluation.squad import best_span, exact_match, f1, normalize, squad_scores


@pytest.mark.parametrize(("tags", "expected"), [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["I-PER", "I-PER", "O"], []),  # strict IOB2: no B, no entity
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1)]),  # another type's I- ends it and starts nothing
    (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
    (["O", "O"], []),
])
def test_strict_iob2_entities(tags, expected):
    assert entities(tags) == expected


def test_entity_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]  # PER right, LOC missed, ORG right
    s = entity_scores(true, pred)
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(0.8)
    assert s["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["token_accuracy"] == pytest.approx(5 / 6)
    boundary = entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])  # a shorter span is wrong
    assert boundary["f1"] == 0.0


def test_squad_normalisation_and_scores_by_hand():
    assert normalize("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("the Eiffel Tower.", ["Eiffel Tower"]) == 1.0
    assert f1("Eiffel Tower in Paris", ["the Eiffel Tower"]) == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert exact_match("", []) == 1.0 and f1("Paris", []) == 0.0  # unanswerable: only silence is right
    scores = squad_scores(["Paris", "", "London"], [["Paris", "paris"], [], ["Rome"]])
    assert scores["exact_match"] == pytest.approx(200 / 3) and scores["no_answer_exact_match"] == 100.0
    assert scores["has_answer_n"] == 2 and scores["no_answer_n"] == 1


def test_best_span_respects_order_length_and_context():
    start = np.array([9.0, 1.0, 5.0, 0.0, 4.0])
    end = np.array([9.0, 0.0, 1.0, 6.0, 2.0])
    spans = np.array([[-1, -1], [0, 3], [4, 8], [9, 12], [13, 20]])  # token 0 is [CLS]: not context
    assert best_span(start, end, spans, n_best=5, max_length=30) == (4, 12, 11.0)  # tokens 2..3
    assert best_span(start, end, spans, n_best=5, max_length=1) == (4, 8, 6.0)  # one token at most
    assert best_span(start, end, np.full((5, 2), -1), n_best=5, max_length=30) is None


def test_multilabel_thresholds_and_metrics():
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    probs = np.array([[0.8, 0.2], [0.6, 0.35], [0.3, 0.4], [0.1, 0.1]])
    thresholds = tune_thresholds(probs, truth)
    assert thresholds[0] == pytest.approx(0.5) and 0.2 < thresholds[1] <= 0.35  # label 1 needs a low bar
    logits = np.log(probs / (1 - probs))
    m = multilabel_metrics(logits, truth, ["a", "b"], thresholds)
    assert m["micro_f1"] == 1.0 and m["subset_accuracy"] == 1.0 and m["hamming_loss"] == 0.0
    half = multilabel_metrics(logits, truth, ["a", "b"])  # at 0.5, label b is never predicted
    assert half["per_class"]["b"]["recall"] == 0.0 and half["subset_accuracy"] == 0.5


def test_regression_metrics_by_hand():
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0]))
    assert m["pearson"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)
    assert m["mse"] == pytest.approx(7.5) and m["mae"] == pytest.approx(2.5)
    assert regression_metrics(np.ones(3), np.array([1.0, 2.0, 3.0]))["pearson"] == 0.0  # constant: defined as 0

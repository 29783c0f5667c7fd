"""Evidence metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lftrain.evaluation.bootstrap import bootstrap_ci, classification_metric_fns, paired_bootstrap, verdict
from lftrain.evaluation.calibration import brier, calibration_metrics, ece, fit_temperature, nll, reliability_bins
from lftrain.evaluation.gate import check_gate, parse_condition
from lftrain.evaluation.metrics import classification_metrics, softmax
from lftrain.evaluation.ood import detection_metrics, neg_energy, ood_metrics


def probs_of(conf: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Binary problems: class 0 predicted with confidence c; the label is 0 when `correct`."""
    p = np.array([[c, 1 - c] for c in conf])
    return p, np.array([0 if ok else 1 for ok in correct])


def test_ece_single_bin_overconfident():
    # Four predictions at confidence 0.9, half right: |0.5 - 0.9| = 0.4 in every binning.
    p, y = probs_of([0.9] * 4, [True, True, False, False])
    assert ece(p, y, 10, "width") == pytest.approx(0.4)
    assert ece(p, y, 10, "mass") == pytest.approx(0.4)


def test_ece_equal_width_vs_equal_mass():
    # Confidences 0.55, 0.6, 0.65, 0.95; correct, wrong, correct, correct. Two bins.
    p, y = probs_of([0.55, 0.6, 0.65, 0.95], [True, False, True, True])
    # width: all in (0.5, 1]: accuracy 0.75, mean confidence 0.6875 -> 0.0625
    assert ece(p, y, 2, "width") == pytest.approx(0.0625)
    # mass: {0.55, 0.6}: acc 0.5 conf 0.575 (gap 0.075); {0.65, 0.95}: acc 1, conf 0.8 (gap 0.2) -> 0.1375
    assert ece(p, y, 2, "mass") == pytest.approx(0.1375)
    bins = reliability_bins(p, y, 2, "mass")
    assert [b["count"] for b in bins] == [2, 2] and bins[1]["accuracy"] == 1.0


def test_brier_and_nll_by_hand():
    p = np.array([[0.9, 0.1], [0.9, 0.1]])
    y = np.array([0, 1])
    assert brier(p, y) == pytest.approx((0.02 + 1.62) / 2)
    assert nll(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.1)) / 2)


def test_temperature_scaling_fixes_an_overconfident_model():
    # Every logit margin is 4 (confidence 0.982) but only 75% are right. The NLL-optimal temperature makes
    # sigmoid(4 / T) = 0.75, i.e. T = 4 / ln 3.
    logits = np.array([[4.0, 0.0]] * 400)
    labels = np.array([0] * 300 + [1] * 100)
    fit = fit_temperature(logits, labels)
    assert fit["temperature"] == pytest.approx(4 / math.log(3), rel=1e-3)
    assert fit["nll_after"] < fit["nll_before"]
    before, after = calibration_metrics(logits, labels), calibration_metrics(logits, labels, fit["temperature"])
    assert before["ece"] == pytest.approx(softmax(logits)[0, 0] - 0.75)
    assert after["ece"] == pytest.approx(0.0, abs=1e-3) and after["nll"] < before["nll"]
    assert after["brier"] < before["brier"]


def test_temperature_never_worse_on_calibrated_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])  # calibrated by construction
    fit = fit_temperature(logits, labels)
    assert 0.8 < fit["temperature"] < 1.25 and fit["nll_after"] <= fit["nll_before"]


def test_more_f1_averages():
    logits = np.array([[2.0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2]])
    labels = np.array([0, 1, 1, 1, 2])
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    # per-class F1: a = 2/3 (p 0.5, r 1), b = 0.8 (p 1, r 2/3), c = 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert m["weighted_f1"] == pytest.approx((2 / 3 * 1 + 0.8 * 3 + 1 * 1) / 5)
    assert m["micro_f1"] == pytest.approx(m["accuracy"]) == pytest.approx(0.8)
    fns = classification_metric_fns(logits, labels)  # the bootstrap's fast versions agree with scikit-learn
    every = np.arange(5)
    for name in ("accuracy", "macro_f1", "weighted_f1"):
        assert fns[name](every) == pytest.approx(m[name])
    assert fns["nll"](every) == pytest.approx(m["loss"], rel=1e-6)


def test_bootstrap_interval_and_paired_verdicts():
    correct_a = np.array([1, 0] * 200, dtype=float)  # 50%
    correct_b = np.ones(400)  # 100%
    ci = bootstrap_ci(lambda i: correct_a[i].mean(), 400, samples=500)
    assert ci["value"] == 0.5 and ci["low"] < 0.5 < ci["high"]
    assert 0.04 < ci["high"] - ci["low"] < 0.12  # about 4 standard errors of 0.025
    d = paired_bootstrap(lambda i: correct_a[i].mean(), lambda i: correct_b[i].mean(), 400, samples=300)
    assert d["diff"] == 0.5 and verdict(d) == "better" and verdict(d, higher_is_better=False) == "worse"
    same = paired_bootstrap(lambda i: correct_a[i].mean(), lambda i: correct_a[i].mean(), 400, samples=100)
    assert verdict(same) == "no significant change" and same["diff"] == 0


def test_ood_by_hand():
    m = detection_metrics(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.5, 0.65]))
    assert m["auroc"] == pytest.approx(7 / 8)  # 7 of 8 (in, out) pairs ordered correctly
    assert m["fpr_at_95_tpr"] == pytest.approx(0.5)  # threshold 0.615 (5% quantile) keeps the OOD 0.65
    assert neg_energy(np.array([[0.0, 0.0]]))[0] == pytest.approx(math.log(2))
    confident, flat = np.array([[5.0, 0.0]] * 10), np.array([[0.1, 0.0]] * 10)
    both = ood_metrics(confident, flat)
    assert both["msp"]["auroc"] == 1.0 and both["energy"]["fpr_at_95_tpr"] == 0.0


def test_gate_conditions():
    assert parse_condition("< 0.8") == ("<", 0.8) and parse_condition(">=1e-2") == (">=", 0.01)
    with pytest.raises(ValueError, match="not a condition"):
        parse_condition("below 0.8")
    evidence = {"splits": {"test": {"metrics": {"accuracy": 0.7, "n": 10}, "calibration": {
        "before": {"ece": 0.1}, "after": {"ece": 0.02}}, "intervals": {"accuracy": {"low": 0.6, "high": 0.8}}}},
        "latency": {"latency_p95_ms": 3.0}}
    g = check_gate({"accuracy": "< 0.8", "ece_calibrated": "> 0.05", "accuracy_low": "< 0.5",
                    "latency_p95_ms": "> 10", "perplexity": "> 5"}, evidence)
    assert [c["failed"] for c in g["checks"]] == [True, False, False, False, True] and not g["passed"]

"""Calibration: expected calibration error (equal-width and equal-mass bins), Brier score, NLL, reliability
bins for plots, and temperature scaling fitted on held-out logits (scipy).

ECE follows Guo et al. (2017): the confidence of a prediction is its top-class probability; examples are
binned by confidence, and ECE = sum_b (n_b / n) * |accuracy_b - mean confidence_b|. Equal-width bins split
[0, 1] evenly; equal-mass bins hold (nearly) the same number of examples each, which is less noisy when
confidences bunch up near 1, as they do after fine-tuning.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from lftrain.evaluation.metrics import softmax

Binning = Literal["width", "mass"]


def _bin_ids(conf: np.ndarray, n_bins: int, binning: Binning) -> np.ndarray:
    if binning == "width":
        # Bin b holds (b/n, (b+1)/n]; confidence exactly 0 goes to bin 0.
        return np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    if len(conf) == 0:
        return np.zeros(0, dtype=int)
    # Equal mass: bin edges at the confidence quantiles, so each bin holds ~n/n_bins examples. Equal confidences
    # always share a bin (edges are de-duplicated), so ties cannot be split arbitrarily between bins.
    edges = np.unique(np.quantile(conf, np.linspace(0, 1, n_bins + 1))[1:-1])
    return np.searchsorted(edges, conf, side="left")


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15,
                     binning: Binning = "width") -> list[dict[str, float]]:
    """Per non-empty bin: count, mean confidence, accuracy (the points of a reliability diagram)."""
    conf = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(float)
    ids = _bin_ids(conf, n_bins, binning)
    out = []
    for b in range(n_bins):
        m = ids == b
        if m.any():
            out.append({"bin": b, "count": int(m.sum()), "confidence": float(conf[m].mean()),
                        "accuracy": float(correct[m].mean()),
                        "low": float(b / n_bins) if binning == "width" else float(conf[m].min()),
                        "high": float((b + 1) / n_bins) if binning == "width" else float(conf[m].max())})
    return out


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, binning: Binning = "width") -> float:
    """Expected calibration error of the top-class confidence."""
    n = len(labels)
    if n == 0:
        return float("nan")
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(probs, labels, n_bins, binning)))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over examples of the squared distance to the one-hot label (0 is perfect)."""
    onehot = np.zeros_like(probs, dtype=np.float64)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=-1).mean())


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true label."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                        n_bins: int = 15) -> dict[str, float]:
    probs = softmax(logits.astype(np.float64) / temperature)
    return {"ece": ece(probs, labels, n_bins, "width"), "ece_mass": ece(probs, labels, n_bins, "mass"),
            "brier": brier(probs, labels), "nll": nll(probs, labels)}


def _nll_at(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(z).sum(axis=-1))
    return float((logz - z[np.arange(len(labels)), labels]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on these (held-out) examples.

    One scalar, so predictions (the argmax) never change, only confidences. Searched over log T with a
    bounded scalar minimiser (T in [0.05, 20]): the NLL is smooth and unimodal in log T."""
    from scipy.optimize import minimize_scalar

    logits = logits.astype(np.float64)
    res = minimize_scalar(lambda lt: _nll_at(logits, labels, float(np.exp(lt))), bounds=(np.log(0.05), np.log(20.0)),
                          method="bounded", options={"xatol": 1e-5})
    t = float(np.exp(res.x))
    before = _nll_at(logits, labels, 1.0)
    after = _nll_at(logits, labels, t)
    if after > before:  # never worse than no scaling on the data it was fitted on
        t, after = 1.0, before
    # At a bound the optimum lies outside it: typically eval accuracy of 100% (NLL keeps falling as T -> 0).
    at_bound = bool(abs(np.log(t) - np.log(0.05)) < 1e-3 or abs(np.log(t) - np.log(20.0)) < 1e-3)
    return {"temperature": t, "nll_before": before, "nll_after": after, "n": int(len(labels)), "at_bound": at_bound}

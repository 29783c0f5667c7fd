"""Multi-label metrics: each text may carry any set of labels, predicted by a per-label threshold on sigmoids.

Thresholds are tuned on the eval split, each label's to the value that maximises its F1 there (ties: the one
nearest 0.5), and kept with the model (`model/thresholds.json`), so `lft predict` and the final evaluation decide
as the tuning did. Scores: micro and macro F1, subset accuracy (every label of a row right), Hamming loss, and per
label precision, recall, F1, support, Brier score and expected calibration error of its probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLDS_FILE = "thresholds.json"
_GRID = np.round(np.arange(0.05, 0.96, 0.01), 2)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60, 60)))


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(np.shape(tp), dtype=np.float64), where=denominator > 0)


def tune_thresholds(probs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per label, the grid threshold with the best F1 on (probs, truth); 0.5 for a label absent from both."""
    pred = probs[None, :, :] >= _GRID[:, None, None]  # (thresholds, rows, labels)
    true = truth.astype(bool)[None]
    f1 = _f1((pred & true).sum(1), (pred & ~true).sum(1), (~pred & true).sum(1))  # (thresholds, labels)
    best = np.zeros(probs.shape[1])
    for j in range(probs.shape[1]):
        top = np.flatnonzero(f1[:, j] >= f1[:, j].max() - 1e-12)
        best[j] = _GRID[top[np.argmin(np.abs(_GRID[top] - 0.5))]] if f1[:, j].max() > 0 else 0.5
    return best


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = edges == b
        if inside.any():
            total += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return float(total)


def multilabel_metrics(logits: np.ndarray, truth: np.ndarray, names: list[str],
                       thresholds: np.ndarray | None = None) -> dict[str, Any]:
    """Scores of multi-hot `truth` (rows x labels) against sigmoid(logits) >= thresholds (default 0.5)."""
    probs = sigmoid(logits)
    thresholds = np.full(len(names), 0.5) if thresholds is None else np.asarray(thresholds)
    pred, true = probs >= thresholds, truth.astype(bool)
    tp, fp, fn = (pred & true).sum(0), (pred & ~true).sum(0), (~pred & true).sum(0)
    per_label_f1 = _f1(tp, fp, fn)
    precision = np.divide(tp, tp + fp, out=np.zeros(len(names)), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(len(names)), where=(tp + fn) > 0)
    bce = -(true * np.log(np.clip(probs, 1e-12, None)) + ~true * np.log(np.clip(1 - probs, 1e-12, None)))
    return {
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1": float(per_label_f1.mean()),
        "subset_accuracy": float((pred == true).all(1).mean()),
        "hamming_loss": float((pred != true).mean()),
        "loss": float(bce.sum(1).mean()),
        "n": int(len(truth)),
        "per_class": {n: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(per_label_f1[j]),
                          "support": int(true[:, j].sum()), "threshold": float(thresholds[j]),
                          "brier": float(((probs[:, j] - true[:, j]) ** 2).mean()),
                          "ece": _ece(probs[:, j], true[:, j].astype(float))}
                      for j, n in enumerate(names)},
    }

"""Bootstrap confidence intervals (percentile method) for a metric, and the paired bootstrap of a difference.

Resampling is over test examples, with a fixed seed so a report is reproducible. The same resampled
indices are used for both runs in the paired version: the interval is then for the difference on this
test set, which is much tighter than comparing two separate intervals.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MetricFn = Callable[[np.ndarray], float]  # indices into the test set -> metric value on those examples


def bootstrap_ci(metric: MetricFn, n: int, *, samples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict[str, float]:
    """{"value", "low", "high"}: the metric on all n examples and its percentile bootstrap interval."""
    rng = np.random.default_rng(seed)
    values = np.array([metric(rng.integers(0, n, n)) for _ in range(samples)])
    alpha = (1 - level) / 2
    return {"value": float(metric(np.arange(n))), "low": float(np.nanquantile(values, alpha)),
            "high": float(np.nanquantile(values, 1 - alpha))}


def paired_bootstrap(metric_a: MetricFn, metric_b: MetricFn, n: int, *, samples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Difference b - a on the same examples: {"a", "b", "diff", "low", "high", "p_value"}.

    p_value is two-sided: twice the smaller share of resampled differences on either side of 0 (capped at 1)."""
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    for s in range(samples):
        idx = rng.integers(0, n, n)
        diffs[s] = metric_b(idx) - metric_a(idx)
    alpha = (1 - level) / 2
    every = np.arange(n)
    a, b = float(metric_a(every)), float(metric_b(every))
    p = 2 * min(float((diffs <= 0).mean()), float((diffs >= 0).mean()))
    return {"a": a, "b": b, "diff": b - a, "low": float(np.nanquantile(diffs, alpha)),
            "high": float(np.nanquantile(diffs, 1 - alpha)), "p_value": min(1.0, p)}


def verdict(diff: dict[str, float], higher_is_better: bool = True) -> str:
    """better / worse / no significant change, from where the interval of b - a lies relative to 0."""
    if diff["low"] > 0:
        return "better" if higher_is_better else "worse"
    if diff["high"] < 0:
        return "worse" if higher_is_better else "better"
    return "no significant change"


def _f1s(pred: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 and support from a confusion matrix built with bincount (fast enough to resample 1000x)."""
    cm = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    denom = support + predicted
    return np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0), support


def classification_metric_fns(logits: np.ndarray, labels: np.ndarray,
                              n_bins: int = 15) -> dict[str, MetricFn]:
    """Headline metrics as functions of resampled indices (their directions: `Task.higher_is_better`).

    Same definitions as metrics.classification_metrics (scikit-learn) and calibration.py, re-expressed on
    precomputed per-example arrays so a 1000-sample bootstrap takes about a second."""
    from lftrain.evaluation.calibration import ece
    from lftrain.evaluation.metrics import softmax

    k = logits.shape[-1]
    probs = softmax(logits.astype(np.float64))
    pred = probs.argmax(axis=-1)
    correct = (pred == labels).astype(float)
    rows = np.arange(len(labels))
    nll = -np.log(np.clip(probs[rows, labels], 1e-12, None))
    onehot = np.zeros_like(probs)
    onehot[rows, labels] = 1.0
    brier = ((probs - onehot) ** 2).sum(axis=-1)

    def macro_f1(idx: np.ndarray) -> float:
        f1, support = _f1s(pred[idx], labels[idx], k)
        return float(f1.mean())

    def weighted_f1(idx: np.ndarray) -> float:
        f1, support = _f1s(pred[idx], labels[idx], k)
        return float((f1 * support).sum() / max(support.sum(), 1))

    return {
        "accuracy": lambda idx: float(correct[idx].mean()),
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        "nll": lambda idx: float(nll[idx].mean()),
        "brier": lambda idx: float(brier[idx].mean()),
        "ece": lambda idx: ece(probs[idx], labels[idx], n_bins, "width"),
    }


def per_class_f1_fns(logits: np.ndarray, labels: np.ndarray) -> list[MetricFn]:
    """One resampling function per class: that class's F1."""
    k = logits.shape[-1]
    pred = logits.argmax(axis=-1)
    return [(lambda idx, c=c: float(_f1s(pred[idx], labels[idx], k)[0][c])) for c in range(k)]

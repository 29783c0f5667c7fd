"""Classification metrics, computed with scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Accuracy, macro/micro/weighted F1, per-class precision/recall/F1/support, confusion matrix and mean
    cross-entropy."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    classes = list(range(len(names)))
    pred = logits.argmax(axis=-1)
    probs = softmax(logits.astype(np.float64))
    nll = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=classes, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, labels=classes, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(labels, pred, labels=classes, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, pred, labels=classes, average="weighted", zero_division=0)),
        "loss": nll,
        "n": int(len(labels)),
        "per_class": {n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, n in enumerate(names)},
        "confusion_matrix": confusion_matrix(labels, pred, labels=classes).tolist(),
    }


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics (for log lines and metric selection)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "n"}


def format_table(metrics: dict[str, Any], names: list[str], title: str) -> str:
    """A plain-text report: headline metrics, per-class table, confusion matrix (rows = true label)."""
    lines = [title, "  " + "  ".join(f"{k} {v:.4f}" for k, v in headline(metrics).items()) + f"  (n={metrics['n']})"]
    width = max(10, *(len(n) for n in names))
    lines.append(f"  {'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for n in names:
        c = metrics["per_class"][n]
        lines.append(f"  {n:<{width}} {c['precision']:>9.4f} {c['recall']:>9.4f} {c['f1']:>9.4f} {c['support']:>8d}")
    lines.append("  confusion matrix (rows: true, columns: predicted)")
    lines.append("  " + " " * width + " " + " ".join(f"{n[:8]:>8}" for n in names))
    for n, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"  {n:<{width}} " + " ".join(f"{v:>8d}" for v in row))
    return "\n".join(lines)

"""Out-of-distribution detection scores: maximum softmax probability (Hendrycks & Gimpel, 2017) and the
energy score (Liu et al., 2020), with AUROC and FPR at 95% TPR.

Convention: in-distribution is the positive class and a higher score means "more in-distribution", so
AUROC 1.0 separates perfectly and 0.5 is chance. FPR@95 is the share of OOD examples still accepted when
the threshold keeps 95% of in-distribution examples (lower is better).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from lftrain.evaluation.metrics import softmax


def msp(logits: np.ndarray) -> np.ndarray:
    return softmax(logits.astype(np.float64)).max(axis=-1)


def neg_energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """-E(x) = T * logsumexp(logits / T): higher for in-distribution inputs."""
    return temperature * logsumexp(logits.astype(np.float64) / temperature, axis=-1)


def detection_metrics(in_scores: np.ndarray, out_scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([np.ones(len(in_scores)), np.zeros(len(out_scores))])
    s = np.concatenate([in_scores, out_scores])
    threshold = np.quantile(in_scores, 0.05)  # 95% of in-distribution scores are >= this
    return {"auroc": float(roc_auc_score(y, s)), "fpr_at_95_tpr": float((out_scores >= threshold).mean())}


def ood_metrics(in_logits: np.ndarray, out_logits: np.ndarray) -> dict[str, dict[str, float]]:
    """{"msp": {"auroc", "fpr_at_95_tpr"}, "energy": {...}} for in-distribution vs OOD logits."""
    return {"msp": detection_metrics(msp(in_logits), msp(out_logits)),
            "energy": detection_metrics(neg_energy(in_logits), neg_energy(out_logits))}

"""Regression metrics: Pearson and Spearman correlation (GLUE's STS-B scores), mean squared and absolute error, R²."""

from __future__ import annotations

from typing import Any

import numpy as np


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    pred, target = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(target, dtype=np.float64).ravel()
    constant = np.ptp(pred) == 0 or np.ptp(target) == 0  # correlation undefined: report 0, not NaN
    residual = pred - target
    variance = float(((target - target.mean()) ** 2).sum())
    return {
        "pearson": 0.0 if constant else float(pearsonr(pred, target)[0]),
        "spearman": 0.0 if constant else float(spearmanr(pred, target)[0]),
        "mse": float((residual ** 2).mean()),
        "mae": float(np.abs(residual).mean()),
        "r2": float(1 - (residual ** 2).sum() / variance) if variance > 0 else 0.0,
        "n": int(len(target)),
    }

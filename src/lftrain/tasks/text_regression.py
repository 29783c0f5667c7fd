"""Regression on texts or text pairs (GLUE STS-B's similarity, ratings, scores): one number per row.

The model (`AutoModelForSequenceClassification` with one output, `problem_type: regression`) trains on targets
standardised with the training rows' mean and deviation, which keeps the loss's scale the same whatever the
targets' unit. Before the model is saved, that scaling is folded into its output layer (w·σ, b·σ + μ), so the saved
model — in lftrain or in plain transformers — outputs the target in its own unit.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from lftrain.data.examples import Examples
from lftrain.data.readers import Table
from lftrain.errors import DataError
from lftrain.tasks.base import TASKS, Task
from lftrain.tasks.text_classification import TextClassification, TextConfig


@TASKS.register("text-regression")
class TextRegression(TextClassification):
    """Predict a number per text (or pair). Loss: MSE (or Huber) on standardised targets; one unit per example."""

    private_training = False
    probe_baseline = False
    lower_is_better = frozenset({"loss", "mse", "mae", "rmse", "huber"})

    default_metric = "pearson"
    streams = False

    class Config(TextConfig):
        type: Literal["text-regression"] = "text-regression"
        label: str = "label"
        """Column holding the target value (a number)."""
        loss: Literal["mse", "huber"] = "mse"
        """Mean squared error, or Huber's (quadratic within one standard deviation of the target, linear beyond:
        robust to outlying targets)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.mean, self.std = 0.0, 1.0  # the training targets' (set by fit_labels; a saved model has them folded in)
        self.folded = False  # the model outputs the target's unit itself (after before_save)

    def label_value(self, raw: Any, table: Table, i: int) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"target {raw!r} is not a number", column=self.config.label, **table.where(i)) from None
        if not np.isfinite(value):
            raise DataError(f"target {raw!r} is not a finite number", column=self.config.label, **table.where(i))
        return value

    def fit_labels(self, train: Examples) -> None:
        targets = np.asarray(train.fields["label"], dtype=np.float64)
        self.mean, self.std = float(targets.mean()), float(targets.std()) or 1.0
        return None

    def restore_labels(self, names: list[str]) -> None:
        return None  # no classes
    def label_array(self, ex: Examples) -> np.ndarray | None:
        raw = ex.fields["label"]
        if any(v is None for v in raw):
            return None
        return ((np.asarray(raw, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def head(self) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    # ---- loss, metrics, predictions --------------------------------------------------------------------
    def loss_sum(self, outputs, batch: dict[str, Any]):
        import torch.nn.functional as F

        pred, target = outputs.logits.float().squeeze(-1), batch["labels"].float()
        if self.config.loss == "huber":
            return F.huber_loss(pred, target, reduction="sum", delta=1.0)
        return F.mse_loss(pred, target, reduction="sum")

    def values(self, logits: np.ndarray) -> np.ndarray:
        """Outputs in the target's unit (the model's own once `before_save` has folded the scaling in)."""
        values = logits.reshape(-1).astype(np.float64)
        return values if self.folded else values * self.std + self.mean

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        from lftrain.evaluation.regression import regression_metrics

        return regression_metrics(self.values(logits), labels.astype(np.float64) * self.std + self.mean)

    format_metrics = Task.format_metrics  # no class table

    def predictions(self, logits: np.ndarray, encoded=None, examples=None) -> list[dict[str, Any]]:
        return [{"value": round(float(v), 6)} for v in self.values(logits)]

    def before_save(self, model) -> None:
        """Fold the target scaling into the output layer: the saved model predicts in the target's unit."""
        import torch

        from lftrain.models.layers import head_layer

        layer = head_layer(model)
        with torch.no_grad():
            layer.weight.mul_(self.std)
            layer.bias.mul_(self.std).add_(self.mean)
        self.folded = True

    def final_evaluation(self, out) -> dict[str, dict[str, Any]]:
        from lftrain.evaluation.evidence import metric_final

        return metric_final(self, out, intervals=("pearson", "spearman", "mse"))

"""Multi-label classification of texts or text pairs: each row has a set of labels (possibly empty).

Labels come as a list (JSON, Parquet) or as one string split at `task.separator` (`"sports,politics"`). The model
is `AutoModelForSequenceClassification` with `problem_type: multi_label_classification`: one sigmoid per label,
binary cross-entropy averaged over the labels (as transformers computes it), one loss unit per row. A label is
predicted when its probability reaches its own threshold, tuned on the eval split for the best F1 of that label and
kept in `model/thresholds.json` (evaluation/multilabel.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lftrain.data.examples import Examples
from lftrain.data.labels import LabelTuples, label_key
from lftrain.data.readers import Table, is_missing
from lftrain.errors import DataError
from lftrain.tasks.base import TASKS, Task
from lftrain.tasks.text_classification import TextClassification, TextConfig


class LabelSets(LabelTuples):
    """The label names of a multi-label task; a row's raw label is a tuple of names."""

    def encode(self, ex) -> np.ndarray | None:
        """Multi-hot rows (float32, rows x labels), or None for unlabelled rows."""
        raw = ex.fields["label"]
        if any(label is None for label in raw):
            return None
        out = np.zeros((len(raw), len(self.names)), dtype=np.float32)
        for i, names in enumerate(raw):
            out[i, list(self.index(names, ex, i))] = 1.0
        return out


@TASKS.register("multi-label-classification")
class MultiLabelClassification(TextClassification):
    """Predict a set of labels per text (or pair). Loss: binary cross-entropy per label; one unit per row."""

    private_training = False  # several loss terms per row
    probe_baseline = False
    lower_is_better = TextClassification.lower_is_better | {"hamming_loss"}

    default_metric = "micro_f1"
    streams = False
    empty_label_ok = True
    data_checks = False  # the data checks read one class per row
    label_set_class = LabelSets

    class Config(TextConfig):
        type: Literal["multi-label-classification"] = "multi-label-classification"
        label: str = "labels"
        """Column holding each row's labels: a list, or one string of names split at `separator`."""
        labels: list[str] | None = None
        """Label names in output order. Default: the sorted labels found in the training data."""
        separator: str = ","
        """Where a string of labels is split (`"a,b"`); an empty string is a row with no label."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.thresholds: np.ndarray | None = None  # per label, tuned on the eval split

    def label_value(self, raw: Any, table: Table, i: int) -> tuple:
        if isinstance(raw, str):
            names = [part for part in raw.split(self.config.separator) if part.strip()]
        elif isinstance(raw, (list, tuple, np.ndarray)):
            names = list(raw)
        else:
            raise DataError(f"labels {raw!r:.60} are neither a list nor a '{self.config.separator}'-separated string",
                            column=self.config.label, **table.where(i))
        if any(is_missing(n) for n in names):
            raise DataError("an empty label in the list", column=self.config.label, **table.where(i))
        return tuple(sorted({label_key(n, table, i, self.config.label) for n in names}))

    def fit_labels(self, train: Examples) -> LabelSets:
        self.labels = LabelSets.from_config_or_data(self.config.labels, train.fields["label"])
        return self.labels

    def restore_labels(self, names: list[str]) -> None:
        self.labels = LabelSets(names)

    def head(self) -> dict[str, Any]:
        return {**super().head(), "problem_type": "multi_label_classification"}

    # ---- loss, metrics, predictions --------------------------------------------------------------------
    def loss_sum(self, outputs, batch: dict[str, Any]):
        import torch.nn.functional as F

        bce = F.binary_cross_entropy_with_logits(outputs.logits.float(), batch["labels"].float(), reduction="none")
        return bce.mean(dim=-1).sum()

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        from lftrain.evaluation.multilabel import multilabel_metrics

        return multilabel_metrics(logits, labels, self.labels.names, self.thresholds)

    def format_metrics(self, metrics: dict[str, Any], title: str) -> str:
        lines = [Task.format_metrics(self, metrics, title)]
        lines.append(f"  {'label':<16} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8} {'threshold':>9}")
        for name, c in metrics["per_class"].items():
            lines.append(f"  {name[:16]:<16} {c['precision']:>9.4f} {c['recall']:>9.4f} {c['f1']:>9.4f} "
                         f"{c['support']:>8d} {c['threshold']:>9.2f}")
        return "\n".join(lines)

    def predictions(self, logits: np.ndarray, encoded=None, examples=None) -> list[dict[str, Any]]:
        from lftrain.evaluation.multilabel import sigmoid

        probs = sigmoid(logits)
        cut = self.thresholds if self.thresholds is not None else np.full(len(self.labels.names), 0.5)
        return [{"labels": [n for n, p, t in zip(self.labels.names, row, cut) if p >= t],
                 "probs": {n: round(float(p), 6) for n, p in zip(self.labels.names, row)}} for row in probs]

    def final_evaluation(self, out) -> dict[str, dict[str, Any]]:
        """Thresholds tuned on the eval split (and saved with the model), then the metrics of every split."""
        from lftrain.evaluation.evidence import metric_final
        from lftrain.evaluation.multilabel import THRESHOLDS_FILE, sigmoid, tune_thresholds

        if "eval" in out.encoded:
            self.thresholds = tune_thresholds(sigmoid(out.infer(out.encoded["eval"])), out.encoded["eval"]["labels"])
            (Path(out.run_dir) / "model" / THRESHOLDS_FILE).write_text(json.dumps(
                {"thresholds": dict(zip(self.labels.names, self.thresholds.tolist())), "tuned_on": "eval"}, indent=1))
        return metric_final(self, out, intervals=("micro_f1", "macro_f1", "subset_accuracy"))

    def after_load(self, model_dir) -> None:
        from lftrain.evaluation.multilabel import THRESHOLDS_FILE

        path = Path(model_dir) / THRESHOLDS_FILE
        if path.is_file():
            saved = json.loads(path.read_text())["thresholds"]
            self.thresholds = np.asarray([saved[n] for n in self.labels.names])

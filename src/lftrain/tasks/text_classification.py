"""Text classification of single texts or text pairs, with any `AutoModelForSequenceClassification`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.batching import padded_width
from lftrain.data.examples import Examples, clean_text
from lftrain.data.readers import Table, is_missing
from lftrain.errors import DataError
from lftrain.tasks.base import TASKS, ClassificationTask
from lftrain.tasks.labels import label_key


@TASKS.register("text-classification")
class TextClassification(ClassificationTask):
    """Predict one label per text (or text pair). Loss: cross-entropy; one loss unit per example."""

    streams = True

    class Config(Section):
        type: Literal["text-classification"] = "text-classification"
        text: str = "text"
        """Column holding the text."""
        text_pair: str | None = None
        """Column holding the second text of a pair (for pair tasks such as NLI or paraphrase)."""
        label: str = "label"
        """Column holding the label (a name such as `positive`, or an integer)."""
        labels: list[str] | None = None
        """Label names in class-index order. Default: the sorted labels found in the training data.
        Integer labels in the data are read as indices into this list when they are not names themselves."""
        max_length: int = Field(128, gt=0)
        """Tokens per example; longer texts are truncated."""
        pad_to_multiple_of: int = Field(8, gt=0)
        """Pad each batch to a multiple of this many tokens (never past `max_length`); 1 pads to the batch's
        longest row exactly. CPU matmul libraries compile and keep a kernel per shape: with 8, a MiniLM epoch
        meets ~1/8 of the shapes, and peak memory fell by 300-370 MB (the same speed in full fine-tuning, 7% slower
        in a LoRA run; docs/performance.md)."""
        label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
        """Label smoothing of the cross-entropy loss (0 = none)."""
        pooling: Literal["model", "mean"] = "model"
        """What the classification head reads. `model`: the architecture's own head (BERT: the [CLS] vector
        through its pooler layer). `mean`: the mean of the last layer's token vectors, the sentence embedding a
        sentence-transformers encoder was trained to produce; better with few labels (docs/semi-supervised.md).
        The saved model then loads with `AutoModelForSequenceClassification` after `import lftrain.models.pooled`."""

    # ---- data -------------------------------------------------------------------------------------------
    def text_columns(self) -> list[str]:
        return [self.config.text] + ([self.config.text_pair] if self.config.text_pair else [])

    def extract(self, table: Table, *, normalize: bool, with_labels: bool = True,
                drop_label: Callable[[str], bool] | None = None) -> Examples:
        """Validate every row of `table`; raise DataError naming file, row/line and column on the first bad one.

        Rows whose label `drop_label` rejects are skipped before their text is checked: a row the recipe
        excludes (`data.unknown_labels: drop`) cannot fail the run."""
        needed = self.text_columns() + ([self.config.label] if with_labels else [])
        missing = [c for c in needed if c not in table.columns]
        if missing:
            field = "task.label" if missing[0] == self.config.label else "task.text/text_pair"
            raise DataError(f"no column '{missing[0]}' (columns: {', '.join(table.columns)}); set {field}",
                            file=table.file, line=1 if table.lines and table.lines[0] else None)
        fields: dict[str, list[Any]] = {"text": [], "label": []}
        if self.config.text_pair:
            fields["text_pair"] = []
        kept, dropped = [], Counter()
        for i, row in enumerate(table.rows):
            label = row.get(self.config.label) if with_labels else None
            if with_labels and is_missing(label):
                raise DataError("missing label", column=self.config.label, **table.where(i))
            key = None if label is None else label_key(label, table, i, self.config.label)
            if key is not None and drop_label is not None and drop_label(key):
                dropped[key] += 1
                continue
            for col, name in zip(self.text_columns(), ("text", "text_pair")):
                value = row.get(col)
                if is_missing(value):
                    raise DataError("empty text", column=col, **table.where(i))
                if not isinstance(value, str):  # a number/list/object where text belongs: a mixed-type column
                    raise DataError(f"expected text, found {type(value).__name__} {value!r:.40}", column=col,
                                    **table.where(i))
                fields[name].append(clean_text(value, normalize))
            fields["label"].append(key)
            kept.append(i)
        return Examples(table.file, fields, [(table.file, table.row_numbers[i], table.lines[i]) for i in kept],
                        dict(dropped))

    def dedupe_key(self, ex: Examples, i: int) -> tuple:
        return tuple(ex.fields[k][i] for k in ("text", "text_pair") if k in ex.fields)

    # ---- model ----------------------------------------------------------------------------------------
    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        from transformers import AutoModel, AutoModelForSequenceClassification

        import lftrain.models.pooled as pooled  # registers the mean-pooled classifier with the Auto classes
        from lftrain.models.loading import load_classifier

        assert self.labels is not None
        if self.config.pooling == "mean" and source.config.get("model_type") != pooled.MODEL_TYPE:
            encoder = load_classifier(AutoModel, source, self.labels, "an encoder", trust_remote_code,
                                      attn_implementation=attention)
            return pooled.wrap_encoder(encoder, num_labels=len(self.labels), id2label=self.labels.id2label(),
                                       label2id=self.labels.label2id())
        # A model saved with mean pooling keeps it whatever `pooling` says: its head was trained on that input.
        return load_classifier(AutoModelForSequenceClassification, source, self.labels, "a sequence classifier",
                               trust_remote_code, attn_implementation=attention)

    def encode(self, tokenizer, ex: Examples) -> dict[str, np.ndarray]:
        """Tokenise into flat arrays (ids, offsets, type ids, labels): compact, and cacheable without pickle."""
        pair = ex.fields.get("text_pair")
        enc = tokenizer(ex.fields["text"], pair, truncation=True, max_length=self.config.max_length,
                        return_token_type_ids=True)
        ids = enc["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out = {
            "input_ids": np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lengths.sum())),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "token_type_ids": np.fromiter((t for x in enc["token_type_ids"] for t in x), dtype=np.int8,
                                          count=int(lengths.sum())),
        }
        labels = self.labels.encode(ex) if self.labels is not None else None
        if labels is not None:
            out["labels"] = labels
        return out

    @staticmethod
    def lengths(encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.diff(encoded["offsets"])

    def collate(self, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        """Pad to the longest example of this batch (dynamic padding), rounded up to `pad_to_multiple_of`."""
        import torch

        starts, ends = encoded["offsets"][indices], encoded["offsets"][indices + 1]
        width = padded_width(int((ends - starts).max()), self.config.pad_to_multiple_of, self.config.max_length)
        ids = np.full((len(indices), width), pad_id, dtype=np.int64)
        types = np.zeros((len(indices), width), dtype=np.int64)
        mask = np.zeros((len(indices), width), dtype=np.int64)
        for r, (s, e) in enumerate(zip(starts, ends)):
            ids[r, : e - s] = encoded["input_ids"][s:e]
            types[r, : e - s] = encoded["token_type_ids"][s:e]
            mask[r, : e - s] = 1
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                 "token_type_ids": torch.from_numpy(types)}
        if "labels" in encoded:
            batch["labels"] = torch.from_numpy(encoded["labels"][indices])
        return batch

    # ---- model inputs (loss, metrics and predictions: ClassificationTask) -----------------------------
    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

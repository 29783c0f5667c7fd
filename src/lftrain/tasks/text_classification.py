"""Text classification of single texts or text pairs, with any `AutoModelForSequenceClassification`."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.batching import pad_token_rows
from lftrain.data.examples import Examples, clean_text
from lftrain.data.labels import label_key
from lftrain.data.readers import Table, is_missing
from lftrain.errors import DataError
from lftrain.models.families import takes_token_types, text_inputs, token_types
from lftrain.tasks.base import TASKS, ClassificationTask
from lftrain.tasks.inputs import TextInput

log = logging.getLogger("lftrain")


class TextConfig(Section):
    """What every task on texts (or text pairs) reads: the columns, the length, the padding, the pooling."""

    text: str = "text"
    """Column holding the text."""
    text_pair: str | None = None
    """Column holding the second text of a pair (for pair tasks such as NLI, paraphrase or similarity)."""
    max_length: int = Field(128, gt=0)
    """Tokens per example; longer texts are truncated."""
    pad_to_multiple_of: int = Field(8, gt=0)
    """Pad each batch to a multiple of this many tokens (never past `max_length`); 1 pads to the batch's longest row
    exactly. CPU matmul libraries compile and keep a kernel per shape: with 8, an epoch meets ~1/8 of the shapes,
    and peak memory falls (docs/performance.md)."""
    pooling: Literal["model", "mean"] = "model"
    """What the head reads. `model`: the architecture's own head (BERT: the [CLS] vector through its pooler
    layer). `mean`: the mean of the last layer's token vectors, the sentence embedding a sentence-transformers
    encoder was trained to produce; better with few labels (docs/semi-supervised.md). The saved model then loads
    with `AutoModelForSequenceClassification` after `import lftrain.models.pooled`."""


@TASKS.register("text-classification", default=True)
class TextClassification(ClassificationTask):
    """Predict one label per text (or text pair). Loss: cross-entropy; one loss unit per example."""

    serve_input, serve_bare_strings = TextInput, True
    pipeline_tag = "text-classification"
    auto_model = "AutoModelForSequenceClassification"
    private_training = True
    ui_form = True
    probe_baseline = True

    streams = True
    empty_label_ok = False  # multi-label rows may have no label at all
    IMBALANCE_RATIO = 10.0  # `imbalance: auto` adjusts from this ratio of the largest to the smallest class

    def __init__(self, config) -> None:
        super().__init__(config)
        self.log_prior = None  # per class, when the loss is logit-adjusted (fit_labels decides)

    class Config(TextConfig):
        type: Literal["text-classification"] = "text-classification"
        label: str = "label"
        """Column holding the label (a name such as `positive`, or an integer)."""
        labels: list[str] | None = None
        """Label names in class-index order. Default: the sorted labels found in the training data.
        Integer labels in the data are read as indices into this list when they are not names themselves."""
        label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
        """Label smoothing of the cross-entropy loss (0 = none)."""
        imbalance: Literal["auto", "logit-adjust", "off"] = "auto"
        """Long-tailed classes. `logit-adjust`: the training rows of classes with less than an equal share are
        repeated (repeat-factor sampling: sqrt of the shortfall), and the loss is logit-adjusted cross-entropy
        (Menon et al., 2021): each class's log prior is added to its logit inside the loss, so rare classes are
        learnt with larger margins, while predictions read the plain logits; the best checkpoint is then chosen by
        macro-F1 unless `train.metric` is set. `auto`: so when the largest class has at least 10x the rows of the
        smallest. `off`: plain cross-entropy."""

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
            if with_labels and is_missing(label) and not (self.empty_label_ok and label is not None):
                raise DataError("missing label", column=self.config.label, **table.where(i))
            key = None if label is None else self.label_value(label, table, i)
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

    def label_value(self, raw: Any, table: Table, i: int):
        """The canonical form of one row's raw label (a class name: 1, 1.0 and "1" are the same label)."""
        return label_key(raw, table, i, self.config.label)

    def dedupe_key(self, ex: Examples, i: int) -> tuple:
        return tuple(ex.fields[k][i] for k in ("text", "text_pair") if k in ex.fields)

    def _counts(self, train: Examples) -> np.ndarray:
        ids = [self.labels.lookup(v) for v in train.fields["label"]]
        return np.bincount([i for i in ids if i is not None], minlength=len(self.labels.names)).astype(np.float64)

    def fit_labels(self, train: Examples):
        labels = super().fit_labels(train)
        counts = self._counts(train)
        ratio = counts.max() / max(counts.min(), 1.0)
        mode = self.config.imbalance
        if mode == "logit-adjust" or (mode == "auto" and ratio >= self.IMBALANCE_RATIO):
            self.log_prior = np.log(np.maximum(counts, 1.0) / counts.sum())
            log.info("imbalanced classes (largest/smallest %.0fx): rare classes repeated, logit-adjusted loss, "
                     "checkpoints by macro-F1 (task.imbalance: %s)", ratio, mode)
        return labels

    def balance(self, train: Examples, seed: int, stats: dict) -> Examples:
        """Repeat-factor sampling (Gupta et al., 2019, LVIS): a class with a share f of the training rows below
        1/K (K classes) has each row taken sqrt(1/(K f)) times (the fraction by a seeded draw), so rare classes
        get updates at all in a few epochs; the loss's prior is then the repeated rows' own."""
        if self.log_prior is None:
            return train
        counts = self._counts(train)
        share = counts / counts.sum()
        repeat = np.sqrt(np.maximum(1.0, (1.0 / len(counts)) / np.maximum(share, 1e-12)))
        rng = np.random.default_rng(seed)
        factor = [repeat[self.labels.lookup(v)] for v in train.fields["label"]]
        copies = [int(f) + int(rng.random() < f % 1) for f in factor]
        rows = [i for i, c in enumerate(copies) for _ in range(c)]
        balanced = train.subset(rows, train.name)
        self.log_prior = np.log(np.maximum(self._counts(balanced), 1.0) / len(rows))
        stats["rare_class_repeats"] = {"rows": len(train), "taken": len(rows),
                                       "max_repeat": round(float(repeat.max()), 2)}
        log.info("rare classes repeated: %d training rows become %d (up to %.1fx)", len(train), len(rows), repeat.max())
        return balanced

    def loss_sum(self, outputs, batch: dict[str, Any]):
        if self.log_prior is None:
            return super().loss_sum(outputs, batch)
        import torch
        import torch.nn.functional as F

        logits = outputs.logits.float()
        adjusted = logits + torch.as_tensor(self.log_prior, dtype=logits.dtype, device=logits.device)
        return F.cross_entropy(adjusted, batch["labels"], reduction="sum", label_smoothing=self.config.label_smoothing)

    def selection_metric(self, metric: str, explicit: bool) -> str:
        return "macro_f1" if self.log_prior is not None and not explicit else metric

    # ---- model ----------------------------------------------------------------------------------------
    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        from transformers import AutoModel, AutoModelForSequenceClassification

        import lftrain.models.pooled as pooled  # registers the mean-pooled classifier with the Auto classes
        from lftrain.models.loading import load_with_head

        head = self.head()
        if self.config.pooling == "mean" and source.config.get("model_type") != pooled.MODEL_TYPE:
            encoder = load_with_head(AutoModel, source, "an encoder", trust_remote_code, attn_implementation=attention)
            return pooled.wrap_encoder(encoder, **head)
        # A model saved with mean pooling keeps it whatever `pooling` says: its head was trained on that input.
        return load_with_head(AutoModelForSequenceClassification, source, "a sequence classifier", trust_remote_code,
                              attn_implementation=attention, **head, **self._pad_head(source))

    def head(self) -> dict[str, Any]:
        """The head's config: how many outputs and what they mean (id2label; problem_type for other losses)."""
        assert self.labels is not None
        return {"num_labels": len(self.labels), "id2label": self.labels.id2label(),
                "label2id": self.labels.label2id()}

    def prepare_tokenizer(self, tokenizer) -> None:
        self.pad_token_id = tokenizer.pad_token_id

    def _pad_head(self, source) -> dict[str, Any]:
        """A decoder classifier reads each row's last token, found through config.pad_token_id: a checkpoint
        without one (Llama 3, Mistral) gets the tokenizer's, else batches of more than one row fail."""
        pad = getattr(self, "pad_token_id", None)
        return {"pad_token_id": pad} if source.config.get("pad_token_id") is None and pad is not None else {}

    def encode(self, tokenizer, ex: Examples) -> dict[str, np.ndarray]:
        """Tokenise into flat arrays (ids, offsets, type ids, labels): compact, and cacheable without pickle."""
        pair = ex.fields.get("text_pair")
        enc = tokenizer(ex.fields["text"], pair, truncation=True, max_length=self.config.max_length,
                        return_token_type_ids=takes_token_types(tokenizer))
        ids = enc["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out = {
            "input_ids": np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lengths.sum())),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        }
        types = token_types(enc, tokenizer)
        if types is not None:
            out["token_type_ids"] = np.fromiter((t for x in types for t in x), dtype=np.int8, count=int(lengths.sum()))
        labels = self.label_array(ex)
        if labels is not None:
            out["labels"] = labels
        return out

    def label_array(self, ex: Examples) -> np.ndarray | None:
        """The training targets of `ex` (class indices here), None for unlabelled rows."""
        return self.labels.encode(ex) if self.labels is not None else None

    @staticmethod
    def lengths(encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.diff(encoded["offsets"])

    def collate(self, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        """Pad to the longest example of this batch (dynamic padding), rounded up to `pad_to_multiple_of`."""
        import torch

        batch = pad_token_rows(encoded, indices, {"input_ids": pad_id, "token_type_ids": 0},
                               self.config.pad_to_multiple_of, self.config.max_length)
        if "labels" in encoded:
            batch["labels"] = torch.from_numpy(encoded["labels"][indices])
        return batch

    # ---- model inputs (loss, metrics and predictions: ClassificationTask) -----------------------------
    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return text_inputs(batch)

"""Token classification (named entities, parts of speech): a tag for every word.

Rows are sentences as words and word-level tags: CoNLL-style files (a word and its tag per line; data.format
`conll`, or files ending .conll/.iob/.bio) or JSON/Parquet rows with a list of tokens and a list of tags (names, or
integers indexing `task.labels`). Words are split into sub-words by the tokenizer; the first sub-word of each word
carries its tag and the others are ignored by the loss (`label_all_subwords: true` tags them too). Scores are
entity-level in strict IOB2 (evaluation/spans.py, as seqeval) with a row per entity type, plus word accuracy;
`lft predict` returns each entity with its text and character offsets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.batching import pad_token_rows
from lftrain.data.examples import Examples
from lftrain.data.labels import LabelTuples, label_key
from lftrain.data.readers import Table, is_missing
from lftrain.errors import DataError
from lftrain.tasks.base import TASKS, ClassificationTask, Task
from lftrain.tasks.inputs import WordsInput

IGNORE = -100


class TagSet(LabelTuples):
    """The tag names; a row's raw label is the tuple of its words' tags."""


@TASKS.register("token-classification")
class TokenClassification(ClassificationTask):
    """Tag each word (entities in IOB2, or any word-level tags). Loss: cross-entropy per tagged sub-word; one loss
    unit per tagged sub-word."""

    serve_input, serve_bare_strings = WordsInput, True
    pipeline_tag = "token-classification"
    auto_model = "AutoModelForTokenClassification"

    default_metric = "f1"
    data_checks = False
    label_set_class = TagSet

    class Config(Section):
        type: Literal["token-classification"] = "token-classification"
        tokens: str = "tokens"
        """Column holding each sentence's words (a list; CoNLL files give it)."""
        tags: str = "tags"
        """Column holding each word's tag (a list as long as the words; CoNLL files give it)."""
        text: str = "text"
        """Column of raw text for `lft predict` input without words: split into words by the tokenizer."""
        labels: list[str] | None = None
        """Tag names in output order (needed when tags are given as integers). Default: the sorted tags found."""
        label_all_subwords: bool = False
        """Tag every sub-word of a word with its tag, instead of the first one alone."""
        max_length: int = Field(256, gt=0)
        """Sub-words per sentence; longer sentences are truncated (their last words go untagged)."""
        pad_to_multiple_of: int = Field(8, gt=0)
        """Pad each batch to a multiple of this many sub-words (see text-classification)."""
        label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
        """Label smoothing of the cross-entropy loss (0 = none)."""

    # ---- data -------------------------------------------------------------------------------------------
    def extract(self, table: Table, *, normalize: bool, with_labels: bool = True,
                drop_label: Callable[[str], bool] | None = None) -> Examples:
        cfg = self.config
        if cfg.tokens not in table.columns and not with_labels and cfg.text in table.columns:
            return self._from_text(table)
        needed = [cfg.tokens] + ([cfg.tags] if with_labels else [])
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise DataError(f"no column '{missing[0]}' (columns: {', '.join(table.columns)}); set task.tokens/tags",
                            file=table.file)
        fields: dict[str, list] = {"tokens": [], "label": []}
        kept, dropped = [], {}
        for i, row in enumerate(table.rows):
            words = _word_list(row.get(cfg.tokens), table, i, cfg.tokens)
            tags = None
            if with_labels:
                raw = row.get(cfg.tags)
                if not isinstance(raw, (list, tuple)) or len(raw) != len(words):
                    raise DataError(f"expected {len(words)} tags (one per word), got {raw!r:.60}", column=cfg.tags,
                                    **table.where(i))
                tags = tuple(label_key(t, table, i, cfg.tags) for t in raw)
                unknown = [t for t in tags if drop_label is not None and drop_label(t)]
                if unknown:
                    dropped[unknown[0]] = dropped.get(unknown[0], 0) + 1
                    continue
            fields["tokens"].append(tuple(words))
            fields["label"].append(tags)
            kept.append(i)
        return Examples(table.file, fields, [(table.file, table.row_numbers[i], table.lines[i]) for i in kept],
                        dropped)

    def _from_text(self, table: Table) -> Examples:
        """Prediction input given as raw text: the words, and each word's place in the text (`spans`)."""
        texts = [row.get(self.config.text) for row in table.rows]
        for i, text in enumerate(texts):
            if is_missing(text):
                raise DataError("empty text", column=self.config.text, **table.where(i))
        return Examples(table.file, {"text": texts, "label": [None] * len(texts)},
                        [(table.file, table.row_numbers[i], table.lines[i]) for i in range(len(texts))])

    def dedupe_key(self, ex: Examples, i: int) -> tuple:
        return tuple(ex.fields["tokens"][i]) if "tokens" in ex.fields else (ex.fields["text"][i],)

    def text_columns(self) -> list[str]:
        return [self.config.text]

    # ---- model ------------------------------------------------------------------------------------------
    def load_processor(self, source, trust_remote_code: bool = False):
        """The tokenizer for pre-split words: a byte-level BPE one (RoBERTa) with a prefix space before every
        word, so a word is encoded as it is inside running text."""
        from lftrain.models.families import for_split_words
        from lftrain.models.loading import load_tokenizer

        return for_split_words(load_tokenizer(source, trust_remote_code))

    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        from transformers import AutoModelForTokenClassification

        from lftrain.models.loading import load_classifier

        return load_classifier(AutoModelForTokenClassification, source, self.labels, "a token classifier",
                               trust_remote_code, attn_implementation=attention)

    def encode(self, tokenizer, ex: Examples) -> dict[str, np.ndarray]:
        """Flat sub-word arrays: ids, offsets, the word each sub-word belongs to (-1: special) and its target; and
        each word's character span in the row's text (`word_spans`, `word_offsets`) for predictions."""
        words, spans = _words(tokenizer, ex)
        enc = tokenizer([list(w) for w in words], is_split_into_words=True, truncation=True,
                        max_length=self.config.max_length)
        ids, word_ids, targets = [], [], []
        tagged = ex.fields["label"][0] is not None if len(ex) else False
        for r in range(len(words)):
            row_words = enc.word_ids(r)
            ids.append(enc["input_ids"][r])
            word_ids.append([-1 if w is None else w for w in row_words])
            if tagged:
                tag_ids = self.labels.index(ex.fields["label"][r], ex, r, self.config.tags)
                targets.append(self._align(row_words, tag_ids))
        lengths = np.asarray([len(x) for x in ids], dtype=np.int64)
        out = {"input_ids": np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32),
               "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
               "word_ids": np.concatenate(word_ids).astype(np.int32) if ids else np.zeros(0, np.int32)}
        if tagged:
            out["labels"] = np.concatenate(targets).astype(np.int64)
        out["word_spans"] = np.concatenate(spans).reshape(-1, 2) if spans else np.zeros((0, 2), np.int64)
        out["word_offsets"] = np.concatenate([[0], np.cumsum([len(x) for x in spans])]).astype(np.int64)
        return out

    def _align(self, word_ids: list, tag_ids: tuple) -> list[int]:
        out, previous = [], None
        for w in word_ids:
            first = w is not None and w != previous
            out.append(tag_ids[w] if first or (w is not None and self.config.label_all_subwords) else IGNORE)
            previous = w
        return out

    @staticmethod
    def lengths(encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.diff(encoded["offsets"])

    def collate(self, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        """Labels are per sub-word, padded with IGNORE (left out of the loss)."""
        batch = pad_token_rows(encoded, indices, {"input_ids": pad_id, "labels": IGNORE},
                               self.config.pad_to_multiple_of, self.config.max_length)
        return batch

    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: batch[k] for k in ("input_ids", "attention_mask")}

    # ---- loss, metrics, predictions --------------------------------------------------------------------
    def loss_units(self, batch: dict[str, Any]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def loss_sum(self, outputs, batch: dict[str, Any]):
        import torch.nn.functional as F

        logits = outputs.logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                               ignore_index=IGNORE, reduction="sum", label_smoothing=self.config.label_smoothing)

    def row_outputs(self, outputs, batch: dict[str, Any]) -> list[np.ndarray]:
        lengths = batch["attention_mask"].sum(1).tolist()
        logits = outputs.logits.float().cpu().numpy()
        return [logits[r, :n] for r, n in enumerate(lengths)]

    def stack_outputs(self, rows: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(rows).astype(np.float32) if rows else np.empty((0, 0), dtype=np.float32)

    def word_tags(self, logits: np.ndarray, encoded: dict[str, np.ndarray]) -> tuple[list, list]:
        """(predicted, true) tag names per sentence, one per word whose first sub-word was kept."""
        names = self.labels.names
        pred_ids = logits.argmax(-1)
        first = _first_subwords(encoded["word_ids"], encoded["offsets"])
        pred, true = [], []
        for r in range(len(encoded["offsets"]) - 1):
            positions = first[r]
            pred.append([names[pred_ids[p]] for p in positions])
            if "labels" in encoded:
                true.append([names[encoded["labels"][p]] for p in positions])
        return pred, true

    def score(self, logits: np.ndarray, encoded: dict[str, np.ndarray]) -> dict[str, Any]:
        from lftrain.evaluation.spans import entity_scores

        pred, true = self.word_tags(logits, encoded)
        return {**entity_scores(true, pred), "n": len(true)}

    def format_metrics(self, metrics: dict[str, Any], title: str) -> str:
        lines = [Task.format_metrics(self, metrics, title),
                 f"  {'entity':<16} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
        for name, c in metrics["per_type"].items():
            lines.append(f"  {name[:16]:<16} {c['precision']:>9.4f} {c['recall']:>9.4f} {c['f1']:>9.4f} "
                         f"{c['support']:>8d}")
        return "\n".join(lines)

    def predictions(self, logits: np.ndarray, encoded: dict | None = None, examples: Examples | None = None):
        """Per sentence: each word's tag, and the entities with their text and character offsets."""
        from lftrain.evaluation.spans import entities

        pred, _ = self.word_tags(logits, encoded)
        out = []
        for r, tags in enumerate(pred):
            spans = encoded["word_spans"][encoded["word_offsets"][r]:encoded["word_offsets"][r + 1]]
            text = examples.fields["text"][r] if "text" in examples.fields else " ".join(examples.fields["tokens"][r])
            ents = [{"type": kind, "start": int(spans[a][0]), "end": int(spans[b - 1][1]),
                     "text": text[spans[a][0]:spans[b - 1][1]]} for kind, a, b in entities(tags)]
            out.append({"tags": tags, "entities": ents})
        return out

    def final_evaluation(self, out) -> dict[str, dict[str, Any]]:
        """Entity scores of each split; bootstrap intervals of the entity F1 over sentences."""
        from lftrain.evaluation.bootstrap import bootstrap_ci
        from lftrain.evaluation.evidence import log_final, write_metric_evidence
        from lftrain.evaluation.spans import entity_scores

        cfg, results, extra = out.recipe.eval, {}, {}
        for split in (s for s in cfg.splits if s in out.encoded):
            pred, true = self.word_tags(out.infer(out.encoded[split]), out.encoded[split])
            results[split] = {**entity_scores(true, pred), "n": len(true)}
            log_final(self, out, split, results[split])
            if cfg.bootstrap_samples and true:
                extra[split] = {"intervals": {"f1": bootstrap_ci(
                    lambda idx, p=pred, t=true: entity_scores([t[i] for i in idx], [p[i] for i in idx])["f1"],
                    len(true), samples=cfg.bootstrap_samples, level=cfg.confidence)}}
        write_metric_evidence(out, results, extra)
        return results


def _word_list(value: Any, table: Table, i: int, column: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"expected a non-empty list of words, got {value!r:.60}", column=column, **table.where(i))
    if any(not isinstance(w, str) or not w.strip() for w in value):
        raise DataError("an empty word, or one that is not text", column=column, **table.where(i))
    return [w.strip() for w in value]


def _words(tokenizer, ex: Examples) -> tuple[list[tuple], list[np.ndarray]]:
    """The words of each row and their (start, end) character spans in its text: given words are joined by single
    spaces; raw text (prediction input) is split into words by the tokenizer's own pre-tokenizer."""
    if "tokens" in ex.fields:
        spans = []
        for words in ex.fields["tokens"]:
            starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
            spans.append(np.asarray([(s, s + len(w)) for s, w in zip(starts, words)], dtype=np.int64))
        return ex.fields["tokens"], spans
    split = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    words, spans = [], []
    for text in ex.fields["text"]:
        # the words as the text writes them: a byte-level pre-tokenizer returns them in its byte alphabet ("Ġgood")
        found = [(a + len(text[a:b]) - len(text[a:b].lstrip()), b) for _, (a, b) in split(text)]
        found = [(a, b) for a, b in found if b > a]
        words.append(tuple(text[a:b].rstrip() for a, b in found))
        spans.append(np.asarray(found, dtype=np.int64).reshape(-1, 2))
    return words, spans


def _first_subwords(word_ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Per row, the flat positions of the first sub-word of each word."""
    out = []
    for s, e in zip(offsets[:-1], offsets[1:]):
        w = word_ids[s:e]
        keep = (w >= 0) & np.concatenate([[True], w[1:] != w[:-1]])
        out.append(np.flatnonzero(keep) + s)
    return out

"""Extractive question answering (SQuAD 1.1 and 2.0): the answer is a span of the context, or none.

Rows are questions with a context and gold answers (text and character offset): SQuAD's own JSON (`{"data":
[{"paragraphs": [{"context", "qas": [...]}]}]}`), or flat rows with `question`, `context` and `answers` (a list of
`{text, answer_start}`, or Hugging Face's `{text: [...], answer_start: [...]}`). A context longer than `max_length`
is cut into overlapping windows (`stride` tokens shared); each window is a training row whose target is the
answer's first and last token, or the [CLS] token when the answer is not inside it (or there is none). An answer
is decoded from every window of a question: the best-scoring span of at most `max_answer_length` tokens inside
the context, or no answer when the [CLS] score beats it by `null_threshold` (SQuAD 2.0). Scores: exact match and
F1 with the official normalisation (evaluation/squad.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.batching import pad_token_rows
from lftrain.data.examples import Examples
from lftrain.data.readers import Table, is_missing
from lftrain.errors import DataError
from lftrain.models.families import takes_token_types, text_inputs
from lftrain.tasks.base import TASKS, Task
from lftrain.tasks.inputs import QAInput


@TASKS.register("extractive-qa")
class ExtractiveQA(Task):
    """Answer a question with a span of its context. Loss: cross-entropy of the start and of the end token, averaged;
    one loss unit per window."""

    serve_input = QAInput
    pipeline_tag = "question-answering"
    auto_model = "AutoModelForQuestionAnswering"

    default_metric = "f1"
    cacheable = False  # the windows carry their contexts (strings) for decoding

    class Config(Section):
        type: Literal["extractive-qa"] = "extractive-qa"
        question: str = "question"
        """Column holding the question."""
        context: str = "context"
        """Column holding the passage the answer is taken from."""
        answers: str = "answers"
        """Column holding the gold answers: a list of `{text, answer_start}` (or `{text: [...], answer_start:
        [...]}`); empty for an unanswerable question."""
        max_length: int = Field(384, gt=32)
        """Tokens per window (question and context together)."""
        stride: int = Field(128, ge=0)
        """Tokens of context two neighbouring windows share, so no answer is cut in two."""
        max_answer_length: int = Field(30, gt=0)
        """The longest answer decoded, in tokens."""
        null_threshold: float = 0.0
        """SQuAD 2.0: answer nothing when the [CLS] score beats the best span's by more than this."""
        n_best: int = Field(20, gt=0)
        """Start and end candidates tried per window when decoding."""
        pad_to_multiple_of: int = Field(8, gt=0)
        """Pad each batch to a multiple of this many tokens."""

    # ---- data -------------------------------------------------------------------------------------------
    def read(self, path, data_cfg, *, with_labels: bool = True, drop_label: Callable | None = None,
             stats: dict | None = None, columns: dict[str, str] | None = None) -> Examples:
        """SQuAD's nested JSON is flattened to a row per question; any other file is read as a table."""
        from lftrain.data.paths import resolve_path

        resolved = resolve_path(str(path).split("#", 1)[0])
        if resolved.suffix == ".json" and resolved.is_file():
            head = resolved.read_text(encoding=data_cfg.encoding, errors="replace")[:4096].lstrip()
            if head.startswith("{") and '"data"' in head:
                return self.extract(_squad_table(str(path), resolved, data_cfg.encoding).renamed(columns or {}),
                                    normalize=False, with_labels=with_labels)
        return super().read(path, data_cfg, with_labels=with_labels, drop_label=drop_label, stats=stats,
                            columns=columns)

    def extract(self, table: Table, *, normalize: bool, with_labels: bool = True,
                drop_label: Callable[[str], bool] | None = None) -> Examples:
        cfg = self.config
        needed = [cfg.question, cfg.context] + ([cfg.answers] if with_labels else [])
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise DataError(f"no column '{missing[0]}' (columns: {', '.join(table.columns)}); set "
                            "task.question/context/answers", file=table.file)
        fields: dict[str, list] = {"question": [], "context": [], "label": []}
        for i, row in enumerate(table.rows):
            question, context = row.get(cfg.question), row.get(cfg.context)
            for col, value in ((cfg.question, question), (cfg.context, context)):
                if is_missing(value) or not isinstance(value, str):
                    raise DataError("empty or not text", column=col, **table.where(i))
            fields["question"].append(" ".join(question.split()))  # SQuAD questions carry stray whitespace
            fields["context"].append(context)  # never normalised: the answers' offsets point into it
            fields["label"].append(_answers(row.get(cfg.answers), context, table, i, cfg.answers)
                                   if with_labels else None)
        return Examples(table.file, fields, [(table.file, table.row_numbers[i], table.lines[i])
                                             for i in range(len(table.rows))])

    def dedupe_key(self, ex: Examples, i: int) -> tuple:
        return ex.fields["question"][i], ex.fields["context"][i]

    def fit_labels(self, train: Examples) -> None:
        return None

    def restore_labels(self, names: list[str]) -> None:
        return None

    def text_columns(self) -> list[str]:
        return [self.config.question, self.config.context]

    # ---- model ------------------------------------------------------------------------------------------
    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        from transformers import AutoModelForQuestionAnswering

        from lftrain.models.loading import load_with_head

        return load_with_head(AutoModelForQuestionAnswering, source, "a question-answering model",
                              trust_remote_code, attn_implementation=attention)

    def encode(self, tokenizer, ex: Examples) -> dict[str, Any]:
        """One row per window: ids, token types, each context token's character span (-1 elsewhere), the example
        it belongs to, and its start/end targets; plus the contexts and gold answers to decode and score with."""
        cfg = self.config
        enc = tokenizer(ex.fields["question"], ex.fields["context"], truncation="only_second",
                        max_length=cfg.max_length, stride=cfg.stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, return_token_type_ids=takes_token_types(tokenizer))
        ids, types, spans, starts, ends = [], [], [], [], []
        for w in range(len(enc["input_ids"])):
            sequence = enc.sequence_ids(w)
            span = [(a, b) if s == 1 else (-1, -1) for (a, b), s in zip(enc["offset_mapping"][w], sequence)]
            example = enc["overflow_to_sample_mapping"][w]
            start, end = _target(span, ex.fields["label"][example])
            ids.append(enc["input_ids"][w])
            if "token_type_ids" in enc:
                types.append(enc["token_type_ids"][w])
            spans.append(span)
            starts.append(start)
            ends.append(end)
        lengths = np.asarray([len(x) for x in ids], dtype=np.int64)
        out = {"input_ids": np.concatenate(ids).astype(np.int32),
               **({"token_type_ids": np.concatenate(types).astype(np.int8)} if types else {}),
               "char_spans": np.concatenate(spans).astype(np.int32).reshape(-1, 2),
               "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
               "example": np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64),
               "contexts": list(ex.fields["context"]), "cls": _cls_positions(enc, tokenizer.cls_token_id)}
        if ex.fields["label"] and ex.fields["label"][0] is not None:
            out["start_positions"] = np.asarray(starts, dtype=np.int64)
            out["end_positions"] = np.asarray(ends, dtype=np.int64)
            out["answers"] = [[text for _, text in answers] for answers in ex.fields["label"]]
        return out

    @staticmethod
    def lengths(encoded: dict[str, Any]) -> np.ndarray:
        return np.diff(encoded["offsets"])

    def collate(self, encoded: dict[str, Any], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        import torch

        batch = pad_token_rows(encoded, indices, {"input_ids": pad_id, "token_type_ids": 0},
                               self.config.pad_to_multiple_of, self.config.max_length)
        if "start_positions" in encoded:
            batch["start_positions"] = torch.from_numpy(encoded["start_positions"][indices])
            batch["end_positions"] = torch.from_numpy(encoded["end_positions"][indices])
        return batch

    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return text_inputs(batch)

    # ---- loss, decoding, metrics ------------------------------------------------------------------------
    def loss_units(self, batch: dict[str, Any]) -> int:
        return int(batch["start_positions"].shape[0])

    def loss_sum(self, outputs, batch: dict[str, Any]):
        import torch.nn.functional as F

        start = F.cross_entropy(outputs.start_logits.float(), batch["start_positions"], reduction="sum")
        end = F.cross_entropy(outputs.end_logits.float(), batch["end_positions"], reduction="sum")
        return (start + end) / 2

    def row_outputs(self, outputs, batch: dict[str, Any]) -> list[np.ndarray]:
        lengths = batch["attention_mask"].sum(1).tolist()
        both = np.stack([outputs.start_logits.float().cpu().numpy(), outputs.end_logits.float().cpu().numpy()], -1)
        return [both[r, :n] for r, n in enumerate(lengths)]

    def stack_outputs(self, rows: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(rows).astype(np.float32) if rows else np.empty((0, 2), dtype=np.float32)

    def decode(self, logits: np.ndarray, encoded: dict[str, Any]) -> list[dict[str, Any]]:
        """Per question: the best answer over its windows ({answer, start, end, score, no_answer})."""
        from lftrain.evaluation.squad import best_span

        cfg, offsets = self.config, encoded["offsets"]
        best: list[dict | None] = [None] * len(encoded["contexts"])
        null = np.full(len(encoded["contexts"]), -np.inf)
        for w, example in enumerate(encoded["example"]):
            s, e = offsets[w], offsets[w + 1]
            start, end, spans = logits[s:e, 0], logits[s:e, 1], encoded["char_spans"][s:e]
            cls = encoded["cls"][w]
            null[example] = max(null[example], float(start[cls] + end[cls]))
            span = best_span(start, end, spans, n_best=cfg.n_best, max_length=cfg.max_answer_length)
            if span is not None and (best[example] is None or span[2] > best[example]["score"]):
                best[example] = {"start": span[0], "end": span[1], "score": span[2]}
        out = []
        for i, found in enumerate(best):
            context = encoded["contexts"][i]
            if found is None or null[i] > found["score"] + cfg.null_threshold:
                out.append({"answer": "", "start": None, "end": None, "score": float(null[i]), "no_answer": True})
            else:
                out.append({"answer": context[found["start"]:found["end"]], **found, "no_answer": False})
        return out

    def score(self, logits: np.ndarray, encoded: dict[str, Any]) -> dict[str, Any]:
        from lftrain.evaluation.squad import squad_scores

        return squad_scores([p["answer"] for p in self.decode(logits, encoded)], encoded["answers"])

    def predictions(self, logits: np.ndarray, encoded=None, examples=None) -> list[dict[str, Any]]:
        return self.decode(logits, encoded)

    def final_evaluation(self, out) -> dict[str, dict[str, Any]]:
        """EM and F1 of each split; bootstrap intervals of both over questions."""
        from lftrain.evaluation.bootstrap import bootstrap_ci
        from lftrain.evaluation.evidence import log_final, write_metric_evidence
        from lftrain.evaluation.squad import exact_match, f1, squad_scores

        cfg, results, extra = out.recipe.eval, {}, {}
        for split in (s for s in cfg.splits if s in out.encoded):
            encoded = out.encoded[split]
            answers = [p["answer"] for p in self.decode(out.infer(encoded), encoded)]
            results[split] = squad_scores(answers, encoded["answers"])
            log_final(self, out, split, results[split])
            if cfg.bootstrap_samples and answers:
                per = {"exact_match": np.asarray([exact_match(a, g) for a, g in zip(answers, encoded["answers"])]),
                       "f1": np.asarray([f1(a, g) for a, g in zip(answers, encoded["answers"])])}
                extra[split] = {"intervals": {name: bootstrap_ci(lambda idx, v=v: 100 * float(v[idx].mean()),
                                                                 len(v), samples=cfg.bootstrap_samples,
                                                                 level=cfg.confidence) for name, v in per.items()}}
        write_metric_evidence(out, results, extra)
        return results


def _answers(raw: Any, context: str, table: Table, i: int, column: str) -> tuple:
    """((start, text), ...) of one row's gold answers, each checked to be where its offset says."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise DataError("answers must be JSON (a list of {text, answer_start})", column=column,
                            **table.where(i)) from None
    if isinstance(raw, dict):  # Hugging Face's columnar form
        raw = [{"text": t, "answer_start": s} for t, s in zip(raw.get("text", []), raw.get("answer_start", []))]
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise DataError(f"answers must be a list, got {type(raw).__name__}", column=column, **table.where(i))
    out = []
    for a in raw:
        text, start = (a.get("text"), a.get("answer_start")) if isinstance(a, dict) else (None, None)
        if not isinstance(text, str) or not text or not isinstance(start, int):
            raise DataError(f"an answer needs text and an integer answer_start, got {a!r:.60}", column=column,
                            **table.where(i))
        if context[start:start + len(text)] != text:
            raise DataError(f"answer {text!r:.40} is not at character {start} of the context", column=column,
                            **table.where(i))
        out.append((start, text))
    return tuple(out)


def _target(spans: list[tuple[int, int]], answers: tuple | None) -> tuple[int, int]:
    """The first answer's first and last token in this window; the [CLS] token (0) when it is not inside."""
    if not answers:
        return 0, 0
    start_char, text = answers[0]
    end_char = start_char + len(text)
    inside = [t for t, (a, b) in enumerate(spans) if a >= 0]
    if not inside or spans[inside[0]][0] > start_char or spans[inside[-1]][1] < end_char:
        return 0, 0
    start = next(t for t in inside if spans[t][1] > start_char)
    end = next(t for t in reversed(inside) if spans[t][0] < end_char)
    return start, end


def _cls_positions(enc, cls_id: int | None) -> np.ndarray:
    """Where each window's [CLS] token (the no-answer position) is."""
    return np.asarray([ids.index(cls_id) if cls_id in ids else 0 for ids in enc["input_ids"]], dtype=np.int64)


def _squad_table(path: str, resolved, encoding: str) -> Table:
    """SQuAD's nested JSON as a table: a row per question (id, title, question, context, answers)."""
    try:
        data = json.loads(resolved.read_text(encoding=encoding))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"not SQuAD JSON ({exc})", file=path) from None
    rows = []
    for article in data:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                rows.append({"id": qa.get("id"), "title": article.get("title"), "question": qa.get("question"),
                             "context": paragraph.get("context"), "answers": answers})
    if not rows:
        raise DataError("no questions in the SQuAD file", file=path)
    return Table(path, ["id", "title", "question", "context", "answers"], rows, list(range(1, len(rows) + 1)),
                 [None] * len(rows))

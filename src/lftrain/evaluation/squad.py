"""Extractive question answering scores as the official SQuAD evaluation script computes them.

Answers are normalised (lower case; punctuation, the articles a/an/the and extra whitespace removed), then compared
with every gold answer of the question, keeping the best: exact match (0 or 1) and the F1 of their word overlap. An
unanswerable question (no gold answer, SQuAD 2.0) is right only when the prediction is empty too.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: list[str]) -> float:
    if not gold:
        return float(prediction.strip() == "")
    return max(float(normalize(prediction) == normalize(g)) for g in gold)


def _f1(prediction: str, truth: str) -> float:
    pred, true = normalize(prediction).split(), normalize(truth).split()
    if not pred or not true:  # the official script: both empty is a match, one empty is not
        return float(pred == true)
    common = sum((Counter(pred) & Counter(true)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(true)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, gold: list[str]) -> float:
    if not gold:
        return float(prediction.strip() == "")
    return max(_f1(prediction, g) for g in gold)


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """Mean exact match and F1 (as percentages, like the official script), overall and for answerable and
    unanswerable questions apart."""
    em = [exact_match(p, g) for p, g in zip(predictions, golds)]
    f = [f1(p, g) for p, g in zip(predictions, golds)]
    out = {"exact_match": 100 * sum(em) / max(len(em), 1), "f1": 100 * sum(f) / max(len(f), 1), "n": len(em)}
    for name, keep in (("has_answer", [bool(g) for g in golds]), ("no_answer", [not g for g in golds])):
        idx = [i for i, k in enumerate(keep) if k]
        if idx:
            out[f"{name}_exact_match"] = 100 * sum(em[i] for i in idx) / len(idx)
            out[f"{name}_f1"] = 100 * sum(f[i] for i in idx) / len(idx)
            out[f"{name}_n"] = len(idx)
    return out


def best_span(start: np.ndarray, end: np.ndarray, spans: np.ndarray, *, n_best: int,
              max_length: int) -> tuple[int, int, float] | None:
    """The (first char, end char, score) of the best answer in one window: among the `n_best` highest start and
    end scores over context tokens (`spans` >= 0), end not before start and at most `max_length` tokens long; the
    score is start + end. None when the window holds no valid span."""
    context = np.flatnonzero(spans[:, 0] >= 0)
    if not len(context):
        return None
    starts = context[np.argsort(-start[context], kind="stable")[:n_best]]
    ends = context[np.argsort(-end[context], kind="stable")[:n_best]]
    best = None
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > max_length:
                continue
            score = float(start[s] + end[e])
            if best is None or score > best[2]:
                best = (int(spans[s, 0]), int(spans[e, 1]), score)
    return best

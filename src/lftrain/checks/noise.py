"""Label-noise suspects: out-of-fold class probabilities from a cheap model, ranked confident-learning style.

Probabilities come from a logistic regression cross-validated over the labelled rows (each row is scored by a
model that never saw it), on TF-IDF word uni+bigrams by default or on the frozen base model's mean-pooled
embeddings. A row is a suspect when, following confident learning (Northcutt et al., JAIR 2021; the
`confident_learning` filter of cleanlab), another class j reaches its per-class threshold t_j (the mean
probability of class j over the rows labelled j) and is the most probable such class. Suspects are ranked
by margin: p(suggested) - p(given label), largest first.
"""

from __future__ import annotations

import logging

import numpy as np

from lftrain.checks.report import CheckResult, row_ref, short
from lftrain.checks.text import example_text

log = logging.getLogger("lftrain")


def tfidf_features(texts: list[str]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    # min_df=2 drops hapaxes (most of the vocabulary, no signal across folds); sublinear tf for long texts.
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True, dtype=np.float32)
    try:
        return vec.fit_transform(texts)
    except ValueError:  # no word occurs twice (one unspaced string a row: protein or DNA sequences): characters
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True, dtype=np.float32)
        return vec.fit_transform(texts)


def encoder_features(texts: list[str], model_dir, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states of the frozen base model (no gradients, eval mode)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval()
    order = np.argsort([len(t) for t in texts])  # similar lengths together: little padding
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            enc = tok([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[idx] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
    return out


def out_of_fold_probs(features, y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = max(2, min(folds, int(np.bincount(y).min())))
    clf = LogisticRegression(C=4.0, max_iter=300)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(clf, features, y, cv=cv, method="predict_proba")


def confident_suspects(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of suspects ranked by margin, suggested class per suspect)."""
    k = probs.shape[1]
    thresholds = np.array([probs[y == j, j].mean() if np.any(y == j) else 1.0 for j in range(k)])
    above = probs >= thresholds[None, :] - 1e-12
    masked = np.where(above, probs, -1.0)
    best = masked.argmax(1)
    has = masked.max(1) >= 0
    suspect = np.flatnonzero(has & (best != y))
    margin = probs[suspect, best[suspect]] - probs[suspect, y[suspect]]
    order = np.argsort(-margin, kind="stable")
    return suspect[order], best[suspect[order]]


def noise(splits: dict, *, method: str, folds: int, model_dir=None, max_length: int = 128) -> CheckResult:
    """Rank likely mislabelled rows over all labelled rows (train, eval and test splits together)."""
    pool = [(role, i) for role, ex in splits.items() for i in range(len(ex))]
    texts = [example_text(splits[r], i) for r, i in pool]
    labels = [splits[r].fields["label"][i] for r, i in pool]
    names = sorted(set(labels))
    y = np.array([names.index(v) for v in labels])
    if min(np.bincount(y, minlength=len(names))) < 2:
        return CheckResult("noise", 0, "skipped: a class has fewer than 2 rows", flagged=False)
    folds = max(2, min(folds, int(np.bincount(y).min())))  # every fold needs every class
    feats = encoder_features(texts, model_dir, max_length) if method == "encoder" else tfidf_features(texts)
    probs = out_of_fold_probs(feats, y, folds)
    idx, suggested = confident_suspects(probs, y)
    rows = []
    for i, s in zip(idx.tolist(), suggested.tolist()):
        role, j = pool[i]
        rows.append({**row_ref(splits[role], j, role), "reason": "label-noise suspect", "label": labels[i],
                     "suggested": names[s], "p_label": round(float(probs[i, y[i]]), 4),
                     "p_suggested": round(float(probs[i, s]), 4),
                     "score": round(float(probs[i, s] - probs[i, y[i]]), 4), "text": texts[i]})
    acc = float((probs.argmax(1) == y).mean())
    summary = (f"{len(rows)} rows ({len(rows) / len(pool):.1%}) look mislabelled ({method} + logistic regression, "
               f"{folds}-fold out-of-fold accuracy {acc:.1%})")
    examples = [{k: (short(v) if k == "text" else v) for k, v in r.items() if k != "reason"} for r in rows[:5]]
    return CheckResult("noise", len(rows), summary, examples=examples, rows=rows,
                       details={"method": method, "oof_accuracy": round(acc, 4), "rows_scored": len(pool)})

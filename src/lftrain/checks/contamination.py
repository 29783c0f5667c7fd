"""Benchmark contamination: n-gram overlap (13-grams, as in the GPT-3 paper, Brown et al. 2020, appendix C)
between the training split and each eval/test split or benchmark file.

A held-out row with at least n words is contaminated if any of its n-grams (of normalised words) occurs in a
training row; a shorter row, if its whole normalised text is a training row. n-grams are kept as 64-bit hashes
in a sorted numpy array, so 200k training rows cost a few seconds and little memory.
"""

from __future__ import annotations

import numpy as np

from lftrain.checks.report import CheckResult, row_ref, short
from lftrain.checks.text import example_text


def _grams(words: list[str], n: int) -> list[str]:
    return [" ".join(words[k:k + n]) for k in range(len(words) - n + 1)] if len(words) >= n else []


class NgramIndex:
    """Hashes of every n-gram (and every whole short text) of the training rows, with the row each came from."""

    def __init__(self, norms: list[str], n: int) -> None:
        self.n = n
        hashes, owners = [], []
        for i, t in enumerate(norms):
            words = t.split()
            for g in _grams(words, n) or ([t] if t else []):
                hashes.append(hash(g))
                owners.append(i)
        h = np.array(hashes, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        self.hashes, self.owners = h[order], np.array(owners, dtype=np.int64)[order]

    def match(self, norm: str) -> tuple[int, str] | None:
        """(training row, matching n-gram) of the first overlap, or None."""
        words = norm.split()
        grams = _grams(words, self.n) or ([norm] if norm else [])
        if not grams or not len(self.hashes):
            return None
        q = np.array([hash(g) for g in grams], dtype=np.int64)
        pos = np.searchsorted(self.hashes, q)
        pos = np.minimum(pos, len(self.hashes) - 1)
        hit = np.flatnonzero(self.hashes[pos] == q)
        if not len(hit):
            return None
        k = int(hit[0])
        return int(self.owners[pos[k]]), grams[k]


def contamination(splits: dict, norms: dict[str, list[str]], targets: dict, target_norms: dict[str, list[str]],
                  n: int) -> CheckResult:
    """`targets`: name -> Examples (eval, test, benchmarks) checked against the training split."""
    index = NgramIndex(norms["train"], n)
    train = splits["train"]
    per_target, rows, examples, total = {}, [], [], 0
    for name, ex in targets.items():
        hits = 0
        for j, t in enumerate(target_norms[name]):
            m = index.match(t)
            if m is None:
                continue
            hits += 1
            i, gram = m
            rows.append({**row_ref(train, i, "train"), "reason": f"shares a {n}-gram with {name}",
                         "of": row_ref(ex, j, name), "ngram": gram})
            if len(examples) < 5:
                examples.append({name: row_ref(ex, j, name), "train": row_ref(train, i, "train"), "ngram": gram,
                                 "text": short(example_text(ex, j))})
        per_target[name] = {"rows": len(ex), "contaminated": hits, "share": round(hits / max(len(ex), 1), 4)}
        total += hits
    parts = ", ".join(f"{k} {v['contaminated']}/{v['rows']} ({v['share']:.1%})" for k, v in per_target.items())
    summary = f"held-out rows sharing a {n}-gram (or, if shorter, their whole text) with training: " + (parts or "none")
    return CheckResult("contamination", total, summary, examples=examples, rows=rows, details=per_target)

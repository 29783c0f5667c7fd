"""Class balance and text lengths: per-class counts, and the share of texts `task.max_length` would truncate."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from lftrain.checks.report import CheckResult, row_ref, short
from lftrain.checks.text import example_text

log = logging.getLogger("lftrain")


def imbalance(splits: dict, ratio: float) -> CheckResult:
    per_split = {role: dict(Counter(ex.fields["label"]).most_common()) for role, ex in splits.items()}
    train = per_split["train"]
    counts = sorted(train.values())
    worst = counts[-1] / max(counts[0], 1)
    missing = {role: sorted(set(train) - set(c)) for role, c in per_split.items() if role != "train"}
    missing = {k: v for k, v in missing.items() if v}
    flagged = worst > ratio or bool(missing)
    summary = (f"{len(train)} classes; largest/smallest = {worst:.1f}" + (f" (> {ratio:g})" if worst > ratio else "")
               + "; train " + ", ".join(f"{k}: {v}" for k, v in list(train.items())[:6])
               + (" …" if len(train) > 6 else ""))
    if missing:
        summary += "; classes absent from " + ", ".join(f"{k}: {v}" for k, v in missing.items())
    return CheckResult("imbalance", int(worst > ratio) + len(missing), summary, flagged=flagged,
                       details={"per_split": per_split, "largest_to_smallest": round(worst, 2),
                                "absent": missing})


def token_lengths(ex, tokenizer) -> np.ndarray:
    """Tokens per example as the model sees them (special tokens included); words if no tokenizer."""
    if tokenizer is None:
        return np.fromiter((len(example_text(ex, i).split()) for i in range(len(ex))), dtype=np.int64,
                           count=len(ex))
    pair = ex.fields.get("text_pair")
    enc = tokenizer(ex.fields["text"], pair, truncation=False, add_special_tokens=True,
                    return_attention_mask=False, return_token_type_ids=False, verbose=False)
    return np.fromiter((len(x) for x in enc["input_ids"]), dtype=np.int64, count=len(ex))


def truncation(splits: dict, tokenizer, max_length: int | None, share: float) -> CheckResult:
    details, rows, examples, over_total, total = {}, [], [], 0, 0
    unit = "tokens" if tokenizer is not None else "words"
    for role, ex in splits.items():
        lengths = token_lengths(ex, tokenizer)
        q = np.percentile(lengths, [50, 90, 99]).tolist() if len(lengths) else [0, 0, 0]
        over = np.flatnonzero(lengths > max_length) if max_length else np.array([], dtype=np.int64)
        details[role] = {"unit": unit, "median": q[0], "p90": q[1], "p99": q[2], "max": int(lengths.max()),
                         "over_max_length": int(len(over)), "share_truncated": round(len(over) / max(len(ex), 1), 4)}
        over_total += len(over)
        total += len(ex)
        rows += [{**row_ref(ex, int(i), role), "reason": "truncated", "length": int(lengths[i])} for i in over]
        examples += [{**row_ref(ex, int(i), role), "length": int(lengths[i]),
                      "text": short(example_text(ex, int(i)))} for i in over[:2]]
    frac = over_total / max(total, 1)
    t = details["train"]
    summary = (f"{frac:.1%} of texts exceed max_length {max_length} {unit}; train median {t['median']:.0f}, "
               f"p90 {t['p90']:.0f}, max {t['max']}")
    return CheckResult("truncation", over_total, summary, flagged=frac > share, examples=examples,
                       details={"max_length": max_length, "share_truncated": round(frac, 4), **details}, rows=rows)

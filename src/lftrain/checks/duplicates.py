"""Exact duplicates (after normalisation), the same text with conflicting labels, and cross-split leakage."""

from __future__ import annotations

from collections import defaultdict

from lftrain.checks.report import CheckResult, row_ref, short
from lftrain.checks.text import example_text


def groups(norm: list[str]) -> list[list[int]]:
    """Indices of rows sharing one normalised text, for every text that occurs more than once."""
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(norm):
        if t:
            by_text[t].append(i)
    return [idx for idx in by_text.values() if len(idx) > 1]


def duplicates(files: dict, norms: dict[str, list[str]]) -> CheckResult:
    """Rows repeating an earlier row's text and label within one data file (the first copy is kept)."""
    rows, examples, n_groups = [], [], 0
    for role, ex in files.items():
        labels = ex.fields["label"]
        for idx in groups(norms[role]):
            by_label: dict = defaultdict(list)
            for i in idx:
                by_label[labels[i]].append(i)
            for same in by_label.values():
                if len(same) < 2:
                    continue
                n_groups += 1
                first = row_ref(ex, same[0], role)
                for i in same[1:]:
                    rows.append({**row_ref(ex, i, role), "reason": "duplicate", "of": first})
                examples.append({"rows": [row_ref(ex, i, role)["row"] for i in same], "file": ex.name,
                                 "text": short(example_text(ex, same[0]))})
    return CheckResult("duplicates", len(rows), f"{len(rows)} rows repeat an earlier row's text and label "
                       f"({n_groups} groups; case, punctuation and spacing ignored)", examples=examples, rows=rows)


def conflicts(files: dict, norms: dict[str, list[str]]) -> CheckResult:
    """The same text with two or more different labels within one file: at least one label is wrong."""
    rows, examples = [], []
    for role, ex in files.items():
        labels = ex.fields["label"]
        for idx in groups(norms[role]):
            found = sorted({labels[i] for i in idx})
            if len(found) < 2:
                continue
            group = [row_ref(ex, i, role) for i in idx]
            rows += [{**g, "reason": "conflicting labels", "label": labels[i]} for g, i in zip(group, idx)]
            examples.append({"file": ex.name, "labels": {str(g["row"]): labels[i] for g, i in zip(group, idx)},
                             "text": short(example_text(ex, idx[0]))})
    return CheckResult("conflicts", len(examples), f"{len(examples)} texts appear with different labels "
                       f"({len(rows)} rows)", examples=examples, rows=rows)


def leakage(splits: dict, norms: dict[str, list[str]], tolerance: float = 0.0) -> CheckResult:
    """Training rows whose normalised text is also an eval or test row: scores on those splits would be inflated."""
    train = splits["train"]
    index: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(norms["train"]):
        index[t].append(i)
    rows, examples, held_hit = [], [], 0
    for role in ("eval", "test"):
        ex = splits.get(role)
        if ex is None:
            continue
        for j, t in enumerate(norms[role]):
            hits = index.get(t)
            if not hits:
                continue
            held_hit += 1
            other = row_ref(ex, j, role)
            rows += [{**row_ref(train, i, "train"), "reason": f"copy of a {role} row", "of": other} for i in hits]
            examples.append({"train_rows": [row_ref(train, i)["row"] for i in hits], role: other,
                             "text": short(example_text(ex, j))})
    held = sum(len(splits[r]) for r in ("eval", "test") if splits.get(r) is not None)
    share = held_hit / max(held, 1)
    # A copied row can move a held-out score by at most its share of the held-out rows: below the tolerance
    # it is reported, not flagged.
    return CheckResult("leakage", held_hit, f"{held_hit} eval/test rows ({share:.2%}) also occur in the training "
                       f"split ({len(rows)} training rows)", flagged=share > tolerance, examples=examples,
                       rows=rows, details={"share": round(share, 5), "tolerance": tolerance})

"""Simple PII flags: e-mail addresses and phone numbers, with counts and example row numbers.

Deliberately simple patterns (a reviewer confirms each hit): e-mail addresses, and phone numbers written
with a leading + country code or in common grouped forms (555-123-4567, (555) 123 4567, 020 7946 0958).
Bare digit runs (years, prices, IDs) are not phone numbers and are not flagged.
"""

from __future__ import annotations

import re

from lftrain.checks.report import CheckResult, row_ref

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w])")

KINDS = {"email": EMAIL, "phone": PHONE}


def _mask(value: str) -> str:
    return value[:2] + "…" + value[-2:] if len(value) > 6 else "…"


def pii(files: dict) -> CheckResult:
    counts = {k: 0 for k in KINDS}
    rows, examples = [], []
    for role, ex in files.items():
        for col in [c for c in ("text", "text_pair") if c in ex.fields]:
            for i, text in enumerate(ex.fields[col]):
                for kind, pattern in KINDS.items():
                    found = pattern.findall(text)
                    if not found:
                        continue
                    counts[kind] += 1
                    ref = row_ref(ex, i, role)
                    rows.append({**ref, "reason": kind, "count": len(found)})
                    if sum(1 for e in examples if e["kind"] == kind) < 3:
                        examples.append({**ref, "kind": kind, "masked": [_mask(f) for f in found[:3]]})
    summary = ", ".join(f"{v} rows with {k} addresses" if k == "email" else f"{v} rows with {k} numbers"
                        for k, v in counts.items())
    return CheckResult("pii", len({(r["split"], r["row"]) for r in rows}), summary, examples=examples, rows=rows,
                       details=counts)

"""Results of the data checks: one `CheckResult` per check, gathered in a `CheckReport` that prints as one table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_EXAMPLES = 5


def row_ref(ex, i: int, split: str | None = None) -> dict[str, Any]:
    """Where row i of Examples `ex` came from, as a person needs it to find the row: file, data row, line."""
    file, row, line = ex.where[i]
    ref = {"split": split or ex.name, "file": file, "row": row}
    if line is not None:
        ref["line"] = line
    return ref


def short(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class CheckResult:
    name: str
    count: int
    """How many problems (rows, pairs or groups, as `summary` says); 0 means clean."""
    summary: str
    flagged: bool | None = None
    """Whether the finding counts as a problem (and so can block training); default: count > 0."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Every affected row (row_ref + reason); `lft data fix` removes from these."""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.flagged is None:
            self.flagged = self.count > 0
        self.examples = self.examples[:MAX_EXAMPLES]


@dataclass
class CheckReport:
    results: dict[str, CheckResult]
    blocking: list[str]
    """Names of flagged checks listed in `data.checks.block`: `lft train` stops on these."""
    sources: dict[str, Any] = field(default_factory=dict)
    """Per role: path, sha256, rows, licence (the data card's provenance part)."""
    licences: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.blocking

    def table(self) -> str:
        """The one summary table printed by `lft data check` and at the start of `lft train`."""
        width = max(len(n) for n in self.results) if self.results else 10
        lines = [f"{'check':<{width}}  {'status':<7} {'found':>7}  summary"]
        for name, r in self.results.items():
            status = "BLOCK" if name in self.blocking else ("warn" if r.flagged else ("note" if r.count else "ok"))
            lines.append(f"{name:<{width}}  {status:<7} {r.count:>7}  {r.summary}")
        lines.append(f"data checks took {self.seconds:.1f}s" + (f"; blocking: {', '.join(self.blocking)}"
                                                               if self.blocking else ""))
        return "\n".join(lines)

    def to_dict(self, with_rows: bool = False) -> dict[str, Any]:
        results = {}
        for name, r in self.results.items():
            d = asdict(r)
            if not with_rows:
                d.pop("rows")
            results[name] = d
        return {"ok": self.ok, "blocking": self.blocking, "seconds": round(self.seconds, 3),
                "sources": self.sources, "licences": self.licences, "results": results}

    def write(self, directory: Path) -> list[Path]:
        """check.json (every affected row included) and noise_suspects.csv for review."""
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / "data_check.json"
        out.write_text(json.dumps(self.to_dict(with_rows=True), indent=1, ensure_ascii=False, default=str))
        written = [out]
        noise = self.results.get("noise")
        if noise is not None and noise.rows:
            written.append(_write_suspects(directory / "noise_suspects.csv", noise.rows))
        return written


def _write_suspects(path: Path, rows: list[dict[str, Any]]) -> Path:
    import csv

    cols = ["rank", "split", "file", "row", "line", "label", "suggested", "p_label", "p_suggested", "score", "text"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for rank, r in enumerate(rows, 1):
            w.writerow({"rank": rank, **r})
    return path

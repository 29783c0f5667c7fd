"""Read a run directory's saved files (never the model): what `lft report` and `lft compare` work from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lftrain.errors import InputError
from lftrain.training.rundir import read_jsonl


@dataclass
class RunFiles:
    path: Path
    recipe: dict[str, Any]
    status: dict[str, Any]
    manifest: dict[str, Any]
    records: list[dict[str, Any]]
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.recipe.get("name") or self.path.name

    def final_metrics(self) -> dict[str, dict[str, Any]]:
        """split -> the final evaluation record of metrics.jsonl (what every task writes, classification or not)."""
        out = {}
        for r in self.records:
            if r.get("event") == "eval" and r.get("final"):
                out[r["split"]] = {k: v for k, v in r.items() if k not in ("event", "split", "step", "final")}
        return out

    def train_end(self) -> dict[str, Any]:
        return next((r for r in reversed(self.records) if r.get("event") == "train_end"), {})

    def arrays(self, name: str) -> dict[str, Any] | None:
        from lftrain.files import load_arrays

        p = self.path / "evidence" / f"{name}.npz"
        return load_arrays(p) if p.is_file() else None


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def read_run(path: str | Path) -> RunFiles:
    """The saved files of a run directory (or of the run holding a model/ directory)."""
    p = Path(path)
    if p.name == "model" and (p.parent / "recipe.yaml").is_file():
        p = p.parent
    if not (p / "recipe.yaml").is_file():
        raise InputError(f"{path}: not an lftrain run directory (no recipe.yaml)")
    # the run's own reader: a last line cut short by a kill is dropped, as when the run resumes
    records = read_jsonl(p / "metrics.jsonl")
    return RunFiles(p, yaml.safe_load((p / "recipe.yaml").read_text()) or {}, _json(p / "run.json"),
                    _json(p / "manifest.json"), records, _json(p / "evidence.json"))

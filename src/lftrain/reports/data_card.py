"""The data card: sources with hashes and row counts, licences and their verdicts, and every check's result,
as `data_card.md` for people and `data_card.json` for tools. Written by `lft data check` and into every run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def card_dict(recipe, report) -> dict[str, Any]:
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "recipe": recipe.name, "task": recipe.task.type,
            "intended_use": recipe.output.intended_use, **report.to_dict()}


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]]


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Data card{': ' + card['recipe'] if card.get('recipe') else ''}", "",
             f"Task `{card['task']}`, intended use **{card['intended_use']}**; written {card['created']} by lftrain.",
             "", "## Sources", ""]
    lines += _md_table(["role", "path", "rows", "sha256", "package licence"],
                       [[role, s["path"], s["rows"], s.get("sha256", "-")[:16], s.get("package_licence", "-")]
                        for role, s in card["sources"].items()])
    lic = card.get("licences") or {}
    lines += ["", f"## Licences (verdict for {lic.get('intended_use', '?')} use: **{lic.get('verdict', '?')}**)", ""]
    lines += _md_table(["source", "licence", "verdict", "reason"],
                       [[r["source"], r.get("licence") or "not declared", r["verdict"], r["reason"]]
                        for r in lic.get("sources", [])])
    model_meta = next((r.get("metadata") for r in lic.get("sources", []) if "metadata" in r), None)
    if model_meta:
        lines += ["", f"Base model licence metadata: `{json.dumps(model_meta)[:400]}`"]
    lines += ["", "## Checks", ""]
    blocking = set(card["blocking"])

    def status(n: str, r: dict) -> str:
        return "BLOCK" if n in blocking else ("warn" if r["flagged"] else ("note" if r["count"] else "ok"))

    lines += _md_table(["check", "status", "found", "summary"],
                       [[n, status(n, r), r["count"], r["summary"]] for n, r in card["results"].items()])
    for name, r in card["results"].items():
        if r["examples"]:
            lines += ["", f"### {name}: examples", "", "```json",
                      *[json.dumps(e, ensure_ascii=False)[:400] for e in r["examples"]], "```"]
    lines += ["", "Every affected row (file, data row, line) is listed in `data_check.json`; label-noise suspects, "
              "ranked, in `noise_suspects.csv`. See docs/data-checks.md."]
    return "\n".join(lines) + "\n"


def write_data_card(directory: Path, recipe, report) -> Path:
    """data_card.md, data_card.json, data_check.json (+ noise_suspects.csv) in `directory`; returns the .md."""
    directory = Path(directory)
    report.write(directory)
    card = card_dict(recipe, report)
    (directory / "data_card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False, default=str))
    md = directory / "data_card.md"
    md.write_text(card_markdown(card), encoding="utf-8")
    return md

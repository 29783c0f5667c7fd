"""`lft data fix`: a cleaned copy of the recipe's data files, with a log of every removed row.

The originals are never touched. Removed by default: exact duplicates (the first copy kept), near-duplicates
(the first of each pair kept: an automatic split can no longer put one in train and its twin in test), and
training rows that copy or nearly copy an eval/test row. On request: every row of a text with conflicting
labels, label-noise suspects, and training rows sharing an n-gram with a held-out set or benchmark.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from lftrain.data.readers import detect_format, read_table
from lftrain.data.sources import expand
from lftrain.errors import InputError

log = logging.getLogger("lftrain")


def _removals(report, *, near: bool, conflicts: bool, noise: bool, contaminated: bool) -> dict[tuple, dict]:
    chosen = ["duplicates", "leakage", "near_leakage"] + (["near_duplicates"] if near else []) + (
        ["conflicts"] if conflicts else []) + (["noise"] if noise else []) + (["contamination"] if contaminated else [])
    out: dict[tuple, dict] = {}
    for name in chosen:
        result = report.results.get(name)
        for r in (result.rows if result else []):
            out.setdefault((r["file"], r["row"]), {"check": name, **{k: v for k, v in r.items() if k != "split"}})
    return out


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows),
                        encoding="utf-8")


def fix_data(recipe, output: str | Path, *, near: bool = True, conflicts: bool = False, noise: bool = False,
             contaminated: bool = False, report=None) -> dict[str, Any]:
    """Write cleaned copies of the recipe's data files, removed.jsonl and a recipe.yaml using them to `output`."""
    from lftrain.checks.runner import run_checks
    from lftrain.config import dump_recipe

    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; `lft data fix` never overwrites: choose a new --output")
    report = report or run_checks(recipe)
    drop = _removals(report, near=near, conflicts=conflicts, noise=noise, contaminated=contaminated)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"output": str(out), "files": {}, "removed": {}}
    removed_lines, new_paths = [], {}
    for role in ("train", "eval", "test"):
        sources = expand(getattr(recipe.data, role), role)
        entries = []
        for n, source in enumerate(sources, 1):
            target = out / (f"{role}.csv" if len(sources) == 1 else f"{role}-{n}.csv")
            target = _clean_copy(source, recipe, drop, target, removed_lines, summary)
            entries.append(str(target.resolve()) if source.weight == 1 and not source.columns else
                           {"path": str(target.resolve()), "weight": source.weight, "columns": source.columns})
        if entries:
            new_paths[role] = entries[0] if len(entries) == 1 else entries
    (out / "removed.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                                               for r in removed_lines), encoding="utf-8")
    fixed = yaml.safe_load(dump_recipe(recipe))
    fixed["data"].update({**new_paths, "format": "auto", "encoding": "utf-8"})
    (out / "recipe.yaml").write_text("# written by `lft data fix`: the same recipe on the cleaned data\n"
                                     + yaml.safe_dump(fixed, sort_keys=False, allow_unicode=True))
    (out / "fix_summary.json").write_text(json.dumps(summary, indent=1))
    for f in summary["files"].values():
        log.info("%s: %d -> %d rows (%s)", f["from"], f["rows_in"], f["rows_out"], f["to"])
    log.info("removed by check: %s; every removed row is in %s", summary["removed"] or "none", out / "removed.jsonl")
    return summary


def _clean_copy(source, recipe, drop: dict, target: Path, removed_lines: list, summary: dict) -> Path:
    """One source's rows minus those `drop` names, written beside the others (JSON lines when the rows are not
    flat, else CSV); returns the file written."""
    table = read_table(source.path, recipe.data.format, recipe.data.encoding)
    fmt = "csv" if (recipe.data.format if recipe.data.format != "auto" else detect_format(source.path)) in (
        "csv", "tsv") else "jsonl"
    target = target.with_suffix(f".{fmt}")
    kept = []
    for i, row in enumerate(table.rows):
        why = drop.get((source.path, table.row_numbers[i]))
        if why is None:
            kept.append(row)
        else:
            removed_lines.append({**why, "text": row.get(getattr(recipe.task, "text", "text"))})
            summary["removed"][why["check"]] = summary["removed"].get(why["check"], 0) + 1
    _write_rows(target, table.columns, kept, fmt)
    summary["files"][target.stem] = {"from": source.path, "to": str(target), "rows_in": len(table.rows),
                                          "rows_out": len(kept)}
    return target

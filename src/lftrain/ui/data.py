"""The Data page's logic, without Gradio: an uploaded file kept under RUNS/data/, its columns and first rows,
and the data checks of `lft data check` as a table."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from lftrain.errors import LftError
from lftrain.ui.forms import FormValues, build_recipe, template_recipe, validate

CHECK_COLUMNS = ["check", "status", "found", "summary"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_upload(uploaded: str | Path, runs_dir: str | Path) -> Path:
    """Copy an uploaded file to RUNS/data/ (Gradio's temporary copy goes away; the recipe needs a lasting path).
    A different file of the same name is kept beside it as NAME-2.EXT, ... — never overwritten."""
    src = Path(uploaded)
    folder = Path(runs_dir).resolve() / "data"
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / src.name, 1
    while target.exists() and _digest(target) != _digest(src):
        n += 1
        target = folder / f"{src.stem}-{n}{src.suffix}"
    if not target.exists():
        shutil.copyfile(src, target)
    return target


def preview(path: str, rows: int = 5) -> tuple[list[str], list[list[Any]], str]:
    """(columns, the first rows, a message) of a data file; no columns and the reader's error if it cannot read."""
    from lftrain.data.readers import read_table

    if not path or not path.strip():
        return [], [], "choose a file"
    try:
        table = read_table(path.strip())
    except LftError as exc:
        return [], [], f"cannot read it: {exc}"
    head = [[r.get(c) for c in table.columns] for r in table.rows[:rows]]
    return table.columns, head, f"{len(table.rows)} rows, columns: {', '.join(table.columns)}"


def guess_columns(columns: list[str]) -> tuple[str | None, str | None]:
    """The likely text and label columns by their names (the first and last column otherwise)."""
    if not columns:
        return None, None
    lower = {c.lower(): c for c in columns}
    text = next((lower[n] for n in ("text", "sentence", "review", "content", "document") if n in lower), columns[0])
    label = next((lower[n] for n in ("label", "labels", "category", "class", "target", "score") if n in lower),
                 columns[-1])
    return text, label


def check_rows(report) -> list[list[Any]]:
    """The rows of `lft data check`'s table: check, status (ok / note / warn / BLOCK), count, summary."""
    rows = []
    for name, r in report.results.items():
        status = "BLOCK" if name in report.blocking else ("warn" if r.flagged else ("note" if r.count else "ok"))
        rows.append([name, status, r.count, r.summary])
    return rows


def run_data_check(form: FormValues, runs_dir: str | Path) -> tuple[list[list[Any]], str]:
    """The data checks on the form's data, as `lft train` would run them. Before a model is chosen, lengths are
    counted in words instead of tokens. Returns (table rows, message); writes the data card like the CLI."""
    from lftrain.checks.runner import run_checks
    from lftrain.config import load_recipe
    from lftrain.reports.data_card import write_data_card

    if not form.data_file.strip():
        return [], "choose a training file first"
    model = form.model.strip()
    form = FormValues(**{**vars(form), "model": model or "(no model chosen yet)", "run_name":
                         form.run_name.strip() or "my-run"})
    recipe = build_recipe(form, runs_dir, template_recipe(form.template))
    problem = validate(recipe)
    if problem:
        return [], f"the recipe is not valid yet:\n{problem}"
    resolved = load_recipe(data=recipe)
    try:
        report = run_checks(resolved, load_tokenizer=bool(model))
    except LftError as exc:
        return [], f"the data cannot be used as it is:\n{exc}"
    out = Path(f"{resolved.output.dir}-data-check")
    write_data_card(out, resolved, report)
    verdict = (f"blocking: {', '.join(report.blocking)} (training would stop; see data.checks.block)"
               if report.blocking else "nothing blocks training")
    return check_rows(report), f"{verdict}. Data card and every affected row: {out}"

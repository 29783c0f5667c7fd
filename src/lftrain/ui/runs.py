"""The Report, Try it and Compare pages' logic, without Gradio: the run directories under RUNS, their test
metrics and report.html, a prediction for one typed text, and `lft compare` of two runs."""

from __future__ import annotations

import html
import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from lftrain.errors import LftError
from lftrain.ui.progress import run_info


def list_runs(runs_dir: str | Path, *, finished: bool = False) -> list[str]:
    """Run directories under RUNS (those with a run.json), newest first; `finished=True`: those with a model."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / "run.json").is_file()]
    if finished:
        runs = [p for p in runs if (p / "model").is_dir() and (p / "recipe.yaml").is_file()]
    return [str(p) for p in sorted(runs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)]


def metrics_rows(run_dir: str | Path) -> list[list[Any]]:
    """[split, metric, value] of a run's headline results (run.json), for a table."""
    results = run_info(Path(run_dir)).get("results", {})
    return [[split, k, round(v, 4) if isinstance(v, float) else v]
            for split, values in results.items() if isinstance(values, dict)
            for k, v in values.items() if isinstance(v, (int, float))]


def report_html(run_dir: str | Path, height: int = 900) -> str:
    """report.html embedded in an iframe (it is self-contained: its figures are inline, it fetches nothing)."""
    path = Path(run_dir) / "report.html"
    if not path.is_file():
        return "<p>No report.html yet: it is written when the run finishes (or by <code>lft report RUN</code>).</p>"
    page = html.escape(path.read_text(encoding="utf-8"), quote=True)
    return (f'<p>{html.escape(str(path))}</p><iframe id="lft-report" title="report" srcdoc="{page}" '
            f'style="width:100%;height:{height}px;border:1px solid #ddd"></iframe>')


class Predictor:
    """Loaded runs kept in memory (by run directory), so each typed text costs one forward pass."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    def _run(self, run_dir: str):
        from lftrain.runs.loaded import LoadedRun

        if run_dir not in self.loaded:
            self.loaded[run_dir] = LoadedRun(run_dir)
        return self.loaded[run_dir]

    def predict(self, run_dir: str, text: str, text_pair: str = "") -> dict[str, Any]:
        """What `lft predict` writes for one row: the label and class probabilities (or the value, the labels)."""
        import json
        import tempfile

        from lftrain.evaluation.evidence import stored_temperature

        tm = self._run(run_dir)
        row = {tm.recipe.task.text: text}
        pair = getattr(tm.recipe.task, "text_pair", None)
        if pair:
            row[pair] = text_pair
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "input.jsonl"
            path.write_text(json.dumps(row) + "\n", encoding="utf-8")
            examples = tm.read(path, with_labels=False)
            logits, encoded = tm.logits(examples)
        logits = logits / stored_temperature(tm.model_dir)
        return tm.task.predictions(logits, encoded, examples)[0]


def generate(run_dir: str, text: str) -> dict[str, Any]:
    """A causal-lm-sft run's answer to one prompt."""
    from lftrain.runs.chat import ChatModel

    return {"response": ChatModel(run_dir).generate(text)}


def text_pair_column(run_dir: str | None) -> str | None:
    """The run's second text column (pair tasks), None otherwise."""
    import yaml

    try:
        recipe = yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, TypeError, yaml.YAMLError):
        return None
    return (recipe.get("task") or {}).get("text_pair")


def is_generative(run_dir: str) -> bool:
    """Whether the run is a chat model's (its page offers a prompt box instead of a prediction form)."""
    from lftrain.runs.chat import run_task

    return run_task(run_dir).chat


def compare(run_a: str, run_b: str | None, base: bool = False, samples: int = 1000) -> tuple[list[list[Any]], str]:
    """`lft compare`: rows (metric, A, B, B - A, interval, verdict) and the printed text, or ([], the error)."""
    from lftrain.runs.compare import compare_runs, compare_with_base

    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            if base:
                result = compare_with_base(run_a, samples=samples)
            elif not run_b:
                return [], "choose two runs, or one run and 'against its base model'"
            else:
                result = compare_runs(run_a, run_b, samples=samples)
    except LftError as exc:
        return [], str(exc)
    rows = [[name if section == "metrics" else f"F1 of {name}", round(d["a"], 4), round(d["b"], 4), round(d["diff"], 4),
             f"[{d['low']:+.4f}, {d['high']:+.4f}]", d["verdict"]]
            for section in ("metrics", "per_class_f1") for name, d in result[section].items()]
    return rows, printed.getvalue()

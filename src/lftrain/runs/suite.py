"""Benchmark suites: several labelled tasks, one model, one table (`lft bench SUITE --model RUN_OR_DIR`).

A suite is a YAML file (see suites/text-classification.yaml, suites/glue-style.yaml):

    name: my-suite
    metrics: [accuracy, macro_f1, ece]      # the table's metrics (any name evidence.json has per split)
    defaults: {train: {...}, eval: {...}}   # recipe sections merged into every task
    tasks:
      - name: rotten-tomatoes
        task: {text: text, label: category, labels: [...]}   # type: text-classification unless it says
        data: {train: ..., test: ...}
        train: {max_steps: 150}             # the task's own keys win over defaults
        metrics: [pearson]                  # a task's own metrics (a regression has no accuracy)

Each task becomes an ordinary recipe trained with `lftrain.train` into OUT/<task name>; a finished task run is
reused, so an interrupted bench picks up where it stopped. The table's mean (a GLUE-style score) averages each
task's first metric.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from lftrain.errors import InputError
from lftrain.tasks import TASKS

log = logging.getLogger("lftrain")
_TASK_KEYS = {"name", "description", "task", "data", "train", "eval", "adaptation", "method", "metrics"}


def load_suite(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such suite file")
    try:
        suite = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("tasks"), list) or not suite["tasks"]:
        raise InputError(f"{p}: a suite needs a non-empty `tasks:` list")
    names = set()
    for i, t in enumerate(suite["tasks"]):
        if not isinstance(t, dict) or not t.get("name") or "data" not in t:
            raise InputError(f"{p}: tasks[{i}] needs at least `name` and `data`")
        unknown = set(t) - _TASK_KEYS
        if unknown:
            raise InputError(f"{p}: tasks[{i}] ({t['name']}): unknown key(s) {sorted(unknown)}; "
                             f"allowed: {sorted(_TASK_KEYS)}")
        if t["name"] in names:
            raise InputError(f"{p}: task name {t['name']!r} appears twice")
        names.add(t["name"])
    return suite


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def task_recipe(suite: dict, t: dict, model: str, out_dir: Path) -> dict[str, Any]:
    defaults = suite.get("defaults") or {}
    recipe: dict[str, Any] = {"name": f"{suite.get('name', 'bench')}/{t['name']}", "model": {"path": model},
                              "task": {"type": TASKS.default, **t.get("task", {})}, "data": t["data"],
                              "output": {"dir": str(out_dir / t["name"])}}
    for section in ("train", "eval", "adaptation", "method"):
        merged = _merge(defaults.get(section) or {}, t.get(section) or {})
        if merged:
            recipe[section] = merged
    return recipe


def encoder_dir(model: str, work: Path) -> str:
    """What each task fine-tunes: a model directory or `pkg:` spec as given; for a run directory its model —
    adapters merged, and any classification head dropped (each task trains its own head for its labels)."""
    p = Path(model)
    if not (p / "recipe.yaml").is_file() and not (p.name == "model" and (p.parent / "recipe.yaml").is_file()):
        return model
    from lftrain.models.trained import is_adapter_dir, resolve_run

    _, model_dir = resolve_run(p)
    if is_adapter_dir(model_dir):
        from lftrain.runs.export import export_model as export

        merged = work / "_merged"
        if not (merged / "config.json").is_file():
            export(p, merged, merge=True)
        model_dir = merged
    config = json.loads((model_dir / "config.json").read_text())
    heads = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
    if not any(a.endswith(heads) for a in config.get("architectures") or []):
        return str(model_dir)
    encoder = work / "_encoder"
    if not (encoder / "config.json").is_file():
        from transformers import AutoModel, AutoTokenizer

        AutoModel.from_pretrained(model_dir, local_files_only=True).save_pretrained(encoder, safe_serialization=True)
        AutoTokenizer.from_pretrained(model_dir, local_files_only=True).save_pretrained(encoder)
    return str(encoder)


def _cell(split: dict[str, Any], metric: str) -> dict[str, Any] | None:
    ci = split.get("intervals", {}).get(metric)
    if ci:
        return ci
    for source in (split.get("metrics", {}), split.get("calibration", {}).get("before", {})):
        if isinstance(source.get(metric), (int, float)):
            return {"value": source[metric]}
    return None


def run_suite(suite_path: str | Path, model: str, output: str | Path | None = None,
              overrides: list[str] | None = None) -> dict[str, Any]:
    """Fine-tune and evaluate `model` on every task of the suite; write OUT/bench.md and OUT/bench.json."""
    from lftrain.config import load_recipe
    from lftrain.orchestrator.launch import train
    from lftrain.reports.runfiles import read_run

    suite = load_suite(suite_path)
    out = Path(output or Path("runs") / "bench" / suite.get("name", Path(suite_path).stem))
    out.mkdir(parents=True, exist_ok=True)
    metrics = suite.get("metrics") or ["accuracy", "macro_f1"]
    columns = list(dict.fromkeys(m for t in suite["tasks"] for m in t.get("metrics") or metrics))
    # Validate every task's recipe (and data rows) before training any: a typo in task 3 fails in seconds.
    from lftrain.data.prepare import prepare_data
    from lftrain.tasks import build_task

    base = encoder_dir(model, out)
    recipes = []
    for t in suite["tasks"]:
        r = load_recipe(data=task_recipe(suite, t, base, out), overrides=overrides)
        prepare_data(r, build_task(r.task))
        recipes.append(r)
    rows = []
    for t, r in zip(suite["tasks"], recipes):
        run_dir = Path(r.output.dir)
        if not (run_dir / "run.json").is_file() or json.loads((run_dir / "run.json").read_text()).get(
                "status") != "finished":
            log.info("bench: training %s", t["name"])
            train(r)
        else:
            log.info("bench: %s already finished in %s; reusing it", t["name"], run_dir)
        ev = read_run(run_dir).evidence
        split = ev.get("splits", {}).get("test") or {}
        own = t.get("metrics") or metrics
        rows.append({"task": t["name"], "type": r.task.type, "n": split.get("metrics", {}).get("n"),
                     "run": str(run_dir), "score_metric": own[0], "metrics": {m: _cell(split, m) for m in own}})
    result = {"suite": suite.get("name"), "model": model, "metrics": columns, "tasks": rows,
              "level": suite.get("defaults", {}).get("eval", {}).get("confidence", 0.95)}
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    table = format_table(result)
    (out / "bench.md").write_text(table + "\n")
    print(table, flush=True)
    return result


def format_table(result: dict[str, Any]) -> str:
    metrics = result["metrics"]
    head = "| task | n (test) | " + " | ".join(metrics) + " |"
    lines = [f"**{result['suite']}** — model `{result['model']}`; test metrics with "
             f"{round(100 * result['level'])}% bootstrap intervals", "", head,
             "|" + "---|" * (len(metrics) + 2)]
    for row in result["tasks"]:
        cells = []
        for m in metrics:
            c = row["metrics"].get(m)
            cells.append("—" if m not in row["metrics"] else "n/a" if c is None else f"{c['value']:.4f}"
                         + (f" [{c['low']:.4f}, {c['high']:.4f}]" if "low" in c else ""))
        lines.append(f"| {row['task']} | {row['n']} | " + " | ".join(cells) + " |")
    scores = [row["metrics"][row.get("score_metric", metrics[0])] for row in result["tasks"]]
    scores = [c["value"] for c in scores if c]
    if scores:  # each task's first metric (GLUE's score is the mean of its tasks' scores)
        mixed = len({row.get("score_metric") for row in result["tasks"]}) > 1
        lines.append(f"| **mean**{' of each task’s first metric' if mixed else ''} | | "
                     f"{sum(scores) / len(scores):.4f} |" + " |" * (len(metrics) - 1))
    return "\n".join(lines)

"""Multi-stage runs (`stages: [...]`) and the methods that are several runs in one (self-training's rounds).

A staged recipe is expanded, before any model loads, into concrete stage recipes: each is the recipe with the
stage's overrides, `model.path` = the previous stage's `model/` (the first: the recipe's), and
`output.dir` = `<run>/stages/NN-name`. Every stage is an ordinary run directory (checkpoints, resume, report).
Self-training expands into its rounds: a supervised teacher fit first when no teacher is at hand, then one
stage per round whose teacher is the stage before.

    <run>/recipe.yaml       the recipe as given (with its stages)
    <run>/stages/01-dapt/   a complete run directory per stage
    <run>/stages.json       index: name, method, directory, status, headline results of every stage
    <run>/model/            the last stage's model (a copy), so `lft evaluate/predict <run>` work as for any run
    <run>/metrics.jsonl     one line per finished stage, and per self-training round its pseudo-label counts

Resume: running the same recipe again skips stages whose status is `finished` and resumes the interrupted one
through its own checkpoints.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lftrain.errors import InputError, RecipeError
from lftrain.orchestrator.run import TrainResult, train_run

log = logging.getLogger("lftrain")
COPIED = ("evidence.json", "report.html", "model_card.md")  # the last stage's evidence, for gates and readers


@dataclass
class Stage:
    index: int
    name: str
    recipe: Any  # a validated Recipe without stages
    dir: Path
    origin: str  # the user's stage this one comes from


def needs_stages(recipe) -> bool:
    """Stages given, or a method that is several runs (self-training)."""
    from lftrain.methods import METHODS

    return bool(recipe.stages) or METHODS.get(recipe.method.type).several_runs


def _stage_dir(root: Path, index: int, name: str) -> Path:
    return root / "stages" / f"{index:02d}-{name}"


def _merge(base: dict, stage) -> dict:
    data = copy.deepcopy(base)
    if "path" in stage.model:
        raise RecipeError(f"stages[{stage.name}].model.path: a stage starts from the previous stage's model; "
                          "set the first model in the recipe's model.path")
    for section in ("train", "model", "data", "eval"):
        data[section] = {**data.get(section, {}), **getattr(stage, section)}
    if stage.method is not None:
        data["method"] = stage.method.model_dump(mode="json")
    if stage.adaptation is not None:
        data["adaptation"] = stage.adaptation.model_dump(mode="json")
    return data


def expand(recipe) -> list[Stage]:
    """The concrete stages of `recipe`, validated (a bad key names the stage) — no model is loaded."""
    from lftrain.config.schema import StageConfig
    from lftrain.methods import METHODS

    if recipe.output.dir is None:
        raise InputError("output.dir is not set")
    root = Path(recipe.output.dir)
    base = recipe.model_dump(mode="json")
    base.pop("stages")
    user_stages = recipe.stages or [StageConfig(name=recipe.method.type)]
    names = [s.name for s in user_stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"stages: names must be unique (got {names})")
    out: list[Stage] = []
    start, start_is_classifier = recipe.model.path, False

    def add(name: str, data: dict, origin: str) -> Path:
        d = _stage_dir(root, len(out) + 1, name)
        data = {**data, "name": f"{recipe.name or root.name}/{name}", "output": {**data["output"], "dir": str(d)}}
        out.append(Stage(len(out) + 1, name, _validate(data, name), d, origin))
        return d

    for s in user_stages:
        merged = _merge(base, s)
        method = METHODS.get(merged["method"]["type"])
        start, start_is_classifier = method.plan_stages(s.name, merged, start, start_is_classifier,
                                                        functools.partial(add, origin=s.name))
    return out


def _validate(data: dict, name: str):
    from lftrain.config import load_recipe

    try:
        return load_recipe(data=data)
    except RecipeError as exc:
        raise RecipeError(f"stage '{name}': {exc}") from None


def _stage_status(d: Path) -> dict:
    f = d / "run.json"
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except json.JSONDecodeError:
        return {}


def train_recipe(recipe, *, new_run: bool = False, allow_recipe_change: bool = False, on_eval=None):
    """What `lftrain.api.train` runs: the stages of a staged recipe, or the one run of a plain one."""
    from lftrain.training.privacy import vet_recipe

    recipe = vet_recipe(recipe)  # train.privacy refuses stages and several-run methods before any run starts
    if not needs_stages(recipe):
        return train_run(recipe, new_run=new_run, allow_recipe_change=allow_recipe_change, on_eval=on_eval)
    return run_stages(recipe, new_run=new_run, allow_recipe_change=allow_recipe_change, on_eval=on_eval)


def run_stages(recipe, *, new_run: bool = False, allow_recipe_change: bool = False, on_eval=None):
    from lftrain.config import dump_recipe
    from lftrain.training.rundir import marked_failed_on_error, open_run

    expand(recipe)  # every stage validated before anything is written or loaded
    run, resuming = open_run(recipe.output.dir, dump_recipe(recipe), new_run=new_run,
                             allow_recipe_change=allow_recipe_change)
    if str(run.path) != str(Path(recipe.output.dir)):  # --new-run moved it: the stages live in the new place
        recipe = recipe.model_copy(update={"output": recipe.output.model_copy(update={"dir": str(run.path)})})
    stages = expand(recipe)
    index: list[dict] = []
    steps, seconds, samples = 0, 0.0, 0.0
    result = None
    with marked_failed_on_error(run):
        run.set_status("running", stages=[s.name for s in stages])
        for st in stages:
            status = _stage_status(st.dir)
            entry = {"index": st.index, "name": st.name, "stage": st.origin, "method": st.recipe.method.type,
                     "dir": str(st.dir), "model_path": st.recipe.model.path}
            if status.get("status") == "finished":
                log.info("stage %d/%d %s: finished earlier, skipped", st.index, len(stages), st.name)
                result = TrainResult(st.dir, st.dir / "model", status.get("results", {}), status.get("step", 0),
                                     0.0, 0.0, True)
                entry.update(status="finished", skipped=True, results=status.get("results", {}))
            else:
                log.info("stage %d/%d %s (method %s) -> %s", st.index, len(stages), st.name,
                         st.recipe.method.type, st.dir)
                result = train_run(st.recipe, allow_recipe_change=allow_recipe_change,
                                 on_eval=on_eval if st.index == len(stages) else None)
                entry.update(status="finished", results=_headline(result.metrics))
                steps, seconds = steps + result.steps, seconds + result.train_seconds
                samples += result.samples_per_second * result.train_seconds
                run.log_metrics({"event": "stage", **{k: entry[k] for k in ("index", "name", "method")},
                                 "step": result.steps, "results": entry["results"]})
                _log_pseudo_labels(run, st)
            pseudo = _pseudo_stats(st.dir)
            if pseudo:
                entry["pseudo_labels"] = pseudo
            index.append(entry)
            _write_index(run.path, index)
        _publish(stages[-1].dir, run.path)
        _print_summary(index)
        assert result is not None  # expand() plans one stage at least
        final = result.metrics
        run.set_status("finished", step=steps, results=_headline(final), stages=[e["name"] for e in index])
        return TrainResult(run.path, run.path / "model", final, steps, seconds, samples / max(seconds, 1e-9),
                           resuming)


def _headline(metrics: dict) -> dict:
    from lftrain.evaluation.metrics import headline

    return {k: headline(v) if isinstance(v, dict) else v for k, v in metrics.items()}


def _pseudo_stats(d: Path) -> dict | None:
    from lftrain.methods.self_training import PSEUDO_FILE

    f = d / PSEUDO_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def _log_pseudo_labels(run, st: Stage) -> None:
    stats = _pseudo_stats(st.dir)
    if stats:
        run.log_metrics({"event": "pseudo_labels", "index": st.index, "name": st.name, **stats})


def _write_index(root: Path, index: list[dict]) -> None:
    tmp = root / ".stages.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, root / "stages.json")


def _publish(stage_dir: Path, root: Path) -> None:
    """The last stage's model (and evidence) as the run's own: copied whole via a temporary sibling."""
    tmp = root / ".model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(stage_dir / "model", tmp)
    if (root / "model").exists():
        shutil.rmtree(root / "model")
    os.replace(tmp, root / "model")
    for name in COPIED:
        if (stage_dir / name).is_file():
            shutil.copy2(stage_dir / name, root / name)


def _print_summary(index: list[dict]) -> None:
    lines = ["stages:"]
    for e in index:
        res = e.get("results", {})
        split = res.get("test") or res.get("eval") or {}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in split.items() if isinstance(v, float))
        lines.append(f"  {e['index']:>2} {e['name']:<24} {e['method']:<14} {shown}")
        p = e.get("pseudo_labels")
        if p:
            acc = f", pseudo-label accuracy {p['pseudo_label_accuracy']:.4f}" if "pseudo_label_accuracy" in p else ""
            lines.append(f"     pseudo-labels: {p['selected']} of {p['pool']} "
                         f"({', '.join(f'{k} {v}' for k, v in p['per_class'].items())}){acc}")
    print("\n".join(lines), flush=True)

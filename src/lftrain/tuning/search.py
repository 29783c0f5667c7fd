"""`tune()`: the study directory and the search loop.

    <tune.dir>/                     default <output.dir>-tune
      recipe.yaml                   the resolved recipe with its tune section, as the search runs it
      study.db                      the Optuna study (SQLite), unless tune.storage names another database
      trials/trial-0000/ ...        one ordinary run directory per trial (+ trial.json: values, state, best metric)
      best.yaml                     the best trial's recipe, ready for `lft train`
      report/                       trials.csv, summary.json, report.html, PNGs: history, importances, parallel, curves

Killing `lft tune` and running it again continues the study: finished trials stay, the interrupted trial
is run again with the same values and resumes its run directory from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lftrain.config import dump_recipe
from lftrain.errors import InputError, RunStateError
from lftrain.training.rundir import recipe_differences
from lftrain.training.tracking import parent_run
from lftrain.tuning import study as st
from lftrain.tuning.space import check_space
from lftrain.tuning.trial import Objective, SurplusTrial

log = logging.getLogger("lftrain")

# Keys that may change between invocations of one study: the budget, and where this machine keeps its files.
_MAY_CHANGE = ("tune.trials", "tune.timeout", "tune.dir", "output.dir")


def study_dir_of(recipe) -> Path:
    return Path(recipe.tune.dir or f"{recipe.output.dir}-tune")


def study_name_of(recipe, study_dir: Path) -> str:
    return recipe.tune.study_name or recipe.name or study_dir.name


def _check_inputs(recipe, source: str) -> tuple[dict[str, Any], str]:
    tune = recipe.tune
    if tune is None:
        raise InputError(f"{source}: the recipe has no tune: section (which fields to search; see docs/tuning.md); "
                         "add one, or give it with --search FILE")
    if tune.dir is None and recipe.output.dir is None:
        raise InputError(f"{source}: set output.dir or tune.dir: the study directory is <output.dir>-tune")
    if recipe.data.eval is None and recipe.data.eval_fraction == 0:
        raise InputError(f"{source}: tuning needs evaluation data to compare trials (the test split stays unseen): "
                         "set data.eval or data.eval_fraction > 0")
    for name in tune.space:
        if name.split(".")[0] in ("tune", "output"):
            raise InputError(f"{source}: tune.space.{name}: output and tune keys cannot be searched")
    base = recipe.model_dump(mode="json")
    base.pop("tune")
    if base.get("eval", {}).get("fail_if"):
        base["eval"]["fail_if"] = {}  # the CI gate judges the final model (best.yaml keeps it), not each trial
    check_space(base, tune, source)
    return base, tune.metric or recipe.train.metric


def _check_same_study(study, recipe_yaml: str, url: str, name: str) -> None:
    """One study, one search: refuse to mix trials of different recipes or spaces in it."""
    old = study.user_attrs.get("recipe")
    if old is None:
        study.set_user_attr("recipe", recipe_yaml)
        return
    diffs = [d for d in recipe_differences(old, recipe_yaml) if not d.startswith(_MAY_CHANGE)]
    if diffs:
        raise RunStateError(f"study '{name}' in {st.redact(url)} was started with a different recipe; mixing "
                            "trials of two searches would make its results meaningless:\n  " + "\n  ".join(diffs)
                            + "\nSet tune.study_name (or tune.dir) to start a new study")


def _with_direction(recipe, metric: str):
    """The tune section with `direction: auto` resolved: the metric's direction as the task and method declare it."""
    from lftrain.methods import METHODS
    from lftrain.tasks import TASKS

    if recipe.tune.direction != "auto":
        return recipe.tune
    higher = METHODS.get(recipe.method.type).higher_is_better(metric, TASKS.get(recipe.task.type))
    return recipe.tune.model_copy(update={"direction": "maximize" if higher else "minimize"})


def tune(recipe, source: str = "<recipe>"):
    """Run (or continue) the search the recipe's tune section describes; returns the study's TuneReport."""
    from lftrain.extras import need
    from lftrain.tuning.report import write_report

    need("optuna", "lft tune")
    need("matplotlib", "lft tune (the study's plots)")
    base, metric = _check_inputs(recipe, source)
    tune_cfg = _with_direction(recipe, metric)
    st.quiet_optuna()
    study_dir = study_dir_of(recipe)
    study_dir.mkdir(parents=True, exist_ok=True)
    url = st.storage_url(tune_cfg, study_dir)
    name = study_name_of(recipe, study_dir)
    recipe_yaml = dump_recipe(recipe)
    study = st.open_study(tune_cfg, name, url, metric)
    _check_same_study(study, recipe_yaml, url, name)
    (study_dir / "recipe.yaml").write_text(recipe_yaml)
    (study_dir / "study.json").write_text(json.dumps({"study_name": name, "metric": metric}, indent=1))
    log.info("study '%s' in %s: %s, %s, %s pruner; directory %s", name, st.redact(url), st.direction(tune_cfg, metric),
             tune_cfg.sampler, tune_cfg.pruner, study_dir)

    worker = st.WorkerLock(study_dir)
    try:
        dead = st.recover_dead_trials(study, study_dir, tune_cfg.max_retries)
        if dead:
            log.info("trials %s were interrupted; they run again with the same values and resume their runs",
                     ", ".join(map(str, dead)))
        c = st.counts(study)
        log.info("%d of %d trials done (%d complete, %d pruned), %d running elsewhere", c["complete"] + c["pruned"],
                 tune_cfg.trials, c["complete"], c["pruned"], c["running"])
        if not st.budget_reached(study, tune_cfg.trials):
            objective = Objective(base, tune_cfg, metric, study_dir, worker.id)
            with parent_run(recipe, study_dir, name):  # MLflow: trials nest under the study's run
                study.optimize(objective, timeout=tune_cfg.timeout, catch=(SurplusTrial,), gc_after_trial=True,
                               callbacks=[_stop_when_budget_reached(tune_cfg.trials)])
    finally:
        worker.release()
    return write_report(study_dir)


def _stop_when_budget_reached(trials: int):
    def callback(study, _trial) -> None:
        if st.budget_reached(study, trials):
            study.stop()
    return callback


def _search_section(path: str | Path) -> dict[str, Any]:
    """The tune section in a separate file (either the section's keys, or a mapping with a `tune:` key)."""
    from pydantic import ValidationError

    from lftrain.config.loader import _line_map, format_validation_error, parse_yaml
    from lftrain.config.tune import TuneConfig
    from lftrain.errors import RecipeError

    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: search file not found")
    text = p.read_text(encoding="utf-8")
    data = parse_yaml(text, str(p))
    lines = _line_map(text)
    if set(data) == {"tune"}:
        data = data["tune"]
        lines = {k[1:]: v for k, v in lines.items() if k[:1] == ("tune",)}
    try:
        TuneConfig.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, TuneConfig, data, str(p), lines)) from None
    return data


def load_tune_recipe(recipe, overrides: list[str] | None, search: str | Path | None):
    """The resolved recipe a search runs, and a name for its source (for error messages)."""
    from lftrain.config import resolve_recipe
    from lftrain.tuning.space import override

    extra = [override("tune", _search_section(search))] if search else []
    resolved = resolve_recipe(recipe, [*extra, *(overrides or [])])
    return resolved, str(recipe) if isinstance(recipe, (str, Path)) else "<recipe>"

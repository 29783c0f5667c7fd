"""What a search found: the best trial and its ready-to-run recipe, every trial, the compute pruning saved,
and four pictures (optimisation history, parameter importances, parallel coordinates, learning curves)."""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("lftrain")

PLOTS = {"history": "optimisation history", "importances": "parameter importances",
         "parallel_coordinates": "parallel coordinates", "intermediate": "evaluations during each trial"}


@dataclass
class TuneReport:
    study_dir: Path
    study_name: str
    metric: str
    direction: str
    counts: dict[str, int]
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_dir: str | None = None
    best_recipe: Path | None = None
    compute: dict[str, float] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)


def _run_progress(run_dir: str | None) -> dict[str, float]:
    """Steps and epochs a trial's run trained, and what it would have trained without pruning."""
    from lftrain.training.rundir import RunDir

    if not run_dir or not (Path(run_dir) / "run.json").is_file():
        return {}  # e.g. a trial run on another machine of a shared study
    run = RunDir(Path(run_dir))
    status = run.status()
    # train and eval lines both carry step and epoch (a trial pruned early may have no train line yet)
    timed = [r for r in run.read_metrics() if r.get("epoch") and r.get("step")]
    step, total = status.get("step"), status.get("total_steps")
    if not timed or not step or not total:
        return {}
    per_step = timed[-1]["epoch"] / timed[-1]["step"]  # epochs per optimiser step
    return {"steps": step, "planned_steps": total, "epochs": step * per_step, "planned_epochs": total * per_step}


def trial_rows(study, space) -> list[dict[str, Any]]:
    from lftrain.tuning.space import decode

    rows = []
    for t in study.get_trials(deepcopy=False):
        params = {k: decode(space[k], v) if k in space else v for k, v in t.params.items()}
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value, **params,
                     "last_eval_step": last, "surplus": bool(t.user_attrs.get("surplus")),
                     "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
                     "run_dir": t.user_attrs.get("run_dir"), **_run_progress(t.user_attrs.get("run_dir"))})
    return rows


def _compute(rows: list[dict[str, Any]]) -> dict[str, float]:
    done = [r for r in rows if r["state"] in ("complete", "pruned") and "epochs" in r]
    if not done:
        return {}
    run, planned = sum(r["epochs"] for r in done), sum(r["planned_epochs"] for r in done)
    return {"trials_measured": len(done), "trial_epochs_run": round(run, 3),
            "trial_epochs_without_pruning": round(planned, 3), "saved_fraction": round(1 - run / planned, 4),
            "steps_run": sum(r["steps"] for r in done), "steps_without_pruning": sum(r["planned_steps"] for r in done)}


def best_recipe_yaml(recipe_yaml: str, params: dict[str, Any], header: str) -> str:
    """The study's recipe with the best values filled in and no tune section: ready for `lft train`."""
    from lftrain.config import dump_recipe
    from lftrain.config.loader import load_recipe
    from lftrain.tuning.space import override

    data = yaml.safe_load(recipe_yaml)
    data.pop("tune", None)
    data["output"]["dir"] = f"{data['output']['dir']}-best"
    recipe = load_recipe(data=data, overrides=[override(k, v) for k, v in params.items()])
    body = yaml.safe_load(dump_recipe(recipe))
    body.pop("tune", None)
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def _plot(kind: str, study, path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ov

    draw = {"history": ov.plot_optimization_history, "importances": ov.plot_param_importances,
            "parallel_coordinates": ov.plot_parallel_coordinate, "intermediate": ov.plot_intermediate_values}[kind]
    kwargs = {} if kind == "intermediate" else {"target_name": metric}
    ax = draw(study, **kwargs)
    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
    fig.set_size_inches(9, 5)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plots(study, out: Path, metric: str, n_complete: int, notes: list[str]) -> dict[str, Path]:
    plots = {}
    for kind in PLOTS:
        if n_complete < (2 if kind == "importances" else 1):
            notes.append(f"no {PLOTS[kind]} plot: it needs {2 if kind == 'importances' else 1}+ complete trials")
            continue
        path = out / f"{kind}.png"
        try:
            _plot(kind, study, path, metric)
        except (ValueError, RuntimeError) as exc:  # e.g. importances when no parameter varied
            notes.append(f"no {PLOTS[kind]} plot: {exc}")
            continue
        plots[kind] = path
    return plots


def write_report(study_dir: str | Path) -> TuneReport:
    """Write best.yaml and report/ (trials.csv, summary.json, PNGs, report.html) for a study directory."""
    from lftrain.extras import need

    need("optuna", "lft tune --report")
    from optuna.trial import TrialState

    from lftrain.tuning.study import counts

    study_dir = Path(study_dir)
    recipe, study = load_study(study_dir)
    meta = json.loads((study_dir / "study.json").read_text())
    out = study_dir / "report"
    out.mkdir(exist_ok=True)
    rows = trial_rows(study, recipe.tune.space)
    rep = TuneReport(study_dir, meta["study_name"], meta["metric"], study.direction.name.lower(), counts(study),
                     trials=rows, compute=_compute(rows))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        rep.best_trial, rep.best_value = best.number, best.value
        rep.best_params = next(r for r in rows if r["trial"] == best.number)
        rep.best_params = {k: rep.best_params[k] for k in best.params}
        rep.best_run_dir = best.user_attrs.get("run_dir")
        header = (f"# Best trial {best.number} of study '{rep.study_name}': eval {rep.metric} {best.value:.4f} "
                  f"({len(complete)} complete trials).\n# Train it: lft train {study_dir / 'best.yaml'}\n")
        rep.best_recipe = study_dir / "best.yaml"
        rep.best_recipe.write_text(best_recipe_yaml((study_dir / "recipe.yaml").read_text(), rep.best_params, header))
    else:
        rep.notes.append("no complete trial yet: no best.yaml")
    rep.plots = _plots(study, out, rep.metric, len(complete), rep.notes)
    _write_csv(out / "trials.csv", rows)
    summary = {k: v for k, v in asdict(rep).items() if k != "trials"}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "report.html").write_text(html_report(rep))
    return rep


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows([{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows])


def summary_text(rep: TuneReport) -> str:
    c = rep.counts
    lines = [f"study '{rep.study_name}' ({rep.study_dir}): {c['complete']} complete, {c['pruned']} pruned, "
             f"{c['running']} running, {c['fail']} failed/interrupted"]
    if rep.best_trial is not None:
        lines.append(f"best trial {rep.best_trial}: eval {rep.metric} {rep.best_value:.4f}  "
                     + "  ".join(f"{k}={v!r}" for k, v in rep.best_params.items()))
        lines.append(f"best recipe: {rep.best_recipe}  (lft train {rep.best_recipe})")
    if rep.compute:
        k = rep.compute
        lines.append(f"compute: {k['trial_epochs_run']:.2f} trial-epochs run of "
                     f"{k['trial_epochs_without_pruning']:.2f} without pruning "
                     f"({100 * k['saved_fraction']:.1f}% saved)")
    lines += [f"note: {n}" for n in rep.notes]
    lines.append(f"report: {rep.study_dir / 'report' / 'report.html'}")
    return "\n".join(lines)


def html_section(rep: TuneReport) -> str:
    """The search as an HTML fragment (summary, pictures, trials), for report.html or a larger report."""
    esc = html.escape
    parts = [f"<h2>Hyperparameter search: study {esc(rep.study_name)}</h2>",
             "<pre>" + esc(summary_text(rep)) + "</pre>"]
    for kind, path in rep.plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<h3>{esc(PLOTS[kind])}</h3><img alt='{esc(kind)}' src='data:image/png;base64,{data}'>")
    if rep.trials:
        keys = [k for k in rep.trials[0] if k not in ("run_dir",)]
        head = "".join(f"<th>{esc(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{esc(_cell(r.get(k)))}</td>" for k in keys) + "</tr>"
                       for r in rep.trials)
        parts.append(f"<h3>trials</h3><table><tr>{head}</tr>{body}</table>")
    if rep.best_recipe is not None:
        parts.append(f"<h3>best.yaml</h3><pre>{esc(Path(rep.best_recipe).read_text())}</pre>")
    return "\n".join(parts)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def html_report(rep: TuneReport) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>lft tune: {html.escape(rep.study_name)}"
            f"</title><style>{style}</style></head><body>{html_section(rep)}</body></html>\n")


def load_study(study_dir: str | Path):
    """The recipe and the Optuna study of a study directory (for reports)."""
    from lftrain.config.loader import load_recipe
    from lftrain.errors import InputError
    from lftrain.tuning import study as st

    study_dir = Path(study_dir)
    recipe_file = study_dir / "recipe.yaml"
    if not recipe_file.is_file():
        raise InputError(f"{study_dir}: not a study directory (no recipe.yaml); give the directory `lft tune` "
                         "printed (tune.dir, default <output.dir>-tune)")
    recipe = load_recipe(recipe_file)
    st.quiet_optuna()
    url = st.storage_url(recipe.tune, study_dir)
    name = json.loads((study_dir / "study.json").read_text())["study_name"]
    if recipe.tune.storage is None and not (study_dir / "study.db").is_file():
        raise InputError(f"{study_dir}: no study.db in it")
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=st.open_storage(url, recipe.tune.max_retries))
    except KeyError:
        raise InputError(f"{study_dir}: no study named '{name}' in {st.redact(url)}") from None
    return recipe, study

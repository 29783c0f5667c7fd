"""`lft compare RUN_A RUN_B`: is B better than A on the same test data, beyond sampling noise?

Works from the saved predictions of both runs (evidence/SPLIT.npz), so no model is loaded. The two runs
must have predicted the same examples: same count and same labels in the same order (and, when both
manifests record it, the same test file checksum). For each headline metric the paired bootstrap gives
an interval for B - A; the verdict is `better` / `worse` when the interval excludes 0, otherwise
`no significant change`.

`lft compare RUN --base` puts a linear probe on the run's frozen base model in A's place (compare_with_base),
`lft compare RUN --prompting MODEL` a prompted language model, zero- or few-shot (compare_with_prompting).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lftrain.errors import InputError
from lftrain.evaluation.bootstrap import classification_metric_fns, paired_bootstrap, per_class_f1_fns, verdict
from lftrain.reports.runfiles import RunFiles, read_run
from lftrain.tasks.base import Task, task_class


def _predictions(run: RunFiles, split: str) -> dict[str, np.ndarray]:
    arrays = run.arrays(split)
    if arrays is None:
        raise InputError(f"{run.path}: no saved {split} predictions (evidence/{split}.npz); runs trained before "
                         "evidence was recorded, or without a labelled classification task, cannot be compared")
    return arrays


def _same_data(a: RunFiles, b: RunFiles, pa: dict, pb: dict, split: str) -> None:
    if len(pa["labels"]) != len(pb["labels"]) or not np.array_equal(pa["labels"], pb["labels"]):
        raise InputError(f"{a.path} and {b.path} were evaluated on different {split} data ({len(pa['labels'])} vs "
                         f"{len(pb['labels'])} examples, or labels differ): a paired comparison needs the same "
                         "examples in the same order")
    names_a, names_b = a.evidence.get("labels"), b.evidence.get("labels")
    if names_a != names_b:
        raise InputError(f"label sets differ: {names_a} ({a.path}) vs {names_b} ({b.path})")
    sha = [r.manifest.get("data", {}).get(split, {}).get("sha256") for r in (a, b)]
    if all(sha) and sha[0] != sha[1]:
        raise InputError(f"the {split} files of {a.path} and {b.path} differ (sha256 {sha[0][:12]} vs {sha[1][:12]})")


def compare_runs(run_a: str | Path, run_b: str | Path, *, split: str = "test", samples: int = 1000,
                 level: float = 0.95, output: str | Path | None = None) -> dict[str, Any]:
    a, b = read_run(run_a), read_run(run_b)
    pa, pb = _predictions(a, split), _predictions(b, split)
    _same_data(a, b, pa, pb, split)
    names = a.evidence.get("labels") or [str(c) for c in range(pa["logits"].shape[-1])]
    result = paired_comparison(pa["logits"], pb["logits"], pa["labels"], names, samples=samples, level=level,
                               task=task_class(b.recipe.get("task")))
    result = {"run_a": str(a.path), "run_b": str(b.path), "split": split, **result}
    return _finish(result, output)


def compare_with_base(run: str | Path, *, split: str = "test", samples: int = 1000, level: float = 0.95,
                      output: str | Path | None = None) -> dict[str, Any]:
    """The run (B) against a linear probe on its frozen base model (A), on the run's saved `split`
    predictions; see lftrain.runs.base_probe."""
    from lftrain.runs.base_probe import fit_probe

    b = read_run(run)
    pb = _predictions(b, split)
    probe = fit_probe(b, pb["labels"], split)
    names = b.evidence.get("labels") or [str(c) for c in range(pb["logits"].shape[-1])]
    result = paired_comparison(probe.logits, pb["logits"], pb["labels"], names, samples=samples, level=level,
                               task=task_class(b.recipe.get("task")))
    result = {"run_a": f"linear probe on frozen {probe.model} (logistic regression, {probe.train_rows} train rows)",
              "run_b": str(b.path), "split": split, **result,
              "base": {"model": probe.model, "train_rows": probe.train_rows,
                       "probe_train_accuracy": probe.train_accuracy}}
    return _finish(result, output)


def compare_with_prompting(run: str | Path, model: str, *, shots: tuple[int, ...] = (0,), split: str = "test",
                           samples: int = 1000, level: float = 0.95, limit: int | None = None,
                           calibrate: bool = True, output: str | Path | None = None) -> dict[str, Any]:
    """The run (B) against prompting the causal LM `model` (A) with k examples for each k in `shots`, on the run's
    saved `split` (its first `limit` rows); see lftrain.runs.prompting."""
    from lftrain.evaluation.bootstrap import bootstrap_ci
    from lftrain.runs.base_probe import label_ids, paired_split, texts_of
    from lftrain.runs.prompting import pick_shots, prompt_baseline

    b = read_run(run)
    pb = _predictions(b, split)
    recipe, task, data, target, y = paired_split(b, pb["labels"], split, "compare --prompting")
    rows = np.arange(len(y) if limit is None else min(limit, len(y)))
    names = list(task.labels.names)
    train_texts, train_y = texts_of(data.train), label_ids(task, data.train)
    texts = [texts_of(target)[i] for i in rows]
    runs, fns = {}, {}
    for k in shots:
        shot_rows = [(train_texts[i], names[train_y[i]]) for i in pick_shots(train_texts, train_y, k)]
        p = prompt_baseline(model, texts, names, shot_rows,
                            trust_remote_code=recipe.model.trust_remote_code, calibrate=calibrate)
        runs[f"{k}-shot"] = {**paired_comparison(p.logits, pb["logits"][rows], y[rows], names, samples=samples,
                                                 level=level, task=type(task)),
                             "examples_per_s": p.examples_per_s,
                             "content_free_scores": None if p.content_free is None else p.content_free.tolist()}
        fns[f"{k}-shot {model}"] = p.logits
    fns[f"fine-tuned ({b.path.name})"] = pb["logits"][rows]
    table = {name: {m: bootstrap_ci(fn, len(rows), samples=samples, level=level)
                    for m, fn in classification_metric_fns(lg, y[rows]).items() if m in ("accuracy", "macro_f1")}
             for name, lg in fns.items()}
    result = {"run": str(b.path), "model": model, "split": split, "n": len(rows), "level": level,
              "calibration": "contextual (content-free input 'N/A')" if calibrate else "none", "prompting": runs,
              "table": table,
              "fine_tuned_examples_per_s": (b.evidence.get("latency") or {}).get("throughput_per_s")}
    return _finish(result, output, format_prompting)


def format_prompting(r: dict[str, Any]) -> str:
    pct = round(100 * r["level"])
    lines = [f"{r['split']} split, first {r['n']} rows; {pct}% bootstrap intervals; label scores calibrated: "
             f"{r['calibration']}",
             f"  {'':<40} {'accuracy':>26} {'macro_f1':>26} {'examples/s':>11}"]
    speeds = [r["prompting"][k]["examples_per_s"] for k in r["prompting"]] + [r["fine_tuned_examples_per_s"]]
    for (name, m), speed in zip(r["table"].items(), speeds):
        cells = [f"{m[x]['value']:.4f} [{m[x]['low']:.4f}, {m[x]['high']:.4f}]" for x in ("accuracy", "macro_f1")]
        lines.append(f"  {name[:40]:<40} {cells[0]:>26} {cells[1]:>26} "
                     f"{'n/a' if speed is None else format(speed, '.1f'):>11}")
    for k, c in r["prompting"].items():
        acc = c["metrics"]["accuracy"]
        lines.append(f"  fine-tuned - {k}: accuracy {acc['diff']:+.4f} [{acc['low']:+.4f}, {acc['high']:+.4f}] "
                     f"({acc['verdict']})")
    return "\n".join(lines)


def paired_comparison(logits_a: np.ndarray, logits_b: np.ndarray, y: np.ndarray, names: list[str], *,
                      samples: int, level: float, task: type[Task]) -> dict[str, Any]:
    """Paired bootstrap of B - A for each headline metric and each class's F1, with verdicts (better or worse in
    the direction `task` declares for the metric)."""
    n = len(y)
    fa, fb = classification_metric_fns(logits_a, y), classification_metric_fns(logits_b, y)
    metrics = {}
    for name, fn_a in fa.items():
        higher = task.higher_is_better(name)
        d = paired_bootstrap(fn_a, fb[name], n, samples=samples, level=level)
        metrics[name] = {**d, "higher_is_better": higher, "verdict": verdict(d, higher)}
    classes = {}
    for name, ca, cb in zip(names, per_class_f1_fns(logits_a, y), per_class_f1_fns(logits_b, y)):
        d = paired_bootstrap(ca, cb, n, samples=samples, level=level)
        classes[name] = {**d, "verdict": verdict(d, True)}
    return {"n": n, "samples": samples, "level": level, "metrics": metrics, "per_class_f1": classes}


def _finish(result: dict[str, Any], output: str | Path | None, fmt=None) -> dict[str, Any]:
    print((fmt or format_comparison)(result), flush=True)
    if output:
        Path(output).write_text(json.dumps(result, indent=1))
    return result


def format_comparison(r: dict[str, Any]) -> str:
    pct = round(100 * r["level"])
    lines = [f"B = {r['run_b']}\nA = {r['run_a']}",
             f"{r['split']} split, n = {r['n']}; B - A with {pct}% paired bootstrap intervals "
             f"({r['samples']} resamples)",
             f"  {'metric':<14} {'A':>8} {'B':>8} {'B - A':>8} {'interval':>20}  verdict"]
    for title, rows in (("", r["metrics"]), ("per-class F1", r["per_class_f1"])):
        if title:
            lines.append(f"  {title}")
        for name, d in rows.items():
            interval = f"[{d['low']:+.4f}, {d['high']:+.4f}]"
            lines.append(f"  {name[:14]:<14} {d['a']:>8.4f} {d['b']:>8.4f} {d['diff']:>+8.4f} {interval:>20}  "
                         f"{d['verdict']}")
    return "\n".join(lines)

"""Per-slice metrics (eval.slices): the headline split cut by a column's values or by text length, each slice's
metrics with bootstrap intervals, the worst slice and its gap to the best. A model can be good on average and
poor on a group of inputs; this shows it, and `eval.fail_if: {slice_worst_accuracy: "< 0.7"}` can gate on it."""

from __future__ import annotations

from typing import Any

import numpy as np

from lftrain.errors import DataError
from lftrain.evaluation.bootstrap import bootstrap_ci


def check_slices(recipe, data) -> None:
    """Before the model loads: every slice column was read along with the split the slices are taken of."""
    split = data.test if data.test is not None else data.eval
    if not recipe.eval.slices:
        return
    if split is None:
        raise DataError("eval.slices needs a test or eval split to cut into slices")
    for spec in recipe.eval.slices:
        if f"column:{spec.column}" not in split.fields:
            raise DataError(f"eval.slices: task type {recipe.task.type} does not carry other columns along (column "
                            f"'{spec.column}'); slices work on table data (CSV, JSON, Parquet)")


def slice_keys(spec, values: list[Any]) -> list[str]:
    """Each row's slice under `spec`: its value, or the bin its number / text length falls in."""
    if spec.by == "value" and not spec.bins:
        return ["(missing)" if v is None or v == "" else str(v) for v in values]
    edges = spec.bins
    labels = [f"< {edges[0]:g}"] + [f"{a:g}–{b:g}" for a, b in zip(edges, edges[1:])] + [f">= {edges[-1]:g}"]
    out = []
    for v in values:
        if spec.by == "words":
            x = len(str(v or "").split())
        elif spec.by == "chars":
            x = len(str(v or ""))
        else:
            try:
                x = float(v)
            except (TypeError, ValueError):
                out.append("(not a number)")
                continue
        out.append(labels[int(np.searchsorted(edges, x, side="right"))])
    return out


def slice_table(spec, keys: list[str], score, metric_names: list[str], cfg) -> dict[str, Any]:
    """`score(indices) -> {metric: value}` on each slice; intervals for `metric_names`; the worst and best slice
    (by the first metric) among slices of at least eval.slice_min_rows rows, and their gap."""
    keys_arr = np.asarray(keys)
    groups = []
    for key in sorted(set(keys), key=lambda k: (-int((keys_arr == k).sum()), k)):
        idx = np.flatnonzero(keys_arr == key)
        metrics = {k: v for k, v in score(idx).items() if isinstance(v, float) and k in metric_names}
        group: dict[str, Any] = {"slice": key, "n": len(idx), "metrics": metrics}
        if cfg.bootstrap_samples and len(idx) >= cfg.slice_min_rows:
            group["intervals"] = {m: bootstrap_ci(lambda sub, m=m, idx=idx: score(idx[sub])[m], len(idx),
                                                  samples=cfg.bootstrap_samples, level=cfg.confidence)
                                  for m in metric_names}
        groups.append(group)
    lead = metric_names[0]
    ranked = [g for g in groups if g["n"] >= cfg.slice_min_rows and lead in g["metrics"]]
    table: dict[str, Any] = {"column": spec.column, "by": spec.by, "metric": lead, "groups": groups}
    if ranked:  # the lead metrics (accuracy, F1, Pearson, ...) are all higher-is-better
        worst = min(ranked, key=lambda g: g["metrics"][lead])
        best = max(ranked, key=lambda g: g["metrics"][lead])
        table.update(worst=worst["slice"], best=best["slice"], worst_value=worst["metrics"][lead],
                     gap=abs(best["metrics"][lead] - worst["metrics"][lead]))
    return table


def slice_evidence(cfg, task, examples, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
    """{slice name: slice_table} for every eval.slices entry, scored by task.metrics on the rows of each slice
    (None when the model's outputs are not one per example row, e.g. windows of long QA contexts); `cfg`: the
    recipe's eval section."""
    if not cfg.slices or examples is None or len(labels) != len(examples) or len(logits) != len(labels):
        return None

    def score(idx: np.ndarray) -> dict[str, Any]:
        return task.metrics(logits[idx], labels[idx])

    names = [k for k, v in score(np.arange(len(labels))).items() if isinstance(v, float)]
    lead = [m for m in ("accuracy", "macro_f1", "micro_f1", "pearson", "f1", "exact_match") if m in names][:2]
    if not lead:
        return None
    return {spec.name: slice_table(spec, slice_keys(spec, examples.fields[f"column:{spec.column}"]), score, lead,
                                   cfg) for spec in cfg.slices}


def gate_values(slices: dict[str, Any]) -> dict[str, float]:
    """`slice_worst_<metric>` (the lowest over every slice table) and `slice_gap_<metric>` (the largest gap)."""
    values: dict[str, float] = {}
    for table in slices.values():
        if "worst" not in table:
            continue
        m = table["metric"]
        worst = values.get(f"slice_worst_{m}")
        values[f"slice_worst_{m}"] = table["worst_value"] if worst is None else min(worst, table["worst_value"])
        values[f"slice_gap_{m}"] = max(values.get(f"slice_gap_{m}", 0.0), table["gap"])
    return values

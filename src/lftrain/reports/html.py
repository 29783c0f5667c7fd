"""report.html: one self-contained page (inline CSS, figures as base64 PNG data URIs, no scripts, no network)
that a person reads to judge a run. Built from the run directory's saved files alone (`lft report RUN`)."""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any

from lftrain.files import write_text_atomic
from lftrain.reports import plots
from lftrain.reports.runfiles import RunFiles, read_run

log = logging.getLogger("lftrain")

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;
display:block;margin:.6em 0}.muted{color:#666;font-size:.9em}.bad{color:#b00020;font-weight:bold}
.good{color:#1b5e20;font-weight:bold}pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em}"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return _e(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return _e(v)


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fig(draw, *args, alt: str) -> str:
    """A figure drawn by reports/plots.py; nothing when matplotlib is not installed (the report says so once)."""
    from lftrain.extras import available

    return _img(draw(*args), alt) if available("matplotlib") else ""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(c) if not isinstance(c, str) else _e(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _headline(run: RunFiles) -> str:
    ev, out = run.evidence, []
    level = round(100 * ev.get("bootstrap", {}).get("level", 0.95))
    for split, s in ev.get("splits", {}).items():
        rows = []
        for name, ci in s.get("intervals", {}).items():
            rows.append([name, ci["value"], f"[{ci['low']:.4f}, {ci['high']:.4f}]"])
        if not rows:
            rows = [[k, v, ""] for k, v in s["metrics"].items() if isinstance(v, float)]
        out.append(f"<h3>{_e(split)} split (n = {s['metrics'].get('n')})</h3>"
                   + _table(["metric", "value", f"{level}% bootstrap interval"], rows))
    if not out:  # not a classification run (or one from before evidence): the metrics the task logged
        for split, m in run.final_metrics().items():
            out.append(f"<h3>{_e(split)} split</h3>" + _table(
                ["metric", "value"], [[k, v] for k, v in m.items() if isinstance(v, (int, float))]))
    return "".join(out) or "<p class=muted>No final evaluation was recorded.</p>"


def _calibration(run: RunFiles) -> str:
    ev = run.evidence
    s = ev.get("splits", {}).get("test") or next(iter(ev.get("splits", {}).values()), None)
    if not s or "calibration" not in s:  # not a classifier's evidence
        return ""
    cal = s["calibration"]
    t = ev.get("temperature") or {}
    rows = [[k, cal["before"][k], cal.get("after", {}).get(k, "")] for k in ("ece", "ece_mass", "brier", "nll")]
    note = (f"<p>Temperature T = {t['temperature']:.4f}, fitted on the eval split (n = {t['n']}) by minimising NLL "
            f"({t['nll_before']:.4f} → {t['nll_after']:.4f} there); applied by <code>lft predict</code>.</p>"
            if t else f"<p class=muted>{_e(ev.get('temperature_note', 'No temperature scaling.'))}</p>")
    rel = s.get("reliability", {})
    fig = _fig(plots.reliability, rel["before"], rel.get("after"), t.get("temperature"), alt="reliability diagram") \
        if rel.get("before") else ""
    return ("<h2>Calibration</h2>" + note + _table(["metric (lower is better)", "before", "after temperature"], rows)
            + "<p class=muted>ECE: equal-width bins; ece_mass: equal-mass bins.</p>" + fig)


def _classes(run: RunFiles) -> str:
    s = run.evidence.get("splits", {}).get("test") or next(iter(run.evidence.get("splits", {}).values()), None)
    m = s["metrics"] if s else next((v for v in run.final_metrics().values() if "per_class" in v), None)
    if not m or "per_class" not in m:
        return ""
    pc = m["per_class"]
    rows = [[n, c["precision"], c["recall"], c["f1"], c["support"]] for n, c in pc.items()]
    names = list(pc)
    return ("<h2>Per class</h2>" + _table(["class", "precision", "recall", "f1", "support"], rows)
            + _fig(plots.per_class, pc, alt="per-class bars")
            + (_fig(plots.confusion, m["confusion_matrix"], names, alt="confusion matrix") if "confusion_matrix" in m
               else ""))


def _ood(run: RunFiles) -> str:
    o = run.evidence.get("ood")
    if not o:
        return ""
    rows = [[k, v["auroc"], v["fpr_at_95_tpr"]] for k, v in o["scores"].items()]
    fig = ""
    ood, ind = run.arrays("ood"), run.arrays(o["in_split"])
    if ood is not None and ind is not None:
        from lftrain.evaluation.ood import msp, neg_energy

        fig = _fig(plots.ood_histograms, {"msp": msp(ind["logits"]), "energy": neg_energy(ind["logits"])},
                   {"msp": ood["msp"], "energy": ood["energy"]}, alt="OOD score histograms")
    return (f"<h2>Out-of-distribution detection</h2><p>{_e(o['in_split'])} split against {_e(o['data'])} "
            f"(n = {o['n']}). AUROC: 1 separates perfectly, 0.5 is chance; FPR@95: share of OOD inputs accepted "
            "when 95% of in-distribution inputs are.</p>" + _table(["score", "AUROC", "FPR@95TPR"], rows) + fig)


def _speed(run: RunFiles) -> str:
    rows = []
    lat = run.evidence.get("latency")
    if lat:
        rows += [["latency p50 (batch 1)", f"{lat['latency_p50_ms']:.2f} ms"],
                 ["latency p95 (batch 1)", f"{lat['latency_p95_ms']:.2f} ms"],
                 [f"throughput (batch {lat['throughput_batch']})", f"{lat['throughput_per_s']:.1f} examples/s"],
                 ["timed with", f"{lat['threads']} threads, {lat['precision']}, {lat['device']}"]]
    end = run.train_end()
    if end:
        rows += [["training time", f"{end.get('train_runtime', 0):.1f} s"],
                 ["training speed", f"{end.get('train_samples_per_second', 0):.1f} samples/s"],
                 ["optimiser steps", str(end.get("step"))]]
    return ("<h2>Speed on this machine</h2>" + _table(["", ""], rows)) if rows else ""


def _privacy(run: RunFiles) -> str:
    """train.privacy: the ε spent and the mechanism's settings (manifest.json)."""
    p = run.manifest.get("privacy")
    if not p or p.get("epsilon_spent") is None:
        return ""
    rows = [["ε spent (δ)", f"{p['epsilon_spent']:.4f} ({p['delta']:g})"], ["target ε", f"{p['target_epsilon']:g}"],
            ["steps", p["steps"]], ["noise multiplier", f"{p['noise_multiplier']:.4f}"],
            ["per-example clipping norm", f"{p['max_grad_norm']:g}"],
            ["Poisson sample rate (expected batch)", f"{p['sample_rate']:.5f} ({p['expected_batch_size']})"],
            ["accountant", f"{p['accountant']} ({p.get('library', 'opacus')})"]]
    return ("<h2>Differential privacy</h2><p>DP-SGD: the guarantee covers each training row; the eval split "
            "(checkpoint selection) and the test split are not protected.</p>" + _table(["", ""], rows))


def _gate(run: RunFiles) -> str:
    g = run.evidence.get("gate")
    if not g:
        return ""
    rows = [[c["metric"], c["condition"], c["value"] if c["value"] is not None else "not computed",
             "FAIL" if c["failed"] else "pass"] for c in g["checks"]]
    cls = "good" if g["passed"] else "bad"
    return (f"<h2>CI gate (eval.fail_if)</h2><p class={cls}>{'passed' if g['passed'] else 'FAILED'}</p>"
            + _table(["metric", "fails if", "value", ""], rows))


def _slices(run: RunFiles) -> str:
    """eval.slices: one table per slicing, the worst ranked slice marked."""
    out = []
    for name, t in (run.evidence.get("slices") or {}).items():
        metrics = list(t["groups"][0]["metrics"]) if t["groups"] else []
        rows = []
        for g in t["groups"]:
            cells = [f"{g['metrics'][m]:.4f}" + (f" [{g['intervals'][m]['low']:.4f}, {g['intervals'][m]['high']:.4f}]"
                                                  if m in g.get("intervals", {}) else "") for m in metrics]
            mark = " (worst)" if g["slice"] == t.get("worst") else " (best)" if g["slice"] == t.get("best") else ""
            rows.append([g["slice"] + mark, g["n"], *cells])
        verdict = (f"<p>Worst slice by {_e(t['metric'])}: <b>{_e(t['worst'])}</b> ({t['worst_value']:.4f}), "
                   f"{t['gap']:.4f} below the best ({_e(t['best'])}).</p>" if "worst" in t else
                   "<p class=muted>No slice has enough rows to rank (eval.slice_min_rows).</p>")
        out.append(f"<h3>by {_e(name)}</h3>" + verdict + _table(["slice", "n", *metrics], rows))
    return ("<h2>Slices</h2>" + "".join(out)) if out else ""


def render(run: RunFiles) -> str:
    import yaml

    from lftrain.extras import available, install_hint

    model = run.recipe.get("model", {}).get("path", "?")
    task = run.recipe.get("task", {}).get("type", "?")
    versions = ", ".join(f"{k} {v}" for k, v in run.manifest.get("packages", {}).items())
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(run.name)} — lftrain report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{_e(run.name)}</h1><p class=muted>{_e(task)} · base model {_e(model)} · started "
        f"{_e(run.manifest.get('created', '?'))} · run directory {_e(run.path)}</p>",
        "" if available("matplotlib") else f"<p class=muted>Figures need matplotlib: {_e(install_hint('matplotlib'))}"
        ".</p>",
        "<h2>Results</h2>", _headline(run), _privacy(run), _gate(run), _calibration(run), _classes(run), _slices(run),
        _ood(run),
        "<h2>Training curves</h2>", _fig(plots.curves, run.records, alt="training curves")
        or "<p class=muted>No training curves drawn.</p>", _speed(run),
        "<h2>Recipe</h2><pre>" + _e(yaml.safe_dump(run.recipe, sort_keys=False)) + "</pre>",
        f"<p class=muted>seed {_e(run.manifest.get('seed'))} · {_e(run.manifest.get('threads'))} threads · "
        f"precision {_e(run.manifest.get('precision'))} · {_e(versions)}</p>",
        "</body></html>"]
    return "\n".join(p for p in parts if p)


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """(Re)write report.html and model_card.md of a run from its saved files; returns their paths."""
    from lftrain.reports.model_card import render_model_card

    run = read_run(run_dir)
    out, card = run.path / "report.html", run.path / "model_card.md"
    write_text_atomic(out, render(run))
    write_text_atomic(card, render_model_card(run))
    log.info("report: %s; model card: %s", out, card)
    return out, card

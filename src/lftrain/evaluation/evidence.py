"""Evidence by default: what every finished run measures about its final model, written to the run directory.

    evidence.json        metrics per split, calibration before/after temperature scaling, bootstrap intervals,
                         OOD detection, latency, the eval.fail_if verdict
    evidence/SPLIT.npz   the logits and labels it was computed from (so `lft report` and `lft compare` need
                         no model), evidence/ood.npz the OOD logits
    model/calibration.json  the fitted temperature, applied by `lft predict`
    report.html, model_card.md  (lftrain.reports)

Tasks that are not classification (no labels, no class logits) get the report of what exists: curves and
the metrics their task computed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lftrain.evaluation.bootstrap import bootstrap_ci, classification_metric_fns
from lftrain.evaluation.calibration import calibration_metrics, fit_temperature, reliability_bins
from lftrain.evaluation.metrics import softmax
from lftrain.evaluation.slices import slice_evidence
from lftrain.files import save_arrays, write_json_atomic

if TYPE_CHECKING:  # the orchestrator hands these over; evaluation sits below tasks and config in the layers
    import torch

    from lftrain.config.schema import Recipe
    from lftrain.data.examples import Examples
    from lftrain.data.prepare import PreparedData
    from lftrain.tasks.base import Task

log = logging.getLogger("lftrain")
CALIBRATION_FILE = "calibration.json"


@dataclass
class RunOutputs:
    """What the end of a training run hands over: the final model and the data it is judged on."""

    run_dir: Path
    recipe: Recipe
    task: Task
    model: torch.nn.Module
    tokenizer: Any  # the task's processor (a tokenizer, image processor, feature extractor...)
    encoded: dict[str, dict[str, np.ndarray]]  # split -> task.encode() output
    examples: dict[str, Examples | None]  # split -> its rows (texts for timing; None: no such split)
    infer: Callable[[dict[str, np.ndarray]], np.ndarray]  # encoded -> logits, in input order
    precision: str = "fp32"
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # splits already inferred
    ood: Examples | None = None  # read from eval.ood
    device: torch.device | str = "cpu"
    pad_id: int = 0
    step: int = 0  # the final model's optimiser step
    log_metrics: Callable[[dict], None] = lambda record: None  # a line for metrics.jsonl (the run directory's)
    load_base: Callable[[], torch.nn.Module] | None = None  # the model before fine-tuning (base comparisons)
    data: PreparedData | None = None  # what the run trained on


def read_ood(recipe, task):
    """Read and validate `eval.ood` (before any model loads, like all input); None when not set."""
    if not recipe.eval.ood:
        return None
    from lftrain.data.readers import read_table
    from lftrain.errors import DataError

    cfg, data = recipe.eval, recipe.data
    table = read_table(cfg.ood, data.format, data.encoding)
    if cfg.ood_filter:
        table = filter_rows(table, cfg.ood_filter)
    table = _drop_empty(table, task.text_columns())
    if not table.rows:
        raise DataError("no rows" + (f" match eval.ood_filter {cfg.ood_filter}" if cfg.ood_filter else ""),
                        file=cfg.ood)
    return task.extract(table, normalize=data.normalize_whitespace, with_labels=False)


def _drop_empty(table, columns: list[str]):
    """OOD rows with an empty text carry no signal (and unlabelled corpora have them: 14 of Rotten Tomatoes'
    plot rows): skip them, saying which, rather than fail the run after training."""
    from lftrain.data.readers import is_missing

    empty = [i for i, row in enumerate(table.rows) if any(is_missing(row.get(c)) for c in columns)]
    if not empty:
        return table
    log.warning("%s: skipped %d OOD rows with empty text (rows %s%s)", table.file, len(empty),
                ", ".join(str(table.row_numbers[i]) for i in empty[:5]), ", ..." if len(empty) > 5 else "")
    keep = sorted(set(range(len(table.rows))) - set(empty))
    return _subset(table, keep)


def _subset(table, keep: list[int]):
    from dataclasses import replace

    return replace(table, rows=[table.rows[i] for i in keep], row_numbers=[table.row_numbers[i] for i in keep],
                   lines=[table.lines[i] for i in keep])


def filter_rows(table, where: dict[str, str]):
    """The rows of `table` whose columns equal `where`'s values (as text), keeping each row's place."""
    from lftrain.errors import DataError

    missing = [c for c in where if c not in table.columns]
    if missing:
        raise DataError(f"eval.ood_filter names column '{missing[0]}', which the file does not have (columns: "
                        f"{', '.join(table.columns)})", file=table.file)
    keep = [i for i, row in enumerate(table.rows) if all(str(row.get(c)) == str(v) for c, v in where.items())]
    return _subset(table, keep)


def is_classification(logits: np.ndarray | None, encoded: dict[str, np.ndarray]) -> bool:
    return logits is not None and logits.ndim == 2 and "labels" in encoded and len(encoded["labels"]) == len(logits)


def split_evidence(logits: np.ndarray, labels: np.ndarray, metrics: dict[str, Any], cfg,
                   temperature: float | None) -> dict[str, Any]:
    """Metrics, calibration before/after temperature, reliability bins and bootstrap intervals of one split."""
    before = calibration_metrics(logits, labels, 1.0, cfg.calibration_bins)
    out: dict[str, Any] = {"metrics": metrics, "calibration": {"before": before}, "reliability": {
        "before": reliability_bins(softmax(logits.astype(np.float64)), labels, cfg.calibration_bins)}}
    if temperature is not None:
        out["calibration"]["after"] = calibration_metrics(logits, labels, temperature, cfg.calibration_bins)
        out["reliability"]["after"] = reliability_bins(softmax(logits.astype(np.float64) / temperature), labels,
                                                       cfg.calibration_bins)
    if cfg.bootstrap_samples and len(labels):
        out["intervals"] = {name: bootstrap_ci(fn, len(labels), samples=cfg.bootstrap_samples, level=cfg.confidence)
                            for name, fn in classification_metric_fns(logits, labels,
                                                                           cfg.calibration_bins).items()}
    return out


def _latency(out: RunOutputs) -> dict[str, Any] | None:
    from lftrain.evaluation.latency import measure_latency

    ex = out.examples.get("test") or out.examples.get("eval")
    if ex is None or not len(ex):
        return None
    if "text" not in ex.fields:  # images, audio: time batches of the already-encoded split
        from lftrain.evaluation.latency import measure_latency_encoded

        split = "test" if out.examples.get("test") else "eval"
        return measure_latency_encoded(out.model, out.task, out.encoded[split], precision=out.precision)
    return measure_latency(out.model, out.tokenizer, ex.fields["text"], text_pairs=ex.fields.get("text_pair"),
                           max_length=getattr(out.task.config, "max_length", 128), precision=out.precision)


def classification_final(task, out: RunOutputs) -> dict[str, dict[str, Any]]:
    """Final metrics of each split in eval.splits (logged and printed), then the evidence of the final model."""
    results: dict[str, dict[str, Any]] = {}
    for split in out.recipe.eval.splits:
        if split in out.encoded:
            out.logits[split] = out.infer(out.encoded[split])
            results[split] = task.score(out.logits[split], out.encoded[split])
            log_final(task, out, split, results[split])
    write_evidence(out)
    return results


def metric_final(task, out: RunOutputs, *, intervals: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The final evaluation of a task scored by `task.metrics(logits, labels)` on outputs other than one class per
    row (regression, multi-label): each split in eval.splits logged and printed, bootstrap intervals of the metrics
    named in `intervals`, latency and the gate."""
    cfg = out.recipe.eval
    results: dict[str, dict[str, Any]] = {}
    splits: dict[str, dict[str, Any]] = {}
    slices = None
    headline = next((s for s in ("test", "eval") if s in cfg.splits and s in out.encoded), None)
    for split in cfg.splits:
        if split not in out.encoded:
            continue
        logits, labels = out.infer(out.encoded[split]), out.encoded[split]["labels"]
        results[split] = task.score(logits, out.encoded[split])
        log_final(task, out, split, results[split])
        splits[split] = {"intervals": _intervals(task, logits, labels, intervals, cfg)} \
            if cfg.bootstrap_samples and len(labels) else {}
        if cfg.slices and split == headline:
            slices = slice_evidence(out.recipe.eval, task, out.examples.get(split), logits, labels)
    write_metric_evidence(out, results, splits, slices)
    return results


def log_final(task, out: RunOutputs, split: str, metrics: dict[str, Any]) -> None:
    """A final evaluation's line in metrics.jsonl, and its table on the console."""
    out.log_metrics({"event": "eval", "split": split, "step": out.step, "final": True, **metrics})
    print(task.format_metrics(metrics, f"{split} metrics ({out.run_dir})"), flush=True)


def _intervals(task, logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...], cfg) -> dict[str, Any]:
    """Bootstrap intervals of the named metrics of task.metrics, resampling rows."""
    def metric(name: str) -> Callable[[np.ndarray], float]:
        return lambda idx: float(task.metrics(logits[idx], labels[idx])[name])

    return {name: bootstrap_ci(metric(name), len(labels), samples=cfg.bootstrap_samples, level=cfg.confidence)
            for name in names}


def write_metric_evidence(out: RunOutputs, results: dict[str, dict[str, Any]],
                          extra: dict[str, dict] | None = None, slices: dict | None = None) -> dict[str, Any]:
    """Evidence of a model judged on other than one class per row (language models, regression, multi-label): its
    final metrics per split (with `extra[split]`, e.g. intervals), latency and the eval.fail_if verdict (the
    orchestrator writes the report from them)."""
    cfg = out.recipe.eval
    evidence: dict[str, Any] = {"task": out.recipe.task.type, "labels": None,
                                "bootstrap": {"samples": cfg.bootstrap_samples, "level": cfg.confidence, "seed": 0},
                                "splits": {s: {"metrics": m, **(extra or {}).get(s, {})}
                                           for s, m in results.items() if s in ("eval", "test")}}
    if slices is not None:
        evidence["slices"] = slices
    if cfg.latency and not out.task.generative and evidence["splits"]:
        from lftrain.evaluation.latency import measure_latency_encoded

        split = "test" if "test" in evidence["splits"] else "eval"
        evidence["latency"] = measure_latency_encoded(out.model, out.task, out.encoded[split],
                                                      precision=out.precision)
    if cfg.fail_if:
        from lftrain.evaluation.gate import check_gate

        evidence["gate"] = check_gate(cfg.fail_if, evidence)
    write_json_atomic(Path(out.run_dir) / "evidence.json", evidence)
    return evidence


def write_evidence(out: RunOutputs) -> dict[str, Any]:
    """Measure, write evidence.json (+ arrays, model/calibration.json), print a summary; returns it."""
    cfg = out.recipe.eval
    run_dir = Path(out.run_dir)
    labels = getattr(getattr(out.task, "labels", None), "names", None)
    evidence: dict[str, Any] = {"task": getattr(out.task.config, "type", None), "labels": labels, "splits": {},
                                "bootstrap": {"samples": cfg.bootstrap_samples, "level": cfg.confidence, "seed": 0}}
    logits = dict(out.logits)
    if labels:  # a classification task: make sure eval (for the temperature) and test are inferred
        for split in ("eval", "test"):
            if split in out.encoded and split not in logits and "labels" in out.encoded[split]:
                logits[split] = out.infer(out.encoded[split])
    classified = {s: lg for s, lg in logits.items() if labels and is_classification(lg, out.encoded[s])}

    temperature = None
    if classified and cfg.temperature_scaling and "eval" in classified:
        fit = fit_temperature(classified["eval"], out.encoded["eval"]["labels"])
        temperature = fit["temperature"]
        evidence["temperature"] = {**fit, "fitted_on": "eval"}
        (run_dir / "model" / CALIBRATION_FILE).write_text(json.dumps(evidence["temperature"], indent=1))
    elif classified and cfg.temperature_scaling:
        evidence["temperature"] = None
        evidence["temperature_note"] = "no eval split to fit a temperature on"

    for split, lg in classified.items():
        y = out.encoded[split]["labels"]
        evidence["splits"][split] = split_evidence(lg, y, out.task.metrics(lg, y), cfg, temperature)
        save_arrays(run_dir / "evidence" / f"{split}.npz", logits=lg.astype(np.float32), labels=y)
    if classified and cfg.slices:
        split = "test" if "test" in classified else next(iter(classified))
        evidence["slices"] = slice_evidence(out.recipe.eval, out.task, out.examples.get(split), classified[split],
                                            out.encoded[split]["labels"])

    if out.ood is not None and classified:
        in_split = "test" if "test" in classified else next(iter(classified))
        from lftrain.evaluation.ood import msp, neg_energy, ood_metrics

        ood_logits = out.infer(out.task.encode(out.tokenizer, out.ood))
        where = ", ".join(f"{k}={v}" for k, v in cfg.ood_filter.items())  # eval.ood_filter, when set
        evidence["ood"] = {"data": f"{cfg.ood} [{where}]" if where else cfg.ood, "n": len(out.ood),
                           "in_split": in_split, "scores": ood_metrics(classified[in_split], ood_logits)}
        save_arrays(run_dir / "evidence" / "ood.npz", logits=ood_logits.astype(np.float32),
                     msp=msp(ood_logits), energy=neg_energy(ood_logits))
    if cfg.latency and classified:
        evidence["latency"] = _latency(out)
    if out.recipe.train.privacy is not None:  # the ε spent (training/privacy.py wrote it into manifest.json)
        evidence["privacy"] = json.loads((run_dir / "manifest.json").read_text()).get("privacy")
    if cfg.fail_if:
        from lftrain.evaluation.gate import check_gate

        evidence["gate"] = check_gate(cfg.fail_if, evidence)
    write_json_atomic(run_dir / "evidence.json", evidence)
    print(summary(evidence), flush=True)
    return evidence


def _ci(s: dict[str, Any], name: str) -> str:
    ci = s.get("intervals", {}).get(name)
    value = s["metrics"].get(name, s["calibration"]["before"].get(name)) if ci is None else ci["value"]
    if value is None:
        return f"{name} n/a"
    return f"{name} {value:.4f}" + (f" [{ci['low']:.4f}, {ci['high']:.4f}]" if ci else "")


def summary(evidence: dict[str, Any]) -> str:
    """The evidence in a few printed lines."""
    lines = []
    level = round(100 * evidence["bootstrap"]["level"])
    for split, s in evidence["splits"].items():
        lines.append(f"{split} evidence ({level}% bootstrap intervals, n={s['metrics'].get('n')}):")
        lines.append("  " + "  ".join(_ci(s, m) for m in ("accuracy", "macro_f1", "weighted_f1")))
        cal = s["calibration"]
        line = f"  calibration: ECE {cal['before']['ece']:.4f} (equal-mass {cal['before']['ece_mass']:.4f}), " \
               f"NLL {cal['before']['nll']:.4f}, Brier {cal['before']['brier']:.4f}"
        if "after" in cal:
            t = evidence["temperature"]["temperature"]
            line += f"; after temperature {t:.3f}: ECE {cal['after']['ece']:.4f} " \
                    f"(equal-mass {cal['after']['ece_mass']:.4f}), NLL {cal['after']['nll']:.4f}"
        lines.append(line)
    if evidence.get("ood"):
        o = evidence["ood"]
        lines.append(f"OOD ({o['data']}, n={o['n']}): " + "  ".join(
            f"{k} AUROC {v['auroc']:.4f} FPR@95 {v['fpr_at_95_tpr']:.4f}" for k, v in o["scores"].items()))
    for name, t in (evidence.get("slices") or {}).items():
        if "worst" in t:
            lines.append(f"slices by {name}: worst {t['worst']} ({t['metric']} {t['worst_value']:.4f}), "
                         f"{t['gap']:.4f} below the best ({t['best']}); {len(t['groups'])} slices")
    if evidence.get("latency"):
        lat = evidence["latency"]
        lines.append(f"latency: p50 {lat['latency_p50_ms']:.2f} ms, p95 {lat['latency_p95_ms']:.2f} ms at batch 1; "
                     f"throughput {lat['throughput_per_s']:.1f} examples/s at batch {lat['throughput_batch']} "
                     f"({lat['threads']} threads, {lat['precision']})")
    if evidence.get("gate"):
        g = evidence["gate"]
        lines.append("eval.fail_if: " + ("passed" if g["passed"] else "FAILED") + " (" + ", ".join(
            f"{c['metric']} {'n/a' if c['value'] is None else format(c['value'], '.4g')} (fails if {c['condition']})"
            f"{': FAIL' if c['failed'] else ''}" for c in g["checks"]) + ")")
    return "\n".join(lines)


def stored_temperature(model_dir: str | Path) -> float:
    """The temperature saved with a model (model/calibration.json), 1.0 when there is none."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    t = json.loads(path.read_text()).get("temperature")
    return float(t) if t else 1.0

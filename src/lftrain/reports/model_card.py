"""model_card.md in Hugging Face's format: YAML front matter (license, base_model, datasets, metrics,
model-index with the test results) and the sections people look for. Built from saved run files only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lftrain.methods import METHODS
from lftrain.models.adaptation import ADAPTATIONS
from lftrain.reports.runfiles import RunFiles
from lftrain.tasks.base import task_class


def _base_card_meta(base_dir: str | None) -> dict[str, Any]:
    """Front matter of the base model's own README (license, language), when it ships one."""
    if not base_dir:
        return {}
    readme = Path(base_dir) / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
        if text.startswith("---"):
            meta = yaml.safe_load(text.split("---", 2)[1])
            return meta if isinstance(meta, dict) else {}
    except (OSError, yaml.YAMLError, IndexError):
        pass
    return {}


def _results(run: RunFiles) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(split, metrics, intervals) of the headline split: test if present."""
    splits = run.evidence.get("splits") or {}
    if splits:
        split = "test" if "test" in splits else next(iter(splits))
        return split, splits[split]["metrics"], splits[split].get("intervals")
    final = run.final_metrics()
    split = "test" if "test" in final else next(iter(final), "")
    return split, final.get(split, {}), None


def card_data(run: RunFiles):
    """The card's metadata as huggingface_hub's ModelCardData, test results as EvalResults: the Hub's own code
    writes `model-index`, so it is valid by construction (ModelCard.load reads it back)."""
    from huggingface_hub import EvalResult, ModelCardData

    base = _base_card_meta(run.manifest.get("base_model", {}).get("path"))
    task = run.recipe.get("task", {}).get("type", "")
    pipeline = task_class(run.recipe.get("task")).pipeline_tag  # what the Hub files the model under
    data = run.recipe.get("data", {})
    split, metrics, _ = _results(run)
    scalar = {k: v for k, v in metrics.items() if isinstance(v, float)}
    dataset = str(data.get("test") or data.get("train"))
    results = [EvalResult(task_type=pipeline or task, task_name=task, dataset_type=dataset,
                          dataset_name=f"{data.get('train')} ({split} split)", dataset_split=split, metric_type=k,
                          metric_value=round(v, 6), metric_name=f"{split} {k}") for k, v in sorted(scalar.items())]
    return ModelCardData(license=base.get("license", "unknown"), language=base.get("language"),
                         base_model=base.get("base_model") or run.recipe.get("model", {}).get("path"),
                         library_name="transformers", pipeline_tag=pipeline,
                         tags=["lftrain", "fine-tuned"] + ([task] if task else []),
                         datasets=[v for k, v in data.items() if k in ("train", "eval", "test") and v] or None,
                         metrics=sorted(scalar) or None, model_name=run.name, eval_results=results or None)


def _evaluation(run: RunFiles) -> list[str]:
    split, metrics, intervals = _results(run)
    if not metrics:
        return ["No final evaluation was recorded."]
    level = round(100 * run.evidence.get("bootstrap", {}).get("level", 0.95))
    lines = [f"On the {split} split (n = {metrics.get('n', '?')}); intervals are {level}% bootstrap "
             "intervals over test examples.", "", "| metric | value | interval |", "|---|---|---|"]
    for k, v in metrics.items():
        if isinstance(v, float):
            ci = (intervals or {}).get(k)
            lines.append(f"| {k} | {v:.4f} | " + (f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else "") + " |")
    s = run.evidence.get("splits", {}).get(split, {})
    cal, t = s.get("calibration"), run.evidence.get("temperature")
    if cal:
        after = cal.get("after")
        lines += ["", f"Calibration: ECE {cal['before']['ece']:.4f} (equal-mass {cal['before']['ece_mass']:.4f}), "
                  f"Brier {cal['before']['brier']:.4f}, NLL {cal['before']['nll']:.4f}"
                  + (f"; after temperature scaling (T = {t['temperature']:.3f}, fitted on the eval split, stored "
                     f"in `model/calibration.json`): ECE {after['ece']:.4f}, NLL {after['nll']:.4f}."
                     if after and t else ".")]
    ood = run.evidence.get("ood")
    if ood:
        lines += ["", f"Out-of-distribution detection against `{ood['data']}` (n = {ood['n']}): " + "; ".join(
            f"{k} AUROC {v['auroc']:.4f}, FPR@95 {v['fpr_at_95_tpr']:.4f}" for k, v in ood["scores"].items()) + "."]
    lat = run.evidence.get("latency")
    if lat:
        lines += ["", f"Latency on the training machine: p50 {lat['latency_p50_ms']:.2f} ms, p95 "
                  f"{lat['latency_p95_ms']:.2f} ms per example at batch 1; {lat['throughput_per_s']:.1f} "
                  f"examples/s at batch {lat['throughput_batch']} ({lat['threads']} threads, {lat['precision']})."]
    return lines


def _privacy(run: RunFiles) -> list[str]:
    """train.privacy: the (ε, δ) the run spent and how (manifest.json's `privacy`)."""
    p = run.manifest.get("privacy")
    if not p or p.get("epsilon_spent") is None:
        return []
    return ["## Privacy", "",
            f"Trained with differential privacy (DP-SGD, {p.get('library', 'Opacus')}): (ε = {p['epsilon_spent']:.2f}, "
            f"δ = {p['delta']:g}) spent over {p['steps']} steps (target ε {p['target_epsilon']:g}, {p['accountant']} "
            f"accountant), each example's gradient clipped at {p['max_grad_norm']:g}, Gaussian noise multiplier "
            f"{p['noise_multiplier']:.3f}, Poisson sampling at rate {p['sample_rate']:.4g}. The guarantee covers each "
            "training row; the eval split (checkpoint selection) and the test split are not protected.", ""]


def render_model_card(run: RunFiles) -> str:
    r = run.recipe
    task, data, train = r.get("task", {}), r.get("data", {}), r.get("train", {})
    labels = run.evidence.get("labels") or run.manifest.get("labels")
    stats = run.manifest.get("data_stats", {})
    counts = ", ".join(f"{k.replace('_rows', '')} {v}" for k, v in stats.items() if k.endswith("_rows"))
    lines = [
        "---", card_data(run).to_yaml().strip(), "---", "",
        f"# {run.name}", "",
        f"A `{task.get('type', '?')}` model fine-tuned with lftrain from `{r.get('model', {}).get('path')}` "
        f"({r.get('adaptation', {}).get('type', ADAPTATIONS.default)} adaptation, "
        f"{r.get('method', {}).get('type', METHODS.default)} method).", "",
        "## Intended use", "",
        f"Predicting {('one of ' + ', '.join(f'`{x}`' for x in labels)) if labels else 'the task output'} for inputs "
        f"like the training data (column `{task.get('text', 'text')}`). Use the calibrated probabilities "
        "(`lft predict` applies the stored temperature) when decisions depend on confidence.", "",
        "## Limitations", "",
        "- Evaluated only on held-out data from the same source as the training data; expect lower accuracy on "
        "other domains (see the out-of-distribution results when present).",
        "- Metrics carry sampling uncertainty: read the intervals, not only the point values.",
        "- Inherits the biases and licence terms of the base model and of the training data.", "",
        "## Training data", "",
        f"- train: `{data.get('train')}`" + (f" (rows: {counts})" if counts else ""),
        f"- eval: `{data.get('eval') or 'stratified ' + str(data.get('eval_fraction')) + ' of train'}`; test: "
        f"`{data.get('test') or 'stratified ' + str(data.get('test_fraction')) + ' of train'}`",
        *(["- data card (sources, hashes, licences, data-check results): [data_card.md](data_card.md)"]
          if (Path(run.path) / "data_card.md").is_file() else []), "",
        "## Training procedure", "",
        f"epochs {train.get('epochs')}, learning rate {train.get('lr')}, batch size {train.get('batch_size')}, "
        f"seed {train.get('seed')}, precision {run.manifest.get('precision', train.get('precision'))}. "
        "The full resolved recipe is `recipe.yaml`; versions and data checksums are in `manifest.json`.", "",
        *_privacy(run),
        "## Evaluation results", "", *_evaluation(run), "",
        "## How to use", "", "```bash", f"lft predict {run.path} --input new.csv --output predictions.jsonl", "```", ""]
    return "\n".join(lines)

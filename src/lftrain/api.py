"""The public Python API. Every `lft` command is one call into this module.

    import lftrain
    result = lftrain.train("recipes/rotten-tomatoes-minilm.yaml", overrides=["train.epochs=1"])
    metrics = lftrain.evaluate(result.run_dir, data="data/test.csv")
    lftrain.predict(result.run_dir, input="new.csv", output="preds.jsonl")
    lftrain.api.export(result.run_dir, output="exported/", merge=True)   # plain HF model; merges adapters
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lftrain.config import load_recipe

log = logging.getLogger("lftrain")


def train(recipe: str | Path | dict | Any, overrides: list[str] | None = None, *, new_run: bool = False,
          allow_recipe_change: bool = False):
    """Fine-tune as the recipe says; returns a TrainResult (run_dir, model_dir, metrics per split, speed).

    `recipe` is a YAML path, a mapping, or a Recipe. Re-running an unfinished run resumes it; a finished
    run is never overwritten (`new_run=True` starts a new one beside it).
    """
    from lftrain.config.schema import Recipe
    from lftrain.training.run import train_run

    if isinstance(recipe, Recipe):
        resolved = recipe if not overrides else load_recipe(data=recipe.model_dump(mode="json"), overrides=overrides)
    elif isinstance(recipe, dict):
        resolved = load_recipe(data=recipe, overrides=overrides)
    else:
        resolved = load_recipe(recipe, overrides)
    return train_run(resolved, new_run=new_run, allow_recipe_change=allow_recipe_change)


class _TrainedModel:
    """A finished run's model, tokenizer and task, ready for inference."""

    def __init__(self, run_or_model: str | Path) -> None:
        from lftrain.config.loader import load_recipe as _load
        from lftrain.models.trained import load_trained_model, resolve_run
        from lftrain.tasks import build_task
        from lftrain.training.precision import pick_device, resolve_precision
        from lftrain.training.run import set_threads

        self.run_dir, self.model_dir = resolve_run(run_or_model)
        self.recipe = _load(self.run_dir / "recipe.yaml")
        self.task = build_task(self.recipe.task)
        set_threads(self.recipe.train.threads)
        # A plain model directory, or an adapter on its base model: either way task.labels is set from it.
        trained = load_trained_model(self.model_dir, self.task, base_fallback=self.recipe.model.path)
        self.tokenizer = trained.tokenizer
        self.device = pick_device()
        self.precision, _ = resolve_precision(self.recipe.train.precision, self.device)
        self.model = trained.model.to(self.device)
        self.model.eval()

    def read(self, path: str | Path, *, with_labels: bool, encoding: str | None = None):
        from lftrain.data.prepare import read_examples

        cfg = self.recipe.data.model_copy(update={"format": "auto", **({"encoding": encoding} if encoding else {})})
        return read_examples(str(path), cfg, self.task, with_labels=with_labels)

    def logits(self, examples):
        from lftrain.evaluation.inference import infer_logits

        encoded = self.task.encode(self.tokenizer, examples)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return infer_logits(self.model, self.task, encoded, batch_size=self.recipe.train.eval_batch_size,
                            precision=self.precision, device=self.device, pad_id=pad), encoded


def evaluate(run: str | Path, data: str | Path, *, encoding: str | None = None,
             output: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a trained run on a labelled data file (same columns as the recipe's data)."""
    from lftrain.evaluation.metrics import format_table

    tm = _TrainedModel(run)
    examples = tm.read(data, with_labels=True, encoding=encoding)
    for i, raw in enumerate(examples.fields["label"]):
        tm.task.labels.index(raw, examples, i)  # unknown labels: a clear error naming the row
    logits, encoded = tm.logits(examples)
    metrics = tm.task.metrics(logits, encoded["labels"])
    print(format_table(metrics, tm.task.labels.names, f"metrics on {data}"), flush=True)
    if output:
        Path(output).write_text(json.dumps(metrics, indent=1))
    return metrics


def predict(run: str | Path, input: str | Path, output: str | Path | None = None, *,
            encoding: str | None = None) -> list[dict[str, Any]]:
    """Label and class probabilities for each row of `input`, in input order; written as JSON lines to `output`."""
    tm = _TrainedModel(run)
    examples = tm.read(input, with_labels=False, encoding=encoding)
    logits, _ = tm.logits(examples)
    preds = tm.task.predictions(logits)
    rows = [{"row": where[1], **p} for where, p in zip(examples.where, preds)]
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(out)
        log.info("wrote %d predictions to %s", len(rows), out)
    return rows


def export(run: str | Path, output: str | Path, merge: bool = False) -> Path:
    """Write a trained run's model to `output` as a plain Hugging Face model directory (safetensors, tokenizer,
    id2label). Adapter runs need `merge=True`: the adapter is folded into the base weights. Returns `output`."""
    from lftrain.models.export import export_model

    return export_model(run, output, merge=merge)

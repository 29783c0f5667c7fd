"""A finished run loaded for inference: what `lft evaluate`, `lft predict`, `lft generate` and `lft chat` work
from (adapter runs are loaded on their base model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lftrain.errors import InputError
from lftrain.models.trained import load_trained_model, resolve_run


class LoadedRun:
    """A finished run's recipe, task, model and tokenizer, ready for inference: what `lft evaluate`, `lft predict`,
    `lft generate` and `lft chat` work from (adapter runs are loaded on their base model)."""

    def __init__(self, run_or_model: str | Path) -> None:
        from lftrain.config.loader import load_recipe as _load
        from lftrain.models.precision import pick_device, resolve_precision, set_threads
        from lftrain.progress import activity
        from lftrain.tasks.base import build_task

        self.run_dir, self.model_dir = resolve_run(run_or_model)
        self.recipe = _load(self.run_dir / "recipe.yaml")
        self.task = build_task(self.recipe.task)
        set_threads(self.recipe.train.threads)
        # A plain model directory, or an adapter on its base model: either way task.labels is set from it.
        with activity(f"loading {self.model_dir}"):
            trained = load_trained_model(self.model_dir, self.task, base_fallback=self.recipe.model.path)
        self.tokenizer = trained.tokenizer
        self.task.prepare_tokenizer(self.tokenizer)  # e.g. the chat template saved with the model (or the recipe's)
        self.device = pick_device()  # this machine's: a run trained on a GPU is also used on CPUs
        wanted = self.recipe.train.precision
        self.precision, _ = resolve_precision("auto" if wanted == "fp16" and self.device.type == "cpu" else wanted,
                                              self.device)
        from lftrain.models.quantized import is_quantized

        # bitsandbytes placed a quantized base on its device as it loaded (and refuses to move an int8 one)
        self.model = trained.model if is_quantized(trained.model) else trained.model.to(self.device)
        self.model.eval()
        from lftrain.accel import install_for_inference

        install_for_inference(self.model, self.recipe.train.accel)  # the same logits for less work

    def read(self, path: str | Path | list, *, with_labels: bool, encoding: str | None = None):
        from lftrain.data.prepare import read_examples

        cfg = self.recipe.data.model_copy(update={"format": "auto", **({"encoding": encoding} if encoding else {})})
        # A list of files (image/audio prediction input) goes to the task's reader as it is.
        if isinstance(path, (list, tuple)) and self.task.token_inputs:
            raise InputError(f"{self.recipe.task.type} reads one data file, not a list of {len(path)} files")
        return read_examples(path if isinstance(path, (list, tuple)) else str(path), cfg, self.task,
                             with_labels=with_labels)

    def predict(self, examples, *, temperature: float = 1.0) -> list[dict[str, Any]]:
        """`lft predict`'s rows for `examples`: the task's own (`predict_rows`: tasks that decode), else its
        `predictions` of the model's outputs divided by `temperature`, each with its input row number."""
        rows = self.task.predict_rows(self, examples)
        if rows is not None:
            return rows
        logits, encoded = self.logits(examples)
        preds = self.task.predictions(logits / temperature, encoded, examples)
        return [{"row": where[1], **self.task.row_info(examples, i), **p}
                for i, (where, p) in enumerate(zip(examples.where, preds))]

    def evaluate(self, examples) -> dict[str, Any]:
        """`lft evaluate`'s metrics on labelled `examples`: the task's own (`evaluate_rows`), else `score` of the
        model's outputs (unknown labels are an error naming the row)."""
        metrics = self.task.evaluate_rows(self, examples)
        if metrics is not None:
            return metrics
        if self.task.labels is not None:
            for i, raw in enumerate(examples.fields["label"]):
                self.task.labels.index(raw, examples, i)
        logits, encoded = self.logits(examples)
        return self.task.score(logits, encoded)

    def logits(self, examples, *, batch_size: int | None = None):
        """(the model's outputs, the encoded rows) for `examples`, `batch_size` rows per forward (default: the
        recipe's train.eval_batch_size)."""
        from lftrain.evaluation.inference import infer_logits

        encoded = self.task.encode(self.tokenizer, examples)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return infer_logits(self.model, self.task, encoded, batch_size=batch_size or self.recipe.train.eval_batch_size,
                            precision=self.precision, device=self.device, pad_id=pad), encoded

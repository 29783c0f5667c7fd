"""The method contract: how parameters learn, as hooks the one orchestrator (orchestrator/run.py) calls in order.

A method turns a batch into a summed loss (`__call__`); the shared `fit()` does the rest. Everything else is an
optional hook with the supervised default here, so the orchestrator never probes with `hasattr` and never compares
method names. A new method is a subclass registered by short name (`@METHODS.register("name")`).

Order of the hooks in a run: `__init__` (vets the method's own inputs, before any model loads) ->
`training_examples` -> `prepare_tokenizer` -> `load_model` -> `prepare` -> per step `__call__`, per evaluation
`before_eval` + `evaluate` -> `finish` -> `save` -> `final_evaluation`. `plan_stages` runs before all of that, when
the recipe is expanded into runs (a method may be several runs: self-training's rounds).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lftrain.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lftrain.config.base import Section
    from lftrain.data.examples import Examples
    from lftrain.evaluation.evidence import RunOutputs
    from lftrain.tasks.base import Batches, Task

METHODS: Registry[type[Method]] = Registry("method", section="method")


class Method:
    Config: ClassVar[type[Section]]
    type_name: ClassVar[str]  # the name it is registered under (set by METHODS.register)
    uses_unlabeled: ClassVar[bool] = False  # reads data.unlabeled (others ignore it, with a warning)
    several_runs: ClassVar[bool] = False  # expanded into several runs by `plan_stages` even without `stages:`
    saves_task_model: ClassVar[bool] = True  # the saved model is the task's (a classifier), not e.g. a language model
    streams: ClassVar[bool] = False  # trains on rows streamed from disk (data.streaming): needs none in memory
    private_training: ClassVar[bool] = False  # train.privacy applies: it reads nothing outside the clipped gradients
    lower_is_better: ClassVar[frozenset[str]] = frozenset()  # its own metrics where lower is better (the task's too)

    def __init__(self, config, task: Task) -> None:
        self.config, self.task = config, task

    # ---- a recipe into runs -----------------------------------------------------------------------------
    @classmethod
    def plan_stages(cls, name: str, recipe: dict, start: str, start_is_classifier: bool,
                    add: Callable[[str, dict], Path]) -> tuple[str, bool]:
        """Add this stage's run(s) with `add(name, recipe dict) -> run directory`, starting from the model `start`;
        return the model the next stage starts from and whether it is a classifier of the recipe's classes."""
        recipe["model"]["path"] = start
        return str(add(name, recipe) / "model"), cls.saves_task_model

    # ---- data and model -----------------------------------------------------------------------------------
    def training_examples(self, data) -> Examples:
        """The rows fit() trains on, before `prepare` adds to them: the labelled training rows."""
        return data.train

    def prepare_tokenizer(self, tokenizer, source) -> None:
        self.task.prepare_tokenizer(tokenizer)

    def load_model(self, source, *, trust_remote_code: bool, attention: str) -> torch.nn.Module:
        return self.task.load_model(source, trust_remote_code=trust_remote_code, attention=attention)

    def prepare(self, model: torch.nn.Module, train_encoded: dict[str, np.ndarray], *, data, recipe,
                encode: Callable[[Examples], dict[str, np.ndarray]], precision: str, device,
                tokenizer) -> tuple[dict[str, np.ndarray], Batches]:
        """(training arrays, what fit() batches them with): a method may add rows (pseudo-labels), per-row
        targets (a teacher's outputs) or change the batches (masking). Default: the rows and the task as they are."""
        return train_encoded, self.task

    def manifest(self) -> dict[str, Any]:
        """What the method adds to manifest.json (after `prepare`)."""
        return {}

    # ---- each step ----------------------------------------------------------------------------------------
    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss *summed* over the batch's loss units (the loop normalises by their count over the step)."""
        outputs = model(**self.task.model_inputs(batch))
        return {"loss_sum": self.task.loss_sum(outputs, batch)}

    # ---- evaluation and the end -----------------------------------------------------------------------------
    def selection_metric(self, metric: str) -> str:
        """The evaluation metric that picks the best checkpoint, given `train.metric`."""
        return metric

    @classmethod
    def higher_is_better(cls, metric: str, task: type[Task]) -> bool:
        """A metric's direction under this method and `task` (best checkpoint, early stopping, `lft tune`)."""
        return metric not in cls.lower_is_better and task.higher_is_better(metric)

    def before_eval(self, model: torch.nn.Module) -> None:  # noqa: B027  (optional hook)
        """Called before each evaluation during training (contrastive-few-shot refits its head)."""

    def evaluate(self, model: torch.nn.Module, encoded: dict[str, np.ndarray], **kw: Any) -> dict[str, Any]:
        """Metrics of the eval split during training (see Task.evaluate for the keywords)."""
        return self.task.evaluate(model, encoded, **kw)

    def finish(self, model: torch.nn.Module) -> None:  # noqa: B027  (optional hook)
        """Drop what only training needed (distill's projection) before the model is saved."""

    def save(self, model: torch.nn.Module, tokenizer, out: Path, source) -> None:
        """Write the final model: a plain Hugging Face directory, or for adapter runs peft's format."""
        from lftrain.models.trained import save_trained_model

        save_trained_model(model, tokenizer, out, source)

    def final_evaluation(self, out: RunOutputs) -> dict[str, dict[str, Any]]:
        return self.task.final_evaluation(out)


def build_method(config, task: Task) -> Method:
    """The registered method for a recipe's `method` section."""
    return METHODS.get(config.type)(config, task)

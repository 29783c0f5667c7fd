"""Supervised learning on labelled examples: the task's loss on the model's outputs."""

from __future__ import annotations

from typing import Literal

import torch

from lftrain.config.base import Section
from lftrain.methods import METHODS


@METHODS.register("supervised")
class Supervised:
    class Config(Section):
        type: Literal["supervised"] = "supervised"

    def __init__(self, config: Config, task) -> None:
        self.config, self.task = config, task

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Returns the loss *summed* over the batch's loss units (the loop normalises by their count)."""
        outputs = model(**self.task.model_inputs(batch))
        return {"loss_sum": self.task.loss_sum(outputs, batch), "logits": outputs.logits}

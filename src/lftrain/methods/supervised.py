"""Supervised learning on labelled examples: the task's loss on the model's outputs (the contract's defaults)."""

from __future__ import annotations

from typing import Literal

from lftrain.config.base import Section
from lftrain.methods.base import METHODS, Method


@METHODS.register("supervised", default=True)
class Supervised(Method):
    class Config(Section):
        type: Literal["supervised"] = "supervised"

    streams = True
    private_training = True

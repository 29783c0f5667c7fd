"""Adaptations decide which parameters learn. Registered by short name (`adaptation.type`)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from lftrain.config.base import Section
from lftrain.registry import Registry

ADAPTATIONS: Registry = Registry("adaptation")


@ADAPTATIONS.register("full")
class FullFineTuning:
    """Every parameter of the model trains."""

    class Config(Section):
        type: Literal["full"] = "full"

    def __init__(self, config: Config) -> None:
        self.config = config

    def apply(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model


def build_adaptation(config: Section):
    return ADAPTATIONS.get(config.type)(config)

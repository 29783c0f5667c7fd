"""The memory plan of a recipe, before any weight is loaded (`lft plan RECIPE`; `train.memory_plan`)."""

from lftrain.plan.memory import MemoryPlan, MemoryPlanError, available_memory_mb, check, predict, suggestions
from lftrain.plan.render import render

__all__ = ["MemoryPlan", "MemoryPlanError", "available_memory_mb", "check", "predict", "render", "suggestions"]

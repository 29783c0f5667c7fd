"""lftrain: adapt pre-trained models to your task with labelled and unlabelled data — fast on the hardware you have."""

__version__ = "0.1.0"

from lftrain.api import evaluate, export, predict, train  # noqa: E402

__all__ = ["__version__", "evaluate", "export", "predict", "train"]

"""lftrain: adapt pre-trained models to your task with labelled and unlabelled data — fast on the hardware you have."""

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "export", "predict", "train"]


def __getattr__(name: str):
    # `lftrain.train` & co. import torch and transformers on first use, not on `import lftrain`: the `lft` command
    # chooses its memory allocator (accel/allocator.py) and prints its help before paying that (~1.2 s).
    if name in ("api", "evaluate", "export", "predict", "train"):
        api = importlib.import_module("lftrain.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'lftrain' has no attribute {name!r}")

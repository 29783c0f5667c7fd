"""lftrain: adapt pre-trained models to your task with labelled and unlabelled data — fast on the hardware you have."""

import importlib
import logging

# peft imports bitsandbytes whenever it is installed, and bitsandbytes then warns that it cannot fetch a Hub kernel
# it does not need (it has its own CPU kernels): noise at every start, nothing for the user to act on.
for _name in ("bitsandbytes", "kernels"):
    logging.getLogger(_name).setLevel(logging.ERROR)

__version__ = "0.1.0"

# every CLI command as a Python function (lftrain/api.py)
_API = ("bench", "chat", "check_data", "compare", "evaluate", "export", "fix_data", "generate", "plan", "predict",
        "report", "serve", "train", "tune", "tune_report", "ui")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    # `lftrain.train` & co. import torch and transformers on first use, not on `import lftrain`: the `lft` command
    # chooses its memory allocator (accel/allocator.py) and prints its help before paying that (~1.2 s).
    if name == "api" or name in _API:
        api = importlib.import_module("lftrain.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'lftrain' has no attribute {name!r}")

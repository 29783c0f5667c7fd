"""Optional dependencies: the core install trains and evaluates text classification and SFT; the extras bring the
rest (`pip install 'lftrain[vision]'`, `[audio]`, `[export]`, `[tune]`, `[gguf]`, `[report]`, `[checks]`,
`[postgres]`, `[tracking]`, `[serve]`, `[ui]`, `[privacy]`, `[quantize]`, or `[all]`). A feature whose extra is
missing fails with the command that installs it; the report's figures and the near-duplicate check step aside with a
note instead, so a default run works on the core alone.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lftrain.errors import InputError

# importable module -> (its PyPI name, the extra that brings it)
EXTRAS: dict[str, tuple[str, str]] = {
    "PIL": ("pillow", "vision"),
    "soundfile": ("soundfile", "audio"),
    "jiwer": ("jiwer", "audio"),
    "onnx": ("onnx", "export"),
    "onnxscript": ("onnxscript", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "optuna": ("optuna", "tune"),
    "gguf": ("gguf", "gguf"),
    "matplotlib": ("matplotlib", "report"),
    "datasketch": ("datasketch", "checks"),
    "psycopg2": ("psycopg2-binary", "postgres"),
    "tensorboard": ("tensorboard", "tracking"),
    "mlflow": ("mlflow-skinny", "tracking"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "gradio": ("gradio", "ui"),
    "opacus": ("opacus", "privacy"),
    "bitsandbytes": ("bitsandbytes", "quantize"),
}


def install_hint(module: str) -> str:
    package, extra = EXTRAS[module]
    return f"pip install 'lftrain[{extra}]' (or pip install {package})"


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def need(module: str, feature: str) -> ModuleType:
    """Import an optional module for `feature`, or fail saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{feature} needs the package {EXTRAS[module][0]}, which is not installed: "
                         f"{install_hint(module)}") from None

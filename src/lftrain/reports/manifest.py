"""manifest.json: everything needed to reproduce or audit a run."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from lftrain.files import sha256_file

_PACKAGES = ("lftrain", "torch", "transformers", "tokenizers", "safetensors", "numpy", "scikit-learn", "peft",
             "accelerate", "datasets", "pydantic", "pyyaml")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(cwd: Path) -> dict[str, Any] | None:
    """The commit of the git checkout the run was started from, if any (and whether it had local changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def build_manifest(*, seed: int, threads: int, precision: str, precision_reason: str, device: str,
                   data_files: dict[str, Path], model_dir: Path, model_files: list[Path],
                   model_hub: dict | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_commit(Path.cwd()),
        "seed": seed,
        "threads": threads,
        "precision": precision,
        "precision_reason": precision_reason,
        "device": device,
        "determinism": {
            "torch_threads": torch.get_num_threads(),
            "note": "bitwise-equal results need the same seed, thread count, precision, hardware and package versions",
        },
        "data": {role: {"path": str(p), "sha256": sha256_file(p, cached=True), "bytes": p.stat().st_size}
                 for role, p in data_files.items()},
        "base_model": {"path": str(model_dir), **({"hub": model_hub} if model_hub else {}),
                       "files": {str(f.relative_to(model_dir)): sha256_file(f, cached=True) for f in model_files}},
        **(extra or {}),
    }


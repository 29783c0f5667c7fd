"""manifest.json: everything needed to reproduce or audit a run."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from lftrain.files import write_json_atomic

_PACKAGES = ("lftrain", "torch", "transformers", "tokenizers", "safetensors", "numpy", "scikit-learn", "peft",
             "accelerate", "datasets", "pydantic", "pyyaml")


def sha256_file(path: Path, *, cached: bool = False) -> str:
    """Hex sha256 of a file's bytes. `cached=True` (for input data and base-model files, which one run hashes
    for the manifest, the resume fingerprint and the data checks, and a tuning study once per trial) reuses the
    digest while the file's identity, size and mtime are unchanged; checksum *verification* never caches."""
    if cached:
        st = Path(path).stat()
        return _sha256_cached(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    return _sha256(path)


@functools.lru_cache(maxsize=4096)
def _sha256_cached(path: str, inode: int, size: int, mtime_ns: int) -> str:
    return _sha256(Path(path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, data)

"""The run directory: the product's memory. A finished run is never overwritten; an unfinished one resumes."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from lftrain.errors import RunStateError

STATUS = "run.json"


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def recipe_differences(old_yaml: str, new_yaml: str) -> list[str]:
    old, new = _flatten(yaml.safe_load(old_yaml) or {}), _flatten(yaml.safe_load(new_yaml) or {})
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    # layout
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def recipe_file(self) -> Path:
        return self.path / "recipe.yaml"

    def status(self) -> dict:
        f = self.path / STATUS
        return json.loads(f.read_text()) if f.is_file() else {}

    def set_status(self, status: str, **extra: Any) -> None:
        data = {**self.status(), "status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
        tmp = self.path / f".{STATUS}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path / STATUS)

    def is_finished(self) -> bool:
        return self.status().get("status") == "finished"

    def log_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_file.is_file():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    # lifecycle
    def lock(self) -> None:
        """One process per run: a second `lft train` on the same directory stops instead of corrupting it."""
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunStateError(f"{self.path}: another process is training this run") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _next_free(path: Path) -> Path:
    k = 2
    while (cand := path.with_name(f"{path.name}-{k}")).exists():
        k += 1
    return cand


def open_run(path: str | Path, recipe_yaml: str, *, new_run: bool = False,
             allow_recipe_change: bool = False) -> tuple[RunDir, bool]:
    """Create, or reopen for resuming, the run directory. Returns (run, resuming)."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        run = RunDir(path)
        if not (path / STATUS).is_file():
            raise RunStateError(f"{path} exists and is not an lftrain run directory; choose another output.dir")
        if run.is_finished() or new_run:
            if not new_run:
                raise RunStateError(
                    f"{path} holds a finished run; it is never overwritten. Pass --new-run to start a new run "
                    f"in {_next_free(path)}, or set output.dir")
            path = _next_free(path)
        else:
            diffs = recipe_differences(run.recipe_file.read_text(), recipe_yaml) if run.recipe_file.is_file() else []
            if diffs and not allow_recipe_change:
                raise RunStateError(f"{path} is an unfinished run of a different recipe; resuming would mix them:\n  "
                                    + "\n  ".join(diffs) + "\nPass --allow-recipe-change to resume anyway, or "
                                    "--new-run to start afresh")
            run.lock()
            if diffs:
                run.recipe_file.write_text(recipe_yaml)
            return run, True
    path.mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    run.lock()
    run.recipe_file.write_text(recipe_yaml)
    run.set_status("running", created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return run, False

"""The run directory: the product's memory. A finished run is never overwritten; an unfinished one resumes."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from lftrain.errors import DiskFullError, RunStateError

STATUS = "run.json"
SAMPLES = "samples.jsonl"
log = logging.getLogger("lftrain")


# Lock file descriptors this process holds. A forked child (a data-loader worker) shares the lock's open file
# description, so a worker outliving a killed trainer would keep the run locked: children close them at once.
_HELD_LOCKS: set[int] = set()


def _close_locks_in_child() -> None:
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_locks_in_child)


def _disk_full(exc: OSError, path: Path) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFullError(f"{path}: no space left on the device; free some space and run `lft train` again to "
                            "resume from the newest checkpoint") from None


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
        self.trackers: list = []  # training/tracking.py: views of metrics.jsonl (TensorBoard, MLflow)

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
        try:
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path / STATUS)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if status == "failed":  # already failing (often: the disk is full); keep the original error
                log.warning("could not record the failure in %s: %s", self.path / STATUS, exc)
                return
            _disk_full(exc, self.path)
            raise
        if status in ("finished", "failed") and self.trackers:
            from lftrain.training.tracking import call_each, run_files

            call_each(self.trackers, "close", status, run_files(self.path))
            self.trackers = []

    def is_finished(self) -> bool:
        return self.status().get("status") == "finished"

    def log_metrics(self, record: dict[str, Any]) -> None:
        self._append(self.metrics_file, record)
        if self.trackers:
            from lftrain.training.tracking import call_each

            self.trackers = call_each(self.trackers, "log", record)

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_file)

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            _disk_full(exc, path)
            raise

    # the audit of data order (train.log_samples): which examples each optimiser step used
    @property
    def samples_file(self) -> Path:
        return self.path / SAMPLES

    def log_samples(self, step: int, indices) -> None:
        self._append(self.samples_file, {"step": step, "examples": [int(i) for i in indices]})

    def trim_samples(self, step: int) -> None:
        """Drop lines after the checkpoint a resumed run starts from: those steps run again."""
        if self.samples_file.is_file():
            kept = [r for r in read_jsonl(self.samples_file) if r["step"] <= step]
            tmp = self.samples_file.with_name(f".{SAMPLES}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.samples_file)

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
        _HELD_LOCKS.add(fd)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            _HELD_LOCKS.discard(self._lock_fd)
            os.close(self._lock_fd)
            self._lock_fd = None


def read_jsonl(path: Path) -> list[dict]:
    """Records of an append-only log. A last line cut short by a kill or a full disk is dropped, not fatal."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise RunStateError(f"{path}: line {i + 1} is not valid JSON; the file was edited or damaged") from None
            log.warning("%s: dropping an incomplete last line (the previous process was interrupted mid-write)", path)
    return out


def fingerprint(files: dict[str, Path]) -> dict[str, str]:
    """sha256 of each input data file, keyed `data.<role>`: a resumed run must see the same bytes."""
    from lftrain.files import sha256_file

    return {f"data.{role} sha256": sha256_file(p, cached=True) for role, p in sorted(files.items())}


def _next_free(path: Path) -> Path:
    k = 2
    while (cand := path.with_name(f"{path.name}-{k}")).exists():
        k += 1
    return cand


def open_run(path: str | Path, recipe_yaml: str, *, new_run: bool = False, allow_recipe_change: bool = False,
             inputs: dict[str, Path] | None = None) -> tuple[RunDir, bool]:
    """Create, or reopen for resuming, the run directory. Returns (run, resuming).

    A resume is refused when the recipe or the bytes of an input data file (`inputs`: role -> file) differ
    from those the run started with, unless `allow_recipe_change`; the refusal lists every difference."""
    path = Path(path)
    prints = fingerprint(inputs or {})
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
            old_prints = run.status().get("inputs", {})
            diffs += [f"{k}: {old_prints.get(k, '?')[:12]}… -> {v[:12]}… (the file's contents changed)"
                      for k, v in prints.items() if k in old_prints and old_prints[k] != v]
            if diffs and not allow_recipe_change:
                raise RunStateError(f"{path} is an unfinished run of a different recipe; resuming would mix them:\n  "
                                    + "\n  ".join(diffs) + "\nPass --allow-recipe-change to resume anyway, or "
                                    "--new-run to start afresh")
            run.lock()
            if diffs:
                run.recipe_file.write_text(recipe_yaml)
                run.set_status("running", inputs=prints)
            return run, True
    path.mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    run.lock()
    run.recipe_file.write_text(recipe_yaml)
    run.set_status("running", created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), inputs=prints)
    return run, False


@contextmanager
def marked_failed_on_error(run) -> Iterator[None]:
    """Around a run's work: an error marks the run `failed` in its status file (a Ctrl-C leaves it as it was:
    interrupted, resumable), and the run directory's lock is always released."""
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):
            run.set_status("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        run.unlock()

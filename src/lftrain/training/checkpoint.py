"""Checkpoints that survive a kill at any instant.

A checkpoint is written into `checkpoints/.tmp-step-N/`, each file fsynced, then a `MANIFEST.json`
with every file's sha256 is written last, and the directory is renamed to `step-N` (atomic on POSIX).
So `step-N` either exists complete or not at all; loading verifies the checksums and falls back to the
previous checkpoint if one does not match. Rotation never deletes the newest complete checkpoint nor
the best one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from lftrain.reports.manifest import sha256_file

log = logging.getLogger("lftrain")
MANIFEST = "MANIFEST.json"


@dataclass
class TrainState:
    """Where training is. Together with the seed it determines the rest of the run exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    micro_batch_size: int | None = None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def save_checkpoint(root: Path, model: torch.nn.Module, optimizer, scheduler, state: TrainState) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:08d}"
    tmp = root / f".tmp-step-{state.step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
    files = sorted(p for p in tmp.iterdir())
    for p in files:
        _fsync(p)
    manifest = {"step": state.step, "files": {p.name: sha256_file(p) for p in files}}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _fsync(tmp / MANIFEST)
    if final.exists():  # a re-save of the same step (e.g. final save right after an eval save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    return final


def verify(path: Path) -> str | None:
    """None if the checkpoint is complete and intact, else what is wrong with it."""
    mf = path / MANIFEST
    if not mf.is_file():
        return "no MANIFEST.json (incomplete save)"
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "MANIFEST.json is corrupt"
    for name, digest in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if sha256_file(f) != digest:
            return f"{name} does not match its checksum (truncated or corrupted)"
    return None


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")), key=lambda p: p.name)


def clean_temporary(root: Path) -> None:
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                log.info("removing unfinished checkpoint %s", p)
                shutil.rmtree(p, ignore_errors=True)


def latest_good(root: Path) -> Path | None:
    """The newest checkpoint whose checksums hold; warns about each newer one that does not."""
    for path in reversed(list_checkpoints(root)):
        problem = verify(path)
        if problem is None:
            return path
        log.warning("checkpoint %s is unusable: %s; falling back to the previous one", path, problem)
    return None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler) -> TrainState:
    load_model(model, str(path / "model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return TrainState(**json.loads((path / "state.json").read_text()))


def load_weights(path: Path, model: torch.nn.Module) -> None:
    load_model(model, str(path / "model.safetensors"))


def rotate(root: Path, keep: int, protect: set[int]) -> None:
    """Delete all but the newest `keep` complete checkpoints, never those whose step is in `protect`."""
    complete = [p for p in list_checkpoints(root) if (p / MANIFEST).is_file()]
    for p in complete[:-keep] if keep > 0 else []:
        if int(p.name.split("-")[1]) not in protect:
            shutil.rmtree(p, ignore_errors=True)


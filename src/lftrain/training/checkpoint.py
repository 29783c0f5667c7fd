"""Checkpoints that survive a kill at any instant.

A checkpoint is written into `checkpoints/.tmp-step-N/`, each file fsynced, then a `MANIFEST.json`
with every file's sha256 is written last, and the directory is renamed to `step-N` (atomic on POSIX).
So `step-N` either exists complete or not at all; loading verifies the checksums and falls back to the
previous checkpoint if one does not match. Rotation never deletes the newest complete checkpoint nor
the best one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import torch
from safetensors.torch import load_model

from lftrain.errors import DiskFullError, LftError, RunStateError
from lftrain.files import sha256_file

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
    skipped_steps: int = 0  # steps whose loss was not finite and whose update was skipped (train.nonfinite: skip)
    loss_scale: dict | None = None  # fp16: the gradient scaler's state (scale, growth tracker), resumed exactly


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    np_state = cast(tuple, np.random.get_state(legacy=True))  # (name, keys, pos, has_gauss, cached)
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def _write(path: Path, produce: Callable[[BinaryIO], object]) -> None:
    """Write one checkpoint file and fsync it: the single place where checkpoint bytes reach the disk."""
    with open(path, "wb") as f:
        produce(f)
        f.flush()
        os.fsync(f.fileno())


def _json(data) -> Callable[[BinaryIO], object]:
    return lambda f: f.write(json.dumps(data, indent=1).encode())


_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                       torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int64: "I64",
                       torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint64: "U64",
                       torch.uint32: "U32", torch.uint16: "U16", torch.uint8: "U8", torch.bool: "BOOL"}


def _safetensors(model: torch.nn.Module) -> Callable[[BinaryIO], object]:
    """The safetensors file save_model would write (tied duplicates dropped), streamed tensor by tensor.
    safetensors' `save` builds the whole file as bytes first (a copy of every tensor, then the file), and that
    spike set the peak of a freeze4 run on tcmalloc: 1,242 MB, against 1,157 streamed. The format is the
    documented one (8-byte header length, JSON header, data); `load_file` reads it back in the tests."""
    from safetensors.torch import _remove_duplicate_names

    sd = _checkpointed_state(model)
    metadata = {PARTIAL: "trained"} if len(sd) < len(model.state_dict()) else {}
    for kept, removed in _remove_duplicate_names(sd).items():
        for name in removed:
            metadata[name] = kept
            del sd[name]
    tensors = {name: t.detach().contiguous() for name, t in sorted(sd.items())}
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it

    def produce(f: BinaryIO) -> None:
        f.write(len(text).to_bytes(8, "little") + text)
        for t in tensors.values():
            if t.numel():
                f.write(t.cpu().reshape(-1).view(torch.uint8).numpy().data)

    return produce


PARTIAL = "lftrain_partial"  # metadata of a checkpoint holding what trains (and the buffers), not the frozen base


def _frozen_base(model: torch.nn.Module) -> set[str]:
    """State names of an adapter run's frozen base: it never changes and is loaded again from the base model on
    resume, so a checkpoint need not copy it (a 1B base is 2.5 GB per checkpoint in bf16; a quantized one cannot
    be written back through load_state_dict at all). Empty for other runs: their checkpoint holds everything."""
    from lftrain.models.layers import unwrap

    if unwrap(model) is model:  # not an adapter (peft) model
        return set()
    kept = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    kept |= {n for n, _ in model.named_buffers(remove_duplicate=False)}  # e.g. batch-norm statistics
    return set(model.state_dict()) - kept


def _checkpointed_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    frozen = _frozen_base(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def load_model_state(model: torch.nn.Module, file: Path) -> None:
    """Load a checkpoint's model.safetensors; a partial one (an adapter run's) must cover everything that trains."""
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        partial = (f.metadata() or {}).get(PARTIAL)
    missing, unexpected = load_model(model, str(file), strict=not partial)
    if partial:
        lost = sorted(set(missing) - _frozen_base(model))
        if lost or unexpected:
            raise RuntimeError(f"{file}: does not match the model (missing {lost[:3]}, unexpected {unexpected[:3]})")


def _disk_full(exc: BaseException | None) -> bool:
    """ENOSPC/EDQUOT, also when a serialiser re-raised it as something else (torch.save's zip writer turns it
    into a RuntimeError "unexpected pos", keeping the OSError as its context)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def save_checkpoint(root: Path, model: torch.nn.Module, optimizer, scheduler, state: TrainState) -> Path:
    """Write `step-N` atomically; on a full disk remove the partial copy and raise DiskFullError (older
    checkpoints are untouched: rotation only runs after a successful save)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{state.step:08d}"
    try:
        return _save(root, tmp, model, optimizer, scheduler, state)
    except (OSError, RuntimeError) as exc:
        if not _disk_full(exc):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(root).free
        raise DiskFullError(f"{root}: no space left on the device while saving the checkpoint of step {state.step} "
                            f"({free} bytes free). The previous checkpoints are intact; free some space and run "
                            "`lft train` again to resume") from None


def _save(root: Path, tmp: Path, model, optimizer, scheduler, state: TrainState) -> Path:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    _write(tmp / "model.safetensors", _safetensors(model))
    _write(tmp / "optimizer.pt", lambda f: torch.save(optimizer.state_dict(), f))
    return seal(root, tmp, scheduler, state)


def seal(root: Path, tmp: Path, scheduler, state: TrainState, **manifest: object) -> Path:
    """Complete a checkpoint whose weights and optimiser state are already in `tmp`: add the RNG, scheduler and
    train state, fsync every file, write the MANIFEST of checksums last, and rename `tmp` to `step-N`.
    Shared by ordinary and sharded (FSDP) checkpoints, so both have the same completeness guarantee."""
    final = root / f"step-{state.step:08d}"
    _write(tmp / "rng.pt", lambda f: torch.save(rng_state(), f))
    _write(tmp / "scheduler.json", _json(scheduler.state_dict()))
    _write(tmp / "state.json", _json(asdict(state)))
    files = sorted(p for p in tmp.iterdir())
    for p in files:  # files written by other writers (DCP shards) reach the disk too; a no-op for _write's
        _fsync(p)
    # the manifest is written last: a directory without one is an unfinished save
    _write(tmp / MANIFEST, _json({"step": state.step, **manifest,
                                  "files": {p.name: sha256_file(p) for p in files}}))
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
    """Remove the leftovers of saves that were interrupted. A temporary copy that is complete (manifest and
    checksums hold) but whose rename did not happen is promoted instead: it is the newest good checkpoint."""
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if not p.name.startswith(".tmp-"):
            continue
        final = root / p.name[len(".tmp-"):]
        if not final.exists() and verify(p) is None:
            log.info("completing the interrupted save of %s", final.name)
            os.replace(p, final)
        else:
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
    from lftrain.training import dist_checkpoint

    if dist_checkpoint.check_compatible(path, model):  # sharded (FSDP) checkpoint: torch.distributed.checkpoint
        dist_checkpoint.load(path, model, optimizer)
    else:
        load_model_state(model, path / "model.safetensors")
        # weights_only: a checkpoint file is data; a pickle that tries to build arbitrary objects is refused
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
    return TrainState(**json.loads((path / "state.json").read_text()))


def resume_latest(root: Path, model: torch.nn.Module, optimizer, scheduler) -> tuple[Path | None, TrainState]:
    """Load the newest checkpoint that verifies *and* loads; a newer one that fails either is named in a warning
    and skipped (a replaced file with a forged manifest, a pickle payload refused by weights_only, ...)."""
    touched = False  # a failed load may have overwritten part of the model: never train on from that
    for path in reversed(list_checkpoints(root)):
        problem = verify(path)
        if problem is None:
            touched = True
            try:
                return path, load_checkpoint(path, model, optimizer, scheduler)
            except LftError:  # a deliberate refusal (e.g. an incompatible sharded checkpoint) says what to do
                raise
            except Exception as exc:  # noqa: BLE001 -- any other failure to load means: not this checkpoint
                first = str(exc).splitlines()[0][:300] if str(exc) else ""
                problem = f"cannot be loaded ({type(exc).__name__}: {first})"
        log.warning("checkpoint %s is unusable: %s; falling back to the previous one", path, problem)
    if touched:
        raise RunStateError(f"{root}: no checkpoint could be loaded (see the warnings above); start afresh with "
                            "--new-run")
    return None, TrainState()


def load_weights(path: Path, model: torch.nn.Module) -> None:
    from lftrain.training import dist_checkpoint

    if dist_checkpoint.check_compatible(path, model):  # sharded (FSDP) checkpoint, also into one process
        return dist_checkpoint.load_weights(path, model)
    load_model_state(model, path / "model.safetensors")


def save_distributed(ctx, root: Path, model: torch.nn.Module, optimizer, scheduler, state: TrainState, keep: int,
                     protect: set[int]) -> None:
    """A checkpoint of a run on several processes (collective: every rank calls it at the same step). DDP: rank 0
    writes the ordinary checkpoint; FSDP: every rank writes its shard (dist_checkpoint.py), rank 0 seals it."""
    from lftrain.training import dist_checkpoint

    if not ctx.fsdp:
        if ctx.main:
            save_checkpoint(root, model, optimizer, scheduler, state)
            rotate(root, keep, protect)
        ctx.barrier()  # nobody resumes work (or a kill's aftermath) ahead of a half-written checkpoint
        return
    tmp = root / f".tmp-step-{state.step:08d}"
    if ctx.main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    ctx.barrier()
    dist_checkpoint.write_shards(tmp, model, optimizer)
    ctx.barrier()  # every rank's shard is on disk
    if ctx.main:
        seal(root, tmp, scheduler, state, sharded=True)
        rotate(root, keep, protect)
    ctx.barrier()


def rotate(root: Path, keep: int, protect: set[int]) -> None:
    """Delete all but the newest `keep` complete checkpoints, never those whose step is in `protect`."""
    complete = [p for p in list_checkpoints(root) if (p / MANIFEST).is_file()]
    for p in complete[:-keep] if keep > 0 else []:
        if int(p.name.split("-")[1]) not in protect:
            shutil.rmtree(p, ignore_errors=True)


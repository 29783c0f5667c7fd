"""Checkpoints of distributed runs, in the same `checkpoints/step-N/` layout with the same guarantees.

- DDP: parameters and optimiser state are the same on every rank, so rank 0 writes the ordinary
  checkpoint (`checkpoint.save_distributed` -> `save_checkpoint`: safetensors + optimizer.pt). It is a plain
  state dict: it resumes on any number of processes, or on one.
- FSDP: each rank holds a shard. `torch.distributed.checkpoint` (DCP) writes the shards in parallel
  (one `.distcp` file per rank plus `.metadata`) and reshards on load, so it resumes on a different number
  of processes, and a single process loads it without any process group (see `load_weights`).
Either way the files go to a temporary directory that is renamed once complete, with a MANIFEST of
sha256 sums written last, so a kill at any instant leaves either the whole checkpoint or none (checkpoint.py
does that part; this module reads and writes the shards).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from lftrain.errors import InputError

log = logging.getLogger("lftrain")
DCP_METADATA = ".metadata"


def is_sharded(path: Path) -> bool:
    return (path / DCP_METADATA).is_file()


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def write_shards(directory: Path, model: nn.Module, optimizer) -> None:
    """Collective under FSDP: every rank writes its shard of the model and optimiser state into `directory`."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=directory)


def check_compatible(path: Path, model: nn.Module) -> bool:
    """True when `path` is a DCP checkpoint (load it with this module). A plain checkpoint cannot be
    resumed by an FSDP run: its optimizer.pt is keyed by parameter order, not by name."""
    if is_sharded(path):
        return True
    if is_fsdp(model):
        raise InputError(f"{path} was written by a single-process or DDP run; resuming it with "
                         "train.strategy fsdp is not supported. Resume with train.strategy ddp (or one process).")
    return False


def load(path: Path, model: nn.Module, optimizer) -> None:
    """Model and optimiser state from a DCP checkpoint, on any number of processes (resharded), DDP or FSDP or
    one process (the scheduler and loop state are checkpoint.py's)."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    target: dict[str, Any] = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(target, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=target["model"], optim_state_dict=target["optimizer"])


def load_weights(path: Path, model: nn.Module) -> None:
    """Only the model's weights, from a DCP checkpoint, into a sharded or an ordinary model. In a single
    process no process group is needed: DCP reads every shard and assembles the full tensors."""
    target = {"model": get_model_state_dict(model)}
    dcp.load(target, checkpoint_id=path)
    set_model_state_dict(model, target["model"])


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Collective under FSDP: the whole model's weights on CPU, on rank 0 (an empty dict on the others)."""
    return cast(dict[str, torch.Tensor],
                get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))

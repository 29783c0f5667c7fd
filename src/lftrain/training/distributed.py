"""Data-parallel training on several processes through torch.distributed (DDP or FSDP2), on the same loop.

Launched by `torchrun` (or `lft train --nproc N`, which runs torchrun), every process reads the same
recipe and data. Nothing here is home-made communication: torch's process group (gloo on CPU, NCCL on
GPUs), `DistributedDataParallel`, `fully_shard` and `torch.distributed.checkpoint` do the work. What this
module adds is the bookkeeping that keeps a run on N processes equal to the run on one:

- each optimiser step's examples (the batch plan is a pure function of seed and epoch) are split into
  `world` contiguous shards, one per rank: no example is seen twice, none is dropped;
- the loss normaliser is the *global* count of loss units, and the loss is multiplied by `world`
  because DDP and FSDP average gradients: the update is the single-process update;
- every rank runs the same number of forward passes per step (FSDP all-gathers in each one, so a rank
  that skipped one would hang the others): a short shard is padded with zero-weight micro-batches;
- evaluation outputs are computed on a shard of the rows per rank and gathered, so each row counts once;
- only rank 0 writes the run directory (the others get a `QuietRun`) and speaks on the console.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lftrain.data.batching import micro_batches
from lftrain.training.rundir import RunDir

log = logging.getLogger("lftrain")


def launched() -> bool:
    """True inside a process started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class DistContext:
    """This process's place in the job, and the model as the training step must call it."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    strategy: str  # "ddp" | "fsdp"
    backend: str
    forward_model: nn.Module | None = field(default=None, repr=False)
    _padded: bool = field(default=False, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.strategy == "fsdp"

    def describe(self) -> dict:
        return {"world_size": self.world, "strategy": self.strategy, "backend": self.backend,
                "nodes": self.world // max(self.local_world, 1)}

    def threads_per_process(self) -> int:
        """The cores this process may use, shared among the processes of this node."""
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        return max(1, cores // self.local_world)

    # ---- one optimiser step ------------------------------------------------------------------------------

    def step_plan(self, batch_idx: np.ndarray, micro: int) -> tuple[list[np.ndarray], list[float]]:
        micros, weights = step_plan(batch_idx, micro, self.rank, self.world)
        if self.main:  # the plan is a pure function: rank 0 can tell (and log) every rank's padding
            pads = sum(step_plan(batch_idx, micro, r, self.world)[1].count(0.0) for r in range(self.world))
            if pads:  # info the first time (e.g. the short last batch of an epoch), debug afterwards
                log.log(logging.DEBUG if self._padded else logging.INFO,
                        "a step of %d examples over %d processes: %d zero-weight padding micro-batch(es) keep "
                        "every rank at the same number of forward passes; the update is unchanged%s",
                        len(batch_idx), self.world, pads, "" if self._padded else " (said once)")
                self._padded = True
        return micros, weights

    def global_sum(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def grad_sync(self, last: bool):
        """Synchronise gradients only on the step's last micro-batch (accumulate locally before it)."""
        model: Any = self.forward_model  # FSDP2's fully_shard module or DDP
        if self.fsdp:
            model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if last else model.no_sync()

    def seed_step(self, seed: int, step: int) -> None:
        """Dropout randomness from (seed, step, rank): each rank differs, and a resume replays it exactly
        without per-rank RNG files in the checkpoint."""
        torch.manual_seed(int(np.random.SeedSequence([seed, step, self.rank]).generate_state(1)[0]))

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        if self.fsdp:  # gradients are sharded DTensors: torch's clip computes the global norm across ranks
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
            return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        from lftrain.accel.sparse_grads import clip_grad_norm

        return clip_grad_norm(params, max_norm)

    # ---- evaluation ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def infer_logits(self, model: nn.Module, task, encoded: dict[str, np.ndarray], *, batch_size: int,
                     precision: str, device: torch.device, pad_id: int) -> np.ndarray:
        """Outputs for every row, in input order, on every rank; each rank computes a contiguous shard."""
        from lftrain.evaluation.inference import batch_outputs

        n = len(task.lengths(encoded))
        own = np.array_split(np.arange(n), self.world)[self.rank]
        own = own[np.argsort(-task.lengths(encoded)[own], kind="stable")]
        batches = [own[i:i + batch_size] for i in range(0, len(own), batch_size)]
        # FSDP gathers parameters inside every forward: all ranks must run as many (a dummy one if need be).
        n_batches = math.ceil(math.ceil(n / self.world) / batch_size) if self.fsdp and n else len(batches)
        was_training = model.training
        model.eval()
        parts = []
        for b in range(n_batches):
            idx = batches[b] if b < len(batches) else np.zeros(1, dtype=np.int64)
            outputs = batch_outputs(model, task, encoded, idx, precision=precision, device=device, pad_id=pad_id)
            if b < len(batches):
                parts.append((idx, outputs))
        model.train(was_training)
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, parts)
        rows: list = [None] * n
        for rank_parts in gathered:
            for idx, rank_rows in rank_parts:
                for i, row in zip(idx, rank_rows):
                    rows[i] = row
        return task.stack_outputs(rows)

    def barrier(self) -> None:
        dist.barrier()


def step_plan(batch_idx: np.ndarray, micro: int, rank: int, world: int) -> tuple[list[np.ndarray], list[float]]:
    """This rank's micro-batches of one step and the weight of each one's loss.

    The step's examples are cut into `world` contiguous shards (sizes differ by at most one). Real
    micro-batches weigh `world` (DDP/FSDP divide the summed gradient by `world`); padding micro-batches,
    which keep the number of forward passes equal on every rank, weigh 0 and so change nothing.
    """
    shards = np.array_split(batch_idx, world)
    n_micro = max(1, max(math.ceil(len(s) / micro) for s in shards))
    own = micro_batches(shards[rank], micro) if len(shards[rank]) else []
    pad = [batch_idx[:1]] * (n_micro - len(own))
    return own + pad, [float(world)] * len(own) + [0.0] * len(pad)


# ---- process group -----------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """torchrun starts workers in their own sessions, so a SIGKILL to the launcher's process group misses
    them and they would train on as orphans, writing to the run directory. Ask Linux to kill us with it."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


def init(strategy: str = "auto") -> DistContext | None:
    """Join the job described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...); None when this
    is a single process. gloo on CPU, NCCL when there are GPUs."""
    if not launched():
        if strategy in ("ddp", "fsdp"):
            log.info("train.strategy %s: a single process is running, so it trains as usual (launch with "
                     "`lft train --nproc N` or torchrun to train data-parallel)", strategy)
        return None
    if "TORCHELASTIC_RUN_ID" in os.environ:
        _die_with_parent()
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    ctx = DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                      local_world=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                      strategy="fsdp" if strategy == "fsdp" else "ddp", backend=dist.get_backend())
    if not ctx.main:  # one voice: rank 0 logs and prints, the others only warn
        logging.getLogger("lftrain").setLevel(logging.WARNING)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    log.info("distributed: %d processes (%d per node), strategy %s, backend %s", ctx.world, ctx.local_world,
             ctx.strategy, ctx.backend)
    return ctx


# ---- wrapping ----------------------------------------------------------------------------------------------

def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one: the classes a Hugging Face model names in
    `_no_split_modules`, else the elements of every ModuleList of two or more modules of one class."""
    names = {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or [])}
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if blocks:
        return blocks
    return [child for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) >= 2
            and len({type(c) for c in m}) == 1 for child in m]


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """Return the module the training step calls. DDP wraps (parameter names stay on `model`); FSDP2
    shards `model` in place, each transformer block its own unit, then the rest as the root."""
    if ctx.fsdp:
        from torch.distributed.fsdp import fully_shard

        blocks = transformer_blocks(model)
        for block in blocks:
            fully_shard(block)
        fully_shard(model)
        log.info("FSDP: %d transformer blocks sharded as their own units, plus the root", len(blocks))
        ctx.forward_model = model
    else:
        from torch.nn.parallel import DistributedDataParallel

        ctx.forward_model = DistributedDataParallel(model, device_ids=[ctx.local_rank]
                                                    if device.type == "cuda" else None)
    return ctx.forward_model


def gradient_checkpointing(model: Any) -> None:  # a transformers model, or peft's wrapper of one
    """Recompute activations in the backward pass instead of storing them (memory for ~30% more compute).
    Non-reentrant checkpointing: works with frozen inputs, DDP and FSDP, and restores the RNG for dropout."""
    base: Any = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x (the old name is deprecated)
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(base, "gradient_checkpointing_enable"):
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        from lftrain.errors import InputError

        raise InputError(f"train.gradient_checkpointing: {type(base).__name__} does not support it")
    if hasattr(model, "enable_input_require_grads") and model is not base:
        model.enable_input_require_grads()


def describe_batch(cfg, world: int) -> str:
    """The effective batch as micro-batch x accumulation x world size, as the loop will run it."""
    share = math.ceil(cfg.batch_size / world)
    micro = min(cfg.micro_batch_size or share, share)
    accum = math.ceil(share / micro)
    text = f"effective batch {cfg.batch_size} = micro-batch {micro} x accumulation {accum} x {world} processes"
    if cfg.batch_size % world or share % micro:
        text += (f" (uneven: {world * micro * accum - cfg.batch_size} padding slots per step are zero-weight "
                 "forward passes, so the update still equals the single-process one)")
    return text


# ---- the run directory: rank 0 writes -------------------------------------------------------------------------

class QuietRun(RunDir):
    """The run directory as seen by ranks other than 0: same paths, no writes."""

    def set_status(self, status: str, **extra) -> None:
        pass

    def log_metrics(self, record: dict) -> None:
        pass

    def lock(self) -> None:
        pass


def open_run_shared(ctx: DistContext, open_fn) -> tuple[RunDir, bool]:
    """Rank 0 opens (or resumes) the run directory; the others learn its path, or rank 0's error."""
    from lftrain.errors import LftError, RunStateError

    box: list = [None]
    error = None
    if ctx.main:
        try:
            run, resuming = open_fn()
            box[0] = ("ok", str(run.path), resuming)
        except LftError as exc:
            error = exc
            box[0] = ("error", str(exc), False)
    dist.broadcast_object_list(box, src=0)
    kind, payload, resuming = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise RunStateError(payload)
    return (run if ctx.main else QuietRun(Path(payload))), resuming


def plain_model(ctx: DistContext, model: nn.Module, rebuild) -> nn.Module:
    """After training: the whole model as an ordinary module on rank 0 (what is saved and evaluated).
    DDP already holds it on every rank. FSDP: the shards are gathered (a collective, every rank calls this)
    into a freshly built copy of the architecture on rank 0; the other ranks get `model` back."""
    if not ctx.fsdp:
        return model
    from lftrain.training.dist_checkpoint import full_state_dict

    full = full_state_dict(model)
    if not ctx.main:
        return model
    plain = rebuild()
    plain.load_state_dict(full, strict=True)
    return plain.to("cuda" if torch.cuda.is_available() else "cpu")

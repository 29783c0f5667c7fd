"""Micro-batch back-off: on out-of-memory (or a configured activation-memory cap) halve the micro-batch.

The effective batch (`train.batch_size`) never changes: the same examples make up each optimiser step, only
split into more micro-batches with gradient accumulation (the loop normalises by the whole step's loss
units, so the update is the same up to float summation order). The chosen size is stored in the train
state, so a resumed run starts with it. At micro-batch 1 there is nothing left to halve: a clear error.

`train.memory_cap_mb` caps the memory of the activations autograd keeps for backward during one
micro-batch's forward pass (tensors saved for backward, parameters excluded, each storage counted once).
That is the part of training memory that grows with the micro-batch; counting it is exact and
deterministic, unlike process RSS, which depends on the allocator's caching.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from lftrain.errors import TrainingError

log = logging.getLogger("lftrain")


class MemoryPressure(Exception):
    """A micro-batch did not fit (a real out-of-memory error, or over train.memory_cap_mb)."""


_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError, MemoryPressure)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


class ActivationCap:
    """Context for one micro-batch's forward: raises MemoryPressure once saved activations exceed the cap."""

    def __init__(self, model: torch.nn.Module, cap_mb: float | None) -> None:
        self.cap = None if cap_mb is None else int(cap_mb * 2**20)
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.peak = 0

    @contextlib.contextmanager
    def watch(self):
        cap = self.cap
        if cap is None:
            yield
            return
        seen: set[int] = set()
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.params and ptr not in seen:
                seen.add(ptr)
                total += storage.nbytes()
                self.peak = max(self.peak, total)
                if total > cap:
                    raise MemoryPressure(f"activations of this micro-batch exceed train.memory_cap_mb "
                                         f"({total / 2**20:.3f} MB > {cap / 2**20:.3f} MB)")
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield


def halve(micro: int, batch_size: int, exc: BaseException, step: int) -> int:
    """The next micro-batch size to try after `exc`, or a TrainingError at micro-batch 1."""
    if micro <= 1:
        raise TrainingError(f"step {step}: out of memory even at micro-batch 1 ({exc}). Shorten task.max_length, "
                            "use a smaller model or adaptation (lora, freeze), or raise train.memory_cap_mb") from None
    new = max(1, micro // 2)
    log.warning("step %d: %s; micro-batch %d -> %d (gradient accumulation %d -> %d steps, effective batch %d "
                "unchanged)", step, str(exc).splitlines()[0][:200], micro, new, -(-batch_size // micro),
                -(-batch_size // new), batch_size)
    return new


def with_backoff(run_step, micro: int, *, optimizer, batch_size: int, step: int):
    """Run `run_step(micro)`; on out-of-memory in its forward/backward passes, zero the partial gradients,
    restore the RNG (so dropout draws the same masks) and retry with half the micro-batch.
    Returns (run_step's result, the micro-batch size that worked)."""
    started = [False]  # an OOM inside optimizer.step() cannot be retried: the update may be half-applied
    hook = optimizer.register_step_pre_hook(lambda *_: started.__setitem__(0, True))
    try:
        while True:
            rng = torch.get_rng_state()
            try:
                return run_step(micro), micro
            except Exception as exc:
                if not is_oom(exc) or started[0]:
                    raise
                optimizer.zero_grad(set_to_none=True)
                torch.set_rng_state(rng)
                micro = halve(micro, batch_size, exc, step)
    finally:
        hook.remove()

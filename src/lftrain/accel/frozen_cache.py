"""Cached frozen computation: compute the outputs of a frozen, deterministic bottom of the model once.

When the embeddings and the bottom k transformer layers are frozen and run no dropout, their output
for a training example is the same in every epoch. We compute it once per example (in memory, or
memory-mapped on disk when large), and each training step replays it into the model: the embeddings
block is swapped for a module returning the cached states and the k frozen layers for identities, so
the forward and backward passes run only through the layers that learn. The swap lasts one forward
pass; evaluation and saving always see the real model.

The conditions are checked, and when one does not hold the cache stays off with a log line saying why. bf16 runs
store the states in bf16 (half the memory; the trained layers' bf16 matmuls round them so anyway); fp32 runs keep
them exact, so a cached fp32 run takes exactly the uncached run's steps.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lftrain.models.precision import autocast

log = logging.getLogger("lftrain")
MEMORY_LIMIT_BYTES = 2 << 30  # larger caches live in a memory-mapped file in the run directory


class _Replay(nn.Module):
    """Stands in for the embeddings block: returns the cached hidden states of the current batch."""

    def __init__(self) -> None:
        super().__init__()
        self.states: torch.Tensor | None = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        assert self.states is not None, "cached states were not set for this batch"
        return self.states


class _Identity(nn.Module):
    """Stands in for a frozen layer whose output is already in the cache."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


def _encoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.ModuleList] | None:
    """(base model, embeddings block, layer list) for BERT-style encoders (peft-wrapped or not), else None."""
    from lftrain.models.layers import unwrap

    hf = unwrap(model)
    base = getattr(hf, "base_model", hf)
    embeddings, encoder = getattr(base, "embeddings", None), getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if isinstance(embeddings, nn.Module) and isinstance(layers, nn.ModuleList):
        return base, embeddings, layers
    return None


def _frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def _deterministic(module: nn.Module) -> bool:
    return all(m.p == 0 for m in module.modules() if isinstance(m, nn.Dropout))


def plan(model: nn.Module, *, augments_input: bool) -> tuple[int, str]:
    """How many bottom layers can be cached (-1: none; 0: just the embeddings) and why."""
    if augments_input:
        return -1, "the task augments its inputs, so frozen outputs change between epochs"
    parts = _encoder_parts(model)
    if parts is None:
        return -1, "not supported for this architecture (needs an encoder with embeddings + encoder.layer)"
    _, embeddings, layers = parts
    if not _frozen(embeddings):
        return -1, "the embeddings train"
    if not _deterministic(embeddings):
        return -1, "dropout is active in the frozen embeddings"
    k = 0
    while k < len(layers) - 1 and _frozen(layers[k]):
        if not _deterministic(layers[k]):
            return -1, f"dropout is active in frozen layer {k} (set its dropout to 0 to allow caching)"
        k += 1
    return k, f"embeddings and {k} frozen layer(s) computed once and replayed"


class FrozenPrefixCache:
    """Per-example outputs of the frozen prefix, stored flat (tokens x hidden) with the data's offsets."""

    def __init__(self, model: nn.Module, n_layers: int) -> None:
        parts = _encoder_parts(model)
        assert parts is not None
        self.model, (self.base, self.embeddings, self.layers) = model, parts
        self.k = n_layers
        self.replay = _Replay()
        self.states: torch.Tensor | None = None
        self.offsets: np.ndarray | None = None

    @contextlib.contextmanager
    def _truncated(self):
        """The base model with only its frozen layers, to compute what the cache holds."""
        full = self.base.encoder.layer
        self.base.encoder.layer = nn.ModuleList(list(full)[: self.k])
        try:
            yield
        finally:
            self.base.encoder.layer = full

    @torch.no_grad()
    def build(self, task, encoded: dict[str, np.ndarray], *, batch_size: int, precision: str,
              device: torch.device, pad_id: int, spill_dir: Path, dtype: torch.dtype = torch.float32) -> None:
        """Compute and store the frozen prefix's output of every example of `encoded` (as `dtype`)."""
        offsets = encoded["offsets"]
        hidden = self.base.config.hidden_size
        total = int(offsets[-1])
        nbytes = total * hidden * torch.finfo(dtype).bits // 8
        if nbytes > MEMORY_LIMIT_BYTES:
            spill_dir.mkdir(parents=True, exist_ok=True)
            # numpy has no bf16: the file holds the raw 16-bit words, viewed as bf16 by torch
            np_dtype = np.float32 if dtype == torch.float32 else np.int16
            mapped = np.lib.format.open_memmap(spill_dir / "frozen_prefix.npy", mode="w+", dtype=np_dtype,
                                               shape=(total, hidden))
            states = torch.from_numpy(mapped).view(dtype)
        else:
            states = torch.empty((total, hidden), dtype=dtype)
        was_training = self.model.training
        self.base.eval()
        lengths = task.lengths(encoded)
        order = np.argsort(-lengths, kind="stable")
        with self._truncated():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = task.collate(encoded, idx, pad_id)
                inputs = {k: v.to(device) for k, v in task.model_inputs(batch).items()}
                with autocast(precision, device):
                    out = self.base(**inputs).last_hidden_state.to("cpu", dtype)
                for row, i in enumerate(idx):
                    s, e = offsets[i], offsets[i + 1]
                    states[s:e] = out[row, : e - s]
        self.model.train(was_training)
        self.states, self.offsets = states, offsets
        log.info("frozen-prefix cache: %d tokens x %d in %s = %.0f MB%s", total, hidden, str(dtype).split(".")[-1],
                 nbytes / 2**20, f" (memory-mapped in {spill_dir})" if nbytes > MEMORY_LIMIT_BYTES else " (in memory)")

    def release(self) -> None:
        """Training is over: drop the cached states (evaluation runs the real model)."""
        self.states = None

    def batch_states(self, indices: np.ndarray, width: int, device: torch.device) -> torch.Tensor:
        """The cached states of `indices`, padded to `width`, in fp32 (the residual stream's dtype)."""
        assert self.states is not None and self.offsets is not None
        out = torch.zeros((len(indices), width, self.states.shape[1]), dtype=torch.float32)
        for row, i in enumerate(indices):
            s, e = self.offsets[i], self.offsets[i + 1]
            out[row, : e - s] = self.states[s:e]
        return out.to(device)

    @contextlib.contextmanager
    def replaying(self, indices: np.ndarray, batch: dict[str, torch.Tensor]):
        """Within this block the model's forward starts from the cached states of `indices`."""
        self.replay.states = self.batch_states(indices, batch["input_ids"].shape[1], batch["input_ids"].device)
        originals = [self.layers[i] for i in range(self.k)]
        self.base.embeddings = self.replay
        for i in range(self.k):
            self.layers[i] = _Identity()
        try:
            yield
        finally:
            self.base.embeddings = self.embeddings
            for i, layer in enumerate(originals):
                self.layers[i] = layer
            self.replay.states = None

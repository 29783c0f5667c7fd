"""Batched inference that returns outputs in input order, whatever order it computes them in."""

from __future__ import annotations

import numpy as np
import torch

from lftrain.training.precision import autocast


@torch.no_grad()
def infer_logits(model: torch.nn.Module, task, encoded: dict[str, np.ndarray], *, batch_size: int,
                 precision: str, device: torch.device, pad_id: int) -> np.ndarray:
    """Logits for every example. Batches are formed longest-first (little padding, and an out-of-memory
    error shows on the first batch), then scattered back to the input order."""
    was_training = model.training
    model.eval()
    lengths = task.lengths(encoded)
    order = np.argsort(-lengths, kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = task.collate(encoded, idx, pad_id)
        inputs = {k: v.to(device) for k, v in task.model_inputs(batch).items()}
        with autocast(precision, device):
            logits = model(**inputs).logits.float().cpu().numpy()
        if out is None:
            out = np.empty((len(order), logits.shape[-1]), dtype=np.float32)
        out[idx] = logits
    model.train(was_training)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)

"""Batched inference that returns outputs in input order, whatever order it computes them in.

A task says what one row's output is (`Task.row_outputs`: a class-logit vector, a logit per token, start and end
scores per token) and how rows stack (`Task.stack_outputs`: one row each, or every token of every row in order).
"""

from __future__ import annotations

import numpy as np
import torch

from lftrain.models.precision import autocast
from lftrain.progress import track


@torch.no_grad()
def batch_outputs(model: torch.nn.Module, task, encoded: dict[str, np.ndarray], idx: np.ndarray, *, precision: str,
                  device: torch.device, pad_id: int) -> list[np.ndarray]:
    """The outputs of rows `idx`, one array per row."""
    batch = task.collate(encoded, idx, pad_id)
    inputs = {k: v.to(device) for k, v in task.model_inputs(batch).items()}
    with autocast(precision, device):
        out = model(**inputs)
    return task.row_outputs(out, batch)


@torch.no_grad()
def infer_logits(model: torch.nn.Module, task, encoded: dict[str, np.ndarray], *, batch_size: int,
                 precision: str, device: torch.device, pad_id: int) -> np.ndarray:
    """Outputs for every example. Batches are formed longest-first (little padding, and an out-of-memory
    error shows on the first batch), then put back in the input order."""
    was_training = model.training
    model.eval()
    order = np.argsort(-task.lengths(encoded), kind="stable")
    rows: list = [None] * len(order)
    starts = range(0, len(order), batch_size)
    for start in track(starts, len(starts), "inference"):
        idx = order[start:start + batch_size]
        for i, row in zip(idx, batch_outputs(model, task, encoded, idx, precision=precision, device=device,
                                             pad_id=pad_id)):
            rows[i] = row
    model.train(was_training)
    return task.stack_outputs(rows)

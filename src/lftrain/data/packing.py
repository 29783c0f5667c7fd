"""Batches for causal language models: padded, or packed with each example isolated by its position ids.

Labels are shifted here, per example (label[t] = token[t+1] where that token carries loss), so an
example's last position never learns to predict the first token of the next example in its row.

Packing: examples are placed into rows of at most `pack_length` tokens (first-fit decreasing) and
each restarts its position ids at 0. The attention mask is left out on purpose: transformers then reads
the sequence boundaries from the position ids and builds a block-diagonal causal mask
(`masking_utils.find_packed_sequence_indices`), for any attention kernel. The padding that evens out
the rows also restarts at 0, so it forms its own block that no example sees, and it carries no loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IGNORE = -100


def first_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Positions (into `lengths`) grouped into bins whose lengths sum to at most `capacity`."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(int(i))
                room[b] -= n
                break
        else:
            bins.append([int(i)])
            room.append(capacity - n)
    return bins


def collate_causal(encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int, *,
                   pack_length: int | None, segments: bool = False) -> dict[str, Any]:
    """input_ids, position_ids, labels (-100 where no loss), `keep` (positions whose logits are needed) and,
    unpacked only, attention_mask. Rows are padded on the right to the longest row. `segments`: also `segment`,
    the position in `indices` of the example each token belongs to (-1 on padding), to sum per example."""
    import torch

    starts, ends = encoded["offsets"][indices], encoded["offsets"][indices + 1]
    lengths = ends - starts
    if pack_length is not None:
        rows = [[int(indices[j]) for j in b] for b in first_fit_decreasing(lengths, pack_length)]
    else:
        rows = [[int(i)] for i in indices]
    offsets = encoded["offsets"]
    width = max(sum(int(offsets[i + 1] - offsets[i]) for i in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    pos = np.zeros((len(rows), width), dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    segment = np.full((len(rows), width), -1, dtype=np.int64) if segments else None
    where = {int(i): j for j, i in enumerate(indices)} if segments else {}
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            s, e = int(offsets[i]), int(offsets[i + 1])
            n = e - s
            tokens = encoded["input_ids"][s:e]
            ids[r, at:at + n] = tokens
            pos[r, at:at + n] = np.arange(n)
            shifted = np.where(encoded["loss_mask"][s + 1:e] > 0, tokens[1:], IGNORE)
            labels[r, at:at + n - 1] = shifted
            mask[r, at:at + n] = 1
            if segment is not None:
                segment[r, at:at + n] = where[i]
            at += n
        pos[r, at:] = np.arange(width - at)  # padding: a block of its own
    keep = np.flatnonzero((labels != IGNORE).any(axis=0))
    batch = {"input_ids": torch.from_numpy(ids), "position_ids": torch.from_numpy(pos),
             "labels": torch.from_numpy(labels), "keep": torch.from_numpy(keep)}
    if pack_length is None:
        batch["attention_mask"] = torch.from_numpy(mask)
    if segment is not None:
        batch["segment"] = torch.from_numpy(segment)
    return batch


def causal_model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model's keyword arguments for a batch of `collate_causal`."""
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False,
              # the LM head (vocabulary-sized) runs only where a loss is taken: the response tokens
              "logits_to_keep": batch["keep"]}
    if "attention_mask" in batch:
        inputs["attention_mask"] = batch["attention_mask"]
    return inputs

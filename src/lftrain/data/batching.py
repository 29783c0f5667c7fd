"""Batch order: shuffled, optionally length-grouped, and a pure function of (seed, epoch).

Because the order is recomputed from the seed, a resumed run needs only (epoch, batches consumed) to
continue exactly where it stopped: nothing is skipped or repeated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

POOL_BATCHES = 64  # length grouping sorts within pools of this many batches, then shuffles the batches


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                  group_by_length: bool = True, curriculum=None) -> list[np.ndarray]:
    """Indices of each batch of one epoch. The last batch may be smaller (no example is dropped).
    With a curriculum (data/curriculum.py) each step draws from the easiest share its pacing allows instead."""
    if curriculum is not None:
        return curriculum.batches(epoch)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        # Sort each pool by length (random order among equal lengths, thanks to the permutation and a
        # stable sort), so batches hold similar lengths and dynamic padding wastes almost nothing.
        pool = batch_size * POOL_BATCHES
        chunks = [order[i:i + pool] for i in range(0, len(order), pool)]
        order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in chunks])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


def micro_batches(batch: np.ndarray, micro_batch_size: int) -> list[np.ndarray]:
    return [batch[i:i + micro_batch_size] for i in range(0, len(batch), micro_batch_size)]


def padded_width(longest: int, multiple: int, limit: int) -> int:
    """A batch's padded length: `longest` rounded up to `multiple`, but not past `limit` (the task's
    max_length) unless `longest` itself is. Few distinct widths mean few distinct matmul shapes, and CPU
    libraries (oneDNN) compile and cache a kernel for each."""
    return max(longest, min(-(-longest // multiple) * multiple, limit))


def pad_token_rows(encoded: dict, indices: np.ndarray, fills: dict[str, int], multiple: int,
                   limit: int) -> dict[str, Any]:
    """The rows `indices` of flat per-token arrays (row r is `offsets[r]:offsets[r+1]`) as padded int64 tensors,
    one per name in `fills` that `encoded` has (padded with its fill value), plus the attention mask."""
    import torch

    starts, ends = encoded["offsets"][indices], encoded["offsets"][indices + 1]
    width = padded_width(int((ends - starts).max()), multiple, limit)
    names = [n for n in fills if n in encoded]
    out = {n: np.full((len(indices), width), fills[n], dtype=np.int64) for n in names}
    out["attention_mask"] = np.zeros((len(indices), width), dtype=np.int64)
    for r, (s, e) in enumerate(zip(starts, ends)):
        for n in names:
            out[n][r, : e - s] = encoded[n][s:e]
        out["attention_mask"][r, : e - s] = 1
    return {n: torch.from_numpy(a) for n, a in out.items()}


def append_rows(first: dict[str, np.ndarray], second: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """One flat per-token layout (ids, offsets, token types where kept, a label per row) holding the rows of
    `first`, then those of `second` with `labels` as theirs."""
    out = {"input_ids": np.concatenate([first["input_ids"], second["input_ids"]]),
           "offsets": np.concatenate([first["offsets"], second["offsets"][1:] + first["offsets"][-1]]),
           "labels": np.concatenate([first["labels"], labels.astype(first["labels"].dtype)])}
    if "token_type_ids" in first:
        out["token_type_ids"] = np.concatenate([first["token_type_ids"], second["token_type_ids"]])
    return out

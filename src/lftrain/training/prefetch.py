"""Collating the next steps' micro-batches in worker processes (`train.num_workers`) while the model trains.

The batch order stays the loop's own pure function of (seed, epoch); workers only turn index arrays into
padded tensors, which involves no randomness, so 0 or N workers give bitwise-identical training. The
DataLoader gets its own generator so creating it never draws from the global torch RNG (which dropout
uses): a resumed run therefore continues the same random stream whatever the worker count.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator

import numpy as np
import torch

from lftrain.data.batching import micro_batches


class _StepInputs(torch.utils.data.Dataset):
    """Item i: the micro-batches of step i of the remaining epoch, collated at a given micro-batch size."""

    def __init__(self, task, data: dict[str, np.ndarray], batches: list[np.ndarray], micro: int, pad_id: int):
        self.task, self.data, self.batches, self.micro, self.pad_id = task, data, batches, micro, pad_id

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[int, list]:
        micros = micro_batches(self.batches[i], self.micro)
        return self.micro, [(mb, self.task.collate(self.data, mb, self.pad_id)) for mb in micros]


def _worker_init(_: int) -> None:
    # A SIGTERM sent to the whole process group must reach only the trainer, which then stops cleanly;
    # workers are shut down by the trainer (or exit when it dies).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


def _context():
    """fork where it exists: workers are then the trainer's own children, and torch's watchdog ends them when the
    trainer dies (SIGKILL). Under an inherited forkserver/spawn default they would be the server's children,
    outlive a killed trainer and hold its output pipes open."""
    import multiprocessing

    return multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


def step_inputs(task, data: dict[str, np.ndarray], batches: list[np.ndarray], micro: int, pad_id: int,
                num_workers: int) -> Iterator[tuple[int, list] | tuple[None, None]]:
    """Yield (micro-batch size, [(indices, collated batch), ...]) for each batch, in order; with
    `num_workers` < 0 yield (None, None): the caller collates itself (distributed runs split steps by rank)."""
    if num_workers < 0:
        return itertools.repeat((None, None))
    ds = _StepInputs(task, data, batches, micro, pad_id)
    if num_workers == 0 or len(batches) == 0:
        return (ds[i] for i in range(len(ds)))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=num_workers,
                                         worker_init_fn=_worker_init, generator=torch.Generator(),
                                         prefetch_factor=2, multiprocessing_context=_context())
    return iter(loader)

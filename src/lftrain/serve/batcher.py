"""Micro-batching: requests that arrive within a few milliseconds of each other go through the model together.

One worker thread owns the model. It takes the oldest waiting request, waits up to `max_wait_ms` for more, and hands
the handler every request that fits in `max_batch` inputs (a request that would overflow the batch opens the next
one); each caller then gets its own slice of the results. The queue is bounded: when `max_queue` requests already
wait, `submit` raises QueueFull at once (the app answers 503) instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("lftrain")


class QueueFull(Exception):
    """Too many requests wait for the model already; the client should retry later."""


@dataclass
class _Job:
    item: Any
    size: int
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    inputs: int = 0
    largest: int = 0
    rejected: int = 0


class Batcher:
    """Runs `handler(items) -> results` (one result per item, in order; a result that is an exception is raised to
    that item's caller alone) on micro-batches of submitted items, in a worker thread of its own."""

    def __init__(self, handler: Callable[[list[Any]], list[Any]], *, max_batch: int, max_wait_ms: float,
                 max_queue: int, name: str = "lft-batcher") -> None:
        self.handler = handler
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self.stats = BatchStats()
        self._held: _Job | None = None  # taken from the queue, but it did not fit the last batch
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any, size: int = 1) -> Future:
        """Queue `item` (`size` inputs); its future holds the result. Raises QueueFull when the queue is full."""
        job = _Job(item, size)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.stats.rejected += 1
            raise QueueFull(f"the server is busy: {self.queue.maxsize} requests are waiting already") from None
        return job.future

    async def run(self, item: Any, size: int = 1) -> Any:
        """`submit` and wait without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item, size))

    def waiting(self) -> int:
        return self.queue.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker once the requests already queued are done."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return  # the worker is a daemon thread: it ends with the process
        self._thread.join(timeout)

    # ---- the worker -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping and (jobs := self._collect()):
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]  # drop callers that went away
            if jobs:
                self._run(jobs)

    def _collect(self) -> list[_Job]:
        first = self._held or self.queue.get()
        self._held = None
        if first is None:
            return []
        jobs, size = [first], first.size
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch:
            try:
                job = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._stopping = True  # run what was collected, then stop
                break
            if size + job.size > self.max_batch:
                self._held = job  # the first of the next batch
                break
            jobs.append(job)
            size += job.size
        return jobs

    def _run(self, jobs: list[_Job]) -> None:
        stats = self.stats
        size = sum(j.size for j in jobs)
        stats.requests, stats.batches, stats.inputs = stats.requests + len(jobs), stats.batches + 1, stats.inputs + size
        stats.largest = max(stats.largest, size)
        try:
            results = self.handler([j.item for j in jobs])
        except Exception as exc:  # noqa: BLE001  (each caller gets the error; the worker lives on)
            log.exception("serve: a batch of %d requests failed", len(jobs))
            results = [exc] * len(jobs)
        for job, result in zip(jobs, results):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

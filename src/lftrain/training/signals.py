"""Preemption: SIGTERM asks the run to stop; the loop finishes the current step, checkpoints and exits 143.

Schedulers (Kubernetes, Slurm, spot instances, `docker stop`) send SIGTERM and wait a grace period before
SIGKILL. Killing mid-step would lose everything since the last checkpoint; instead the handler only sets a
flag, the loop checks it after each optimiser step, writes a checkpoint and raises `Preempted`. A second
SIGTERM restores the default action, so an impatient sender still gets its kill.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from lftrain.errors import Preempted

log = logging.getLogger("lftrain")


class PreemptionWatch:
    """Installs the SIGTERM handler for the duration of fit() (main thread only; elsewhere it is a no-op)."""

    def __init__(self) -> None:
        self.received_at: float | None = None
        self._previous: Any = None  # the handler to restore (a callable, SIG_DFL or SIG_IGN)
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.received_at is not None

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.received_at = time.monotonic()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM terminates at once
        log.warning("SIGTERM received: finishing the current step, then checkpointing and stopping")

    def install(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def stop(self, step: int) -> None:
        """Called once the checkpoint of `step` is on disk: log how long it took and raise Preempted."""
        waited = time.monotonic() - (self.received_at or time.monotonic())
        log.warning("checkpoint of step %d written %.2fs after SIGTERM; stopping (exit 143). Run `lft train` "
                    "again to resume", step, waited)
        raise Preempted(f"stopped by SIGTERM at step {step}, {waited:.2f}s after the signal, with a checkpoint; "
                        "run `lft train` again on the same recipe to resume")

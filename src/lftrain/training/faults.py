"""Test-only fault injector: `LFT_TEST_KILL_AT_STEP=N` makes training SIGKILL itself at optimiser step N.

The kill/resume tests need a run killed mid-training at a known step. Killing it from outside on a timer
races the run: on a fast machine it finishes first and the test can only skip. The kill lands after step N's
update and log line, before its evaluation or checkpoint, so the resumed run must start from an earlier
checkpoint and redo the steps it lost. Unset (always, outside tests), this does nothing.

Under torchrun, every rank stops at step N and rank 0 SIGKILLs torchrun, their parent, as a SIGKILL to the
launch would: the ranks must then die with it (PR_SET_PDEATHSIG, training/distributed.py), not train on as
orphans. A rank that outlives it kills itself only after `_ORPHAN_S`, so a test sees it hold its run lock.
"""

from __future__ import annotations

import functools
import os
import signal
import time

KILL_AT_STEP = "LFT_TEST_KILL_AT_STEP"
_ORPHAN_S = 60.0  # longer than the tests wait for the workers to be gone


@functools.cache
def _kill_step() -> int | None:
    value = os.environ.get(KILL_AT_STEP)  # read once: the loop asks every step
    return int(value) if value else None


def maybe_kill(step: int) -> None:
    """Called by fit() after each optimiser step (`step`: the steps done)."""
    if step != _kill_step():
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun
        if int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(_ORPHAN_S)  # where the launcher's death should kill this rank
    os.kill(os.getpid(), signal.SIGKILL)

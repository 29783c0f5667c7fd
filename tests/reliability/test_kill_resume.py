"""Scenario 1: SIGKILL anywhere, resume, finish: bitwise the run that was never interrupted."""

from __future__ import annotations

import random
import signal

import pytest

from tests.reliability.conftest import assert_same_run

RNG_STEP = random.Random(8).randint(2, 35)  # a "random" step, fixed so a failure reproduces


@pytest.mark.parametrize(("name", "faults", "workers"), [
    ("random-step-w0", {"kill_step": RNG_STEP}, 0),
    ("random-step-w2", {"kill_step": RNG_STEP}, 2),
    ("epoch-boundary-w2", {"kill_step": 19}, 2),  # step 18 ends epoch 0 and is checkpointed; killed in step 19
    ("during-eval-w0", {"kill_eval": 2}, 0),  # inside the evaluation of step 20, before its checkpoint
])
def test_sigkill_then_resume_is_bitwise_identical(lab, name, faults, workers):
    ref = lab.reference()  # uninterrupted, 0 workers: the worker count must not matter either
    killed = lab.run(name, faults=faults, num_workers=workers)
    assert killed.code == -signal.SIGKILL, killed.log
    resumed = lab.run(name)
    assert resumed.code == 0, resumed.log
    assert "resumed from step-" in resumed.log
    assert_same_run(ref, lab.root / name)

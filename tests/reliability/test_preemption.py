"""Scenario 7: SIGTERM (preemption) — the step finishes, a checkpoint is written, exit 143, and the resumed run
is bitwise the uninterrupted one."""

from __future__ import annotations

import os
import re
import signal

from tests.reliability.conftest import assert_same_run, complete_checkpoints, start, wait_for


def _grace(log: str) -> float:
    return float(re.search(r"written (\d+\.\d+)s after SIGTERM", log).group(1))


def test_sigterm_at_a_known_step(lab):
    ref = lab.reference()
    res = lab.run("term-self", faults={"term_step": 13})  # the signal arrives at the start of step 13
    assert res.code == 143, res.log
    assert "SIGTERM received" in res.log and "stopped by SIGTERM at step 13" in res.log
    assert complete_checkpoints(lab.root / "term-self")[-1] == "step-00000013"  # that step finished, then saved
    print(f"SIGTERM -> checkpoint on disk: {_grace(res.log):.3f}s")
    resumed = lab.run("term-self")
    assert resumed.code == 0 and "resumed from step-00000013" in resumed.log, resumed.log
    assert_same_run(ref, lab.root / "term-self")


def test_sigterm_from_outside_to_the_process_group_with_workers(lab):
    """`kill -TERM -PGID` as Slurm does: the trainer and its 2 data-loader workers all receive it."""
    ref = lab.reference()
    run = lab.root / "term-group"
    r = lab.recipe("term-group", num_workers=2)
    log = lab.root / "term-group.log"
    p = start(["train", r], log, {"own_group": True})
    assert wait_for(lambda: (run / "samples.jsonl").is_file() and
                    len((run / "samples.jsonl").read_text().splitlines()) >= 5)
    os.killpg(p.pid, signal.SIGTERM)
    p.join(120)
    text = log.read_text()
    assert p.exitcode == 143, text
    step = int(re.search(r"stopped by SIGTERM at step (\d+)", text).group(1))
    assert complete_checkpoints(run)[-1] == f"step-{step:08d}"
    print(f"SIGTERM at step {step} -> checkpoint on disk: {_grace(text):.3f}s")
    resumed = lab.run("term-group")
    assert resumed.code == 0, resumed.log
    assert_same_run(ref, run)

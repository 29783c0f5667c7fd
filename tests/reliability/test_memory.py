"""Scenario 9: out of memory (or over train.memory_cap_mb) -> smaller micro-batch, more accumulation, same
effective batch; resume keeps the chosen size; at micro-batch 1 a clear error."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from lftrain.errors import TrainingError
from lftrain.training.memory import with_backoff
from tests.conftest import make_tiny_bert
from tests.reliability.conftest import assert_same_run, train_losses


@pytest.fixture(scope="module")
def nodrop(lab):
    """Without dropout the micro-batch split changes nothing but float summation order."""
    return make_tiny_bert(lab.root / "bert-nodrop", dropout=0.0)


CAP_MB = 0.12  # activations of this tiny model: ~0.056 MB per example of 15 tokens, 0.165 MB for 8 of 6


def test_cap_lowers_micro_batch_keeps_effective_batch_and_resume_reuses_it(lab, nodrop):
    ref = lab.reference(model=nodrop)
    capped = lab.reference(model=nodrop, memory_cap_mb=CAP_MB)
    log = (lab.root / f"{capped.name}.log").read_text()
    assert "micro-batch 8 -> 4" in log and "effective batch 8 unchanged" in log
    chosen = json.loads((capped / "run.json").read_text())["state"]["micro_batch_size"]
    assert chosen < 8
    a, b = train_losses(ref), train_losses(capped)
    assert [s for s, _ in a] == [s for s, _ in b]
    assert [x for _, x in a] == pytest.approx([x for _, x in b], rel=1e-5, abs=1e-6)

    killed = lab.run("cap-kill", faults={"kill_step": 25}, model=nodrop, memory_cap_mb=CAP_MB)
    assert killed.code == -signal.SIGKILL
    ckpt_state = json.loads((lab.root / "cap-kill" / "checkpoints" / "step-00000024" / "state.json").read_text())
    resumed = lab.run("cap-kill")
    assert resumed.code == 0, resumed.log
    assert "micro-batch 8 ->" not in resumed.log  # started at the size the checkpoint recorded
    assert ckpt_state["micro_batch_size"] < 8
    assert_same_run(capped, lab.root / "cap-kill")


def test_micro_batch_one_is_a_clear_error(lab, nodrop):
    res = lab.run("cap-tiny", model=nodrop, memory_cap_mb=1e-6)
    assert res.code == 5, res.log
    assert "out of memory even at micro-batch 1" in res.log and "train.memory_cap_mb" in res.log


def test_real_oom_errors_back_off_but_not_inside_the_optimiser_step():
    """torch.OutOfMemoryError is what CUDA raises; the CPU allocator raises RuntimeError("... can't allocate
    memory ..."). Raised here by a step function (a real out-of-memory needs a GPU or a memory-starved machine)."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tried = []

    def step(micro):
        tried.append(micro)
        if micro > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return micro

    assert with_backoff(step, 8, optimizer=opt, batch_size=8, step=1) == (2, 2)
    assert tried == [8, 4, 2]

    def oom_in_update(micro):
        model(torch.ones(1, 2)).sum().backward()
        opt.step()  # the pre-hook marks the update as started
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        with_backoff(oom_in_update, 8, optimizer=opt, batch_size=8, step=1)
    with pytest.raises(TrainingError, match="micro-batch 1"):
        with_backoff(lambda m: (_ for _ in ()).throw(MemoryError()), 1, optimizer=opt, batch_size=8, step=3)

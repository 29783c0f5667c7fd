"""2 CPU processes (gloo, loopback) against one: the same weights, no example twice, sharded checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lftrain.evaluation.inference import infer_logits
from lftrain.training.checkpoint import load_checkpoint, load_weights
from lftrain.training.loop import _train_step
from tests.distributed.common import ROWS, build, epoch_plan, fit_context

BATCH, MICRO = 9, 4
STEPS = len(epoch_plan(ROWS, BATCH))  # one whole epoch
WORKER = Path(__file__).with_name("worker.py")


@pytest.fixture(scope="module")
def two_process_run(tiny_bert_nodrop, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(WORKER), str(tiny_bert_nodrop), str(out), str(STEPS), str(BATCH), str(MICRO)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def single_process(tiny_bert_nodrop):
    """The reference: one process, the whole batch in one forward pass."""
    torch.set_num_threads(1)
    recipe, task, tok, data, model = build(tiny_bert_nodrop, BATCH)
    fit = fit_context(recipe, task, data, model, tok)
    for idx in epoch_plan(ROWS, BATCH):
        _train_step(fit, idx, BATCH)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_reach_the_single_process_weights(two_process_run, single_process, strategy):
    got = load_file(two_process_run / f"{strategy}.safetensors")
    assert got.keys() == single_process.keys()
    worst = max(float((got[k] - single_process[k]).abs().max()) for k in got)
    assert worst < 1e-5, f"{strategy}: largest weight difference {worst:g}"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_no_example_seen_twice_or_dropped_per_epoch(two_process_run, strategy):
    per_rank = json.loads((two_process_run / "seen.json").read_text())[strategy]
    everything = [i for rank in per_rank for i in rank]
    assert len(everything) == len(set(everything)) == ROWS  # each example exactly once across the ranks
    assert all(per_rank), "every rank trained on some examples"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gathered_evaluation_counts_each_row_once(two_process_run, tiny_bert_nodrop, strategy):
    """Logits computed on 2 ranks (a slice each) and gathered == one process on the same weights."""
    gathered = np.load(two_process_run / f"{strategy}-logits.npy")
    recipe, task, tok, data, model = build(tiny_bert_nodrop, BATCH)
    model.load_state_dict(load_file(two_process_run / f"{strategy}.safetensors"))
    alone = infer_logits(model, task, data, batch_size=16, precision="fp32", device=torch.device("cpu"),
                         pad_id=tok.pad_token_id)
    assert gathered.shape == alone.shape == (ROWS, 2)
    np.testing.assert_allclose(gathered, alone, rtol=1e-5, atol=1e-6)


def test_fsdp_checkpoint_loads_into_one_process(two_process_run, tiny_bert_nodrop):
    """Sharded save by 2 processes -> plain, single-process load (no process group), weights and optimiser."""
    ckpt = two_process_run / "fsdp-ckpt" / f"step-{STEPS:08d}"
    assert (ckpt / ".metadata").is_file() and (ckpt / "__1_0.distcp").is_file()
    full = load_file(two_process_run / "fsdp.safetensors")

    recipe, task, tok, data, model = build(tiny_bert_nodrop, BATCH)
    load_weights(ckpt, model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, full[k]), k

    recipe, task, tok, data, model = build(tiny_bert_nodrop, BATCH)
    fit = fit_context(recipe, task, data, model, tok)
    state = load_checkpoint(ckpt, model, fit.optimizer, fit.scheduler)
    assert state.step == STEPS
    assert all(torch.equal(v, full[k]) for k, v in model.state_dict().items())
    moments = [s["exp_avg"] for s in fit.optimizer.state.values()]
    assert moments and any(float(m.abs().sum()) > 0 for m in moments)  # AdamW's state came back too
    assert fit.scheduler.last_epoch == STEPS

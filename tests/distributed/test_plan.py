"""The pure parts: each step's shards, the effective batch, the torchrun command line."""

from __future__ import annotations

import numpy as np
import pytest

from lftrain.config import load_recipe
from lftrain.data.batching import epoch_batches
from lftrain.errors import InputError
from lftrain.orchestrator.launch import torchrun_command
from lftrain.training.distributed import describe_batch, step_plan, transformer_blocks


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch, micro", [(8, 8), (8, 2), (9, 4), (5, 16), (3, 1)])
def test_every_example_of_an_epoch_once_across_ranks(world, batch, micro):
    lengths = np.random.default_rng(0).integers(3, 30, size=103)
    seen = []
    for idx in epoch_batches(lengths, batch, seed=7, epoch=2):
        plans = [step_plan(idx, micro, r, world) for r in range(world)]
        assert len({len(m) for m, _ in plans}) == 1  # as many forward passes on every rank (FSDP needs it)
        for micros, weights in plans:
            assert all(len(mb) <= micro for mb in micros)
            assert set(weights) <= {0.0, float(world)}
            seen += [int(i) for mb, w in zip(micros, weights) if w for i in mb]
    assert sorted(seen) == list(range(103))


def test_padding_micro_batches_weigh_nothing():
    micros, weights = step_plan(np.arange(3), micro=4, rank=1, world=4)  # 3 examples, 4 ranks
    assert [len(m) for m in micros] == [1] and weights == [4.0]
    micros, weights = step_plan(np.arange(3), micro=4, rank=3, world=4)
    assert weights == [0.0]  # rank 3 has no example: a zero-weight forward keeps it in step


def test_effective_batch_is_derived():
    cfg = load_recipe(data={"model": {"path": "m"}, "data": {"train": "x.csv"},
                            "train": {"batch_size": 32, "micro_batch_size": 8}}).train
    assert describe_batch(cfg, 2).startswith("effective batch 32 = micro-batch 8 x accumulation 2 x 2 processes")
    assert "uneven" in describe_batch(cfg, 3)


def test_strategy_is_validated():
    with pytest.raises(InputError, match="strategy"):
        load_recipe(data={"model": {"path": "m"}, "data": {"train": "x.csv"}, "train": {"strategy": "zero3"}})


def test_torchrun_command():
    cmd = torchrun_command("r.yaml", ["train.lr=1e-4"], nproc=2)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in cmd
    assert cmd[-5:] == ["-m", "lftrain", "train", "r.yaml", "train.lr=1e-4"]
    multi = torchrun_command("r.yaml", [], nproc=4, nnodes=2, node_rank=1, rdzv_endpoint="node1:29400")
    assert "--rdzv-endpoint=node1:29400" in multi and "--node-rank=1" in multi and "--standalone" not in multi
    with pytest.raises(InputError, match="rdzv-endpoint"):
        torchrun_command("r.yaml", [], nproc=2, nnodes=2)


def test_fsdp_units_are_the_transformer_blocks(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    names = sorted({type(b).__name__ for b in transformer_blocks(model)})
    assert names == ["BertEmbeddings", "BertLayer"]  # from the model's own _no_split_modules

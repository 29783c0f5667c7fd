"""Shared by the distributed tests and their torchrun worker: one tiny model, toy data and a FitContext."""

from __future__ import annotations

import numpy as np
import torch

from lftrain.config import load_recipe
from lftrain.data.batching import epoch_batches
from lftrain.data.examples import Examples
from lftrain.methods import build_method
from lftrain.models.loading import load_tokenizer, vet_model_dir
from lftrain.tasks import build_task
from lftrain.tasks.labels import LabelSet
from lftrain.training.loop import FitContext
from lftrain.training.optim import build_optimizer, build_scheduler
from tests.conftest import toy_rows

ROWS = 40  # with batch 9: steps of 9, 9, 9, 9, 4 examples -> uneven shards and a padded micro-batch


def build(model_dir, batch: int, n: int = ROWS):
    recipe = load_recipe(data={"model": {"path": str(model_dir)}, "data": {"train": "x.csv"},
                               "train": {"lr": 1e-3, "batch_size": batch, "warmup_ratio": 0, "precision": "fp32",
                                         "max_grad_norm": 1.0}})
    task = build_task(recipe.task)
    task.labels = LabelSet(["neg", "pos"])
    rows = toy_rows(n)
    ex = Examples("toy", {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]},
                  [("toy", i + 1, i + 2) for i in range(n)])
    source = vet_model_dir(str(model_dir), allow_pickle=False, trust_remote_code=False)
    tok = load_tokenizer(source, False)
    torch.manual_seed(0)  # the new head's initialisation: the same in every process
    model = task.load_model(source, trust_remote_code=False, attention="eager")
    return recipe, task, tok, task.encode(tok, ex), model


def fit_context(recipe, task, data, model, tok, dist=None) -> FitContext:
    opt = build_optimizer(model, recipe.train)
    return FitContext(model=model, method=build_method(recipe.method, task), task=task, train_data=data,
                      optimizer=opt, scheduler=build_scheduler(opt, recipe.train, 10), cfg=recipe.train, run=None,
                      device=torch.device("cpu"), precision="fp32", pad_id=tok.pad_token_id, evaluate=None,
                      total_steps=10, steps_per_epoch=10, dist=dist)


def epoch_plan(n: int, batch: int) -> list[np.ndarray]:
    return epoch_batches(np.arange(n) % 7 + 3, batch, seed=0, epoch=0, group_by_length=True)

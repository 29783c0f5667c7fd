"""Shared by the distributed tests and their torchrun worker: one tiny model, toy data and a FitContext."""

from __future__ import annotations

import numpy as np
import torch

from lftrain.data.batching import epoch_batches
from lftrain.methods import build_method
from lftrain.training.loop import FitContext
from lftrain.training.optim import build_optimizer, build_scheduler
from tests.conftest import toy_setup

ROWS = 40  # with batch 9: steps of 9, 9, 9, 9, 4 examples -> uneven shards and a padded micro-batch


def build(model_dir, batch: int, n: int = ROWS):
    # clipping on: the distributed path clips by the global norm, which must match one process's
    return toy_setup(model_dir, n, lr=1e-3, batch_size=batch, max_grad_norm=1.0)


def fit_context(recipe, task, data, model, tok, dist=None) -> FitContext:
    opt = build_optimizer(model, recipe.train)
    return FitContext(model=model, method=build_method(recipe.method, task), task=task, train_data=data,
                      optimizer=opt, scheduler=build_scheduler(opt, recipe.train, 10), cfg=recipe.train, run=None,
                      device=torch.device("cpu"), precision="fp32", pad_id=tok.pad_token_id, evaluate=None,
                      higher_is_better=True, total_steps=10, steps_per_epoch=10, dist=dist)


def epoch_plan(n: int, batch: int) -> list[np.ndarray]:
    return epoch_batches(np.arange(n) % 7 + 3, batch, seed=0, epoch=0, group_by_length=True)

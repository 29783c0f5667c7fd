"""Gradient checkpointing recomputes activations: the same loss and gradients, less memory."""

from __future__ import annotations

import torch

from lftrain.training.distributed import gradient_checkpointing
from tests.distributed.common import build


def _loss_and_grads(model, task, data, pad_id):
    batch = task.collate(data, torch.arange(16).numpy(), pad_id)
    model.train()
    torch.manual_seed(123)  # the same dropout masks in both runs (checkpointing replays the RNG state)
    out = model(**task.model_inputs(batch))
    loss = task.loss_sum(out, batch)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_same_loss_and_gradients_with_and_without(tiny_bert):  # tiny_bert has dropout 0.1
    _, task, tok, data, plain = build(tiny_bert, 16)
    _, _, _, _, checkpointed = build(tiny_bert, 16)
    gradient_checkpointing(checkpointed)
    assert checkpointed.is_activation_checkpointing and not plain.is_activation_checkpointing
    loss_a, grads_a = _loss_and_grads(plain, task, data, tok.pad_token_id)
    loss_b, grads_b = _loss_and_grads(checkpointed, task, data, tok.pad_token_id)
    assert abs(loss_a - loss_b) < 1e-6
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6, msg=name)

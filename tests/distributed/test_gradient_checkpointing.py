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


def test_the_first_token_path_stays_off_so_layers_are_recomputed(tiny_bert):
    """A layer with its own forward would skip transformers' checkpointing: the short path is not installed."""
    from lftrain import accel

    _, task, tok, data, model = build(tiny_bert, 16)
    run = accel.Run(torch.device("cpu"), "fp32", checkpointing=True)
    lines = accel.install(model, "auto", run).lines
    assert "first-token-only last layer: off (train.gradient_checkpointing recomputes the layers)" in lines
    gradient_checkpointing(model)
    calls = []
    for layer in model.bert.encoder.layer:
        assert "forward" not in vars(layer)
        layer.intermediate.register_forward_hook(lambda m, a, out: calls.append(out.shape))
    _loss_and_grads(model, task, data, tok.pad_token_id)
    assert len(calls) == 2 * len(model.bert.encoder.layer)  # forward, then the recomputation in backward
    _, _, _, _, plain = build(tiny_bert, 16)
    assert "first-token-only last layer: on (the head reads only the first token)" in accel.install(
        plain, "auto", accel.Run(torch.device("cpu"), "fp32")).lines
    assert "forward" in vars(plain.bert.encoder.layer[-1])

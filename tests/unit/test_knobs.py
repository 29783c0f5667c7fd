"""Training knobs: layer-wise lr decay, label smoothing, dropout override, and their recipe keys."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lftrain.models.layers import set_dropout_rate
from lftrain.training.optim import build_optimizer
from tests.unit.test_training import _setup


def test_layer_wise_lr_decay(tiny_bert_nodrop):
    recipe, _, _, _, model = _setup(tiny_bert_nodrop)
    recipe.train.layer_lr_decay = 0.5
    opt = build_optimizer(model, recipe.train)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    lr = recipe.train.lr
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(lr)
    assert lr_of[id(named["bert.pooler.dense.weight"])] == pytest.approx(lr)
    assert lr_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == pytest.approx(lr * 0.5)
    assert lr_of[id(named["bert.encoder.layer.0.output.dense.weight"])] == pytest.approx(lr * 0.25)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(lr * 0.125)


def test_label_smoothing_in_the_loss(tiny_bert_nodrop):
    _, task, _, _, _ = _setup(tiny_bert_nodrop)
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([0, 1])
    out, batch = SimpleNamespace(logits=logits), {"labels": labels}
    plain = task.loss_sum(out, batch)
    task.config.label_smoothing = 0.2
    smooth = task.loss_sum(out, batch)
    logp = torch.log_softmax(logits, -1)
    expected = -(0.9 * logp[0, 0] + 0.1 * logp[0, 1]) - (0.1 * logp[1, 0] + 0.9 * logp[1, 1])
    assert float(smooth) == pytest.approx(float(expected), rel=1e-6) and float(smooth) != float(plain)


def test_dropout_override(tiny_bert):
    _, _, _, _, model = _setup(tiny_bert)
    n = set_dropout_rate(model, 0.3)
    assert n > 0 and all(m.p == 0.3 for m in model.modules() if isinstance(m, torch.nn.Dropout))

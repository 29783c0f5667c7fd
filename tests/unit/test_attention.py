"""lftrain's attention kernel: padding must not change what a real token sees."""

from __future__ import annotations

import numpy as np
import torch

from lftrain.models.fast_dropout import fast_dropout, register_attention
from tests.unit.test_training import _setup


def test_padding_does_not_change_outputs(tiny_bert):
    _, task, tok, data, model = _setup(tiny_bert, 16, attention=register_attention())
    model.eval()
    lengths = task.lengths(data)
    short, long = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert lengths[short] < lengths[long]
    with torch.no_grad():
        alone = model(**task.model_inputs(task.collate(data, np.array([short]), tok.pad_token_id))).logits
        padded = model(**task.model_inputs(task.collate(data, np.array([short, long]), tok.pad_token_id))).logits
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)


def test_fast_dropout_rate_and_scale():
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    y = fast_dropout(x, 0.1)
    assert abs(float((y == 0).float().mean()) - 0.1) < 0.002
    assert abs(float(y.mean()) - 1.0) < 0.005  # expectation kept
    assert torch.equal(fast_dropout(x, 0.1, training=False), x) and torch.equal(fast_dropout(x, 0.0), x)

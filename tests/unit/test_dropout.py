"""Fast dropout (accel/dropout.py): torch's distribution from the gaps between drops; the attention kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftrain.accel import dropout as fd
from lftrain.accel.dropout import drop_positions, fast_dropout, register_attention
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
    y = fast_dropout(x, 0.5)  # above GAPS_MAX_RATE: the 16-bit uniforms
    assert abs(float((y == 0).float().mean()) - 0.5) < 0.002 and abs(float(y.mean()) - 1.0) < 0.005


@pytest.mark.parametrize("chunk", ["sized", "one gap at a time"])
def test_drop_positions_drop_each_element_independently_with_rate_p(monkeypatch, chunk):
    if chunk != "sized":  # the loop that draws more gaps when a chunk falls short of n
        monkeypatch.setattr(fd, "_chunk", lambda rest, p: 1)
    torch.manual_seed(0)
    n, p, trials = 6, 0.2, 20_000
    dropped = torch.zeros(trials, n, dtype=torch.bool)
    for t in range(trials):
        dropped[t, drop_positions(n, p)] = True
    rate = dropped.double().mean(0)  # sd of each rate: sqrt(0.16 / 20000) = 0.0028
    assert torch.all((rate - p).abs() < 0.012), rate  # the same p at every position, the ends included
    both = (dropped[:, :-1] & dropped[:, 1:]).double().mean()  # neighbours independent: p^2
    assert abs(float(both) - p * p) < 0.006
    counts = dropped.sum(1).bincount(minlength=n + 1).double() / trials  # number dropped: binomial(n, p)
    expected = torch.tensor([math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)], dtype=torch.double)
    assert torch.all((counts - expected).abs() < 0.015), (counts, expected)


def test_drop_gaps_are_geometric():
    torch.manual_seed(0)
    pos = drop_positions(2_000_000, 0.1)
    gaps = torch.diff(pos)
    assert bool(torch.all(gaps >= 1)) and int(pos[-1]) < 2_000_000
    for k in (1, 2, 10):  # P(gap = k) = (1-p)^(k-1) p
        assert abs(float((gaps == k).double().mean()) - 0.9 ** (k - 1) * 0.1) < 0.003


def test_fast_dropout_gradient_drops_what_the_forward_dropped():
    torch.manual_seed(0)
    x = (torch.rand(6, 7, 8) + 0.5).bfloat16().requires_grad_()
    xt = x.transpose(0, 2)  # not contiguous: positions follow the logical (row-major) order
    y = fast_dropout(xt, 0.1)
    y.backward(torch.ones_like(y))
    kept = y != 0
    assert 0 < int((~kept).sum()) < kept.numel()
    grad = x.grad.transpose(0, 2)
    assert torch.equal(grad != 0, kept)
    assert torch.equal(grad[kept], torch.full_like(grad[kept], 1 / 0.9))  # the same scale (rounded once to bf16)
    expected = (xt.detach().float() / 0.9).bfloat16()  # kept values scaled in float, rounded once
    assert torch.equal(y.detach()[kept], expected[kept])


def test_fast_dropout_under_torch_compile_is_torchs_dropout_without_graph_breaks():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    compiled = torch.compile(lambda t: fast_dropout(t, 0.1))
    y = compiled(torch.ones(200_000))
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert abs(float((y == 0).float().mean()) - 0.1) < 0.003 and abs(float(y.mean()) - 1.0) < 0.01

"""DP-SGD's moving parts on a tiny random BERT, in process: per-example clipping (against a hand computation),
micro-batches, empty Poisson batches, the Poisson sampler, and the layers Opacus cannot handle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lftrain.errors import InputError
from lftrain.training.privacy import PoissonSampler, make_private, unsupported_layers
from tests.conftest import toy_setup

B = 6


@pytest.fixture
def setup(tiny_bert_nodrop):
    recipe, task, tok, enc, model = toy_setup(tiny_bert_nodrop, n=B)
    model.train()
    batch = task.collate(enc, np.arange(B), tok.pad_token_id)
    return task, model, batch


def _weighted_loss_sum(task, model, batch, weights):
    """The batch's summed loss with example i's term multiplied by weights[i] (a weight of 1e4 = a huge gradient)."""
    out = model(**task.model_inputs(batch))
    return (F.cross_entropy(out.logits.float(), batch["labels"], reduction="none") * weights).sum()


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _reference_gradient(task, model, batch, weights, clip):
    """Per-example gradients one example at a time with plain autograd, each clipped to `clip`, summed, / B."""
    total = [torch.zeros_like(p) for p in _params(model)]
    for i in range(B):
        one = {k: v[i:i + 1] for k, v in batch.items()}
        grads = torch.autograd.grad(_weighted_loss_sum(task, model, one, weights[i:i + 1]), _params(model))
        scale = min(1.0, clip / (float(_flat(grads).norm()) + 1e-6))
        total = [t + g * scale for t, g in zip(total, grads)]
    return [t / B for t in total]


@pytest.mark.parametrize("micro", [B, 2])
def test_noise_free_step_is_the_mean_of_clipped_per_example_gradients(setup, micro):
    """The loop backpropagates (summed loss / the step's row count), in one pass or in micro-batches; the optimiser
    must still clip each example's own gradient: compared with a one-example-at-a-time computation."""
    task, model, batch = setup
    weights = torch.tensor([1e4] + [1.0] * (B - 1))  # example 0's gradient is far above the clip bound
    clip = 0.05
    expected = _reference_gradient(task, model, batch, weights, clip)
    _, opt = make_private(model, torch.optim.SGD(_params(model), lr=1.0), noise_multiplier=0.0,
                          max_grad_norm=clip, expected_batch_size=B)
    for start in range(0, B, micro):
        part = {k: v[start:start + micro] for k, v in batch.items()}
        (_weighted_loss_sum(task, model, part, weights[start:start + micro]) / B).backward()
    assert opt.pre_step()
    got = [p.grad for p in _params(model)]
    assert torch.allclose(_flat(got), _flat(expected), rtol=1e-4, atol=1e-7)


def test_one_huge_example_moves_the_weights_no_further_than_the_clip_bound(setup):
    task, model, batch = setup
    clip = 0.01
    weights = torch.tensor([1e6] + [0.0] * (B - 1))  # only example 0 contributes, with an enormous gradient
    before = _flat([p.detach().clone() for p in _params(model)])

    plain = torch.optim.SGD(_params(model), lr=1.0)
    (_weighted_loss_sum(task, model, batch, weights) / B).backward()
    unclipped = float(_flat([p.grad for p in _params(model)]).norm())
    plain.zero_grad(set_to_none=True)
    assert unclipped > 1000 * clip  # without DP this example alone would move the weights by this much

    _, opt = make_private(model, torch.optim.SGD(_params(model), lr=1.0), noise_multiplier=0.0,
                          max_grad_norm=clip, expected_batch_size=B)
    (_weighted_loss_sum(task, model, batch, weights) / B).backward()
    opt.step()
    moved = float((_flat([p.detach() for p in _params(model)]) - before).norm())
    assert moved == pytest.approx(clip / B, rel=1e-3)  # clipped to the bound, averaged over the expected batch


def test_an_empty_poisson_batch_is_still_a_noisy_step(setup):
    """No row sampled: no forward, no backward, yet the update is noise of std σ·C / B (the accountant counts it)."""
    task, model, batch = setup
    before = _flat([p.detach().clone() for p in _params(model)])
    _, opt = make_private(model, torch.optim.SGD(_params(model), lr=1.0), noise_multiplier=2.0, max_grad_norm=1.0,
                          expected_batch_size=B)
    opt.step()
    delta = _flat([p.detach() for p in _params(model)]) - before
    assert delta.numel() > 10_000
    assert float(delta.std()) == pytest.approx(2.0 * 1.0 / B, rel=0.05)
    opt.zero_grad(set_to_none=True)


def test_poisson_batches_vary_in_size_and_are_a_function_of_seed_and_epoch():
    n, rate = 1000, 0.05
    sampler = PoissonSampler(n, rate, seed=3, steps_per_epoch=400)
    batches = sampler.batches(0)
    sizes = np.array([len(b) for b in batches])
    assert len(batches) == 400 and len(set(sizes.tolist())) > 10  # not a fixed batch size
    # Binomial(n, q): mean nq = 50, std sqrt(nq(1-q)) = 6.9 (the bounds are > 5 standard errors wide)
    assert abs(sizes.mean() - n * rate) < 2.0
    assert 5.5 < sizes.std() < 8.5
    assert all(len(np.unique(b)) == len(b) and (b >= 0).all() and (b < n).all() for b in batches)
    again = PoissonSampler(n, rate, seed=3, steps_per_epoch=400).batches(0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))  # a resumed run draws the same batches
    assert not all(np.array_equal(a, b) for a, b in zip(batches, sampler.batches(1)))
    # each row is in a batch with probability q, independently: over 400 steps every row is taken ~20 times
    taken = np.bincount(np.concatenate(batches), minlength=n)
    assert abs(taken.mean() - 400 * rate) < 0.5


def test_layers_without_a_per_example_gradient_are_refused(setup):
    task, model, batch = setup
    assert unsupported_layers(model) == []

    class Scale(torch.nn.Module):  # a trainable layer Opacus has no grad sampler for
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(4))

    model.extra = Scale()
    norm = torch.nn.BatchNorm1d(4)  # trainable and with running statistics (buffers)
    model.extra_norm = norm
    assert unsupported_layers(model) == ["extra (Scale)", "extra_norm (BatchNorm1d)"]
    with pytest.raises(InputError, match=r"no per-example gradient for these trainable layers: extra \(Scale\)"):
        make_private(model, torch.optim.SGD(_params(model), lr=1.0), noise_multiplier=1.0, max_grad_norm=1.0,
                     expected_batch_size=B)


def test_a_trainable_weight_the_forward_does_not_use_gets_no_update_but_noise(setup):
    """Mean pooling leaves BERT's pooler unused: its per-example gradients are zero rows, not an Opacus error."""
    task, model, batch = setup
    model.unused = torch.nn.Linear(3, 3)
    before = model.unused.weight.detach().clone()
    _, opt = make_private(model, torch.optim.SGD(_params(model), lr=1.0), noise_multiplier=0.0, max_grad_norm=1.0,
                          expected_batch_size=B)
    (_weighted_loss_sum(task, model, batch, torch.ones(B)) / B).backward()
    assert model.unused.weight.grad_sample is None
    opt.step()
    assert torch.equal(model.unused.weight.detach(), before)
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_detach_leaves_the_plain_model(setup):
    task, model, batch = setup
    plain = model(**task.model_inputs(batch)).logits.detach()
    detach, opt = make_private(model, torch.optim.SGD(_params(model), lr=1.0), noise_multiplier=1.0,
                               max_grad_norm=1.0, expected_batch_size=B)
    assert torch.allclose(model(**task.model_inputs(batch)).logits, plain, atol=1e-6)  # the hooks change no output
    opt.zero_grad(set_to_none=True)
    detach()
    (_weighted_loss_sum(task, model, batch, torch.ones(B)) / B).backward()
    assert all(getattr(p, "grad_sample", None) is None for p in _params(model))
    assert all(p.grad is not None for p in _params(model))

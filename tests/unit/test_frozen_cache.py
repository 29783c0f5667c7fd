"""Cached frozen computation: same losses as computing the frozen bottom every step, and it knows when not to."""

from __future__ import annotations

import copy

import numpy as np
import torch

from lftrain.accel import StepHooks
from lftrain.accel.dropout import install_fast_dropout, register_attention
from lftrain.accel.frozen_cache import FrozenPrefixCache, plan
from lftrain.training.loop import _train_step
from tests.unit.test_training import _ctx, _setup


def _freeze_bottom(model, k: int, *, quiet: bool = True) -> None:
    bert = model.bert
    for module in [bert.embeddings, *bert.encoder.layer[:k]]:
        for p in module.parameters():
            p.requires_grad_(False)
        if quiet:
            for m in module.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0


def test_cached_prefix_gives_the_same_loss_trajectory(tiny_bert):
    # lftrain's own attention kernel and dropout, as in training: dropout stays active in the trained top
    # layer, so the random streams of both runs must line up too (a p=0 dropout draws nothing).
    recipe, task, tok, data, model = _setup(tiny_bert, 32, lr=1e-3, attention=register_attention())
    install_fast_dropout(model)
    _freeze_bottom(model, 1)
    twin = copy.deepcopy(model)
    k, why = plan(twin, augments_input=False)
    assert k == 1, why
    plain, cached = _ctx(recipe, task, data, model, tok), _ctx(recipe, task, data, twin, tok)
    cached.hooks = StepHooks(cache=FrozenPrefixCache(twin, k))
    cached.hooks.cache.build(task, data, batch_size=7, precision="fp32", device=torch.device("cpu"),
                              pad_id=tok.pad_token_id, spill_dir=None)
    model.train(), twin.train()  # as fit() does
    losses_plain, losses_cached = [], []
    rng = np.random.default_rng(0)
    for _ in range(6):
        idx = rng.permutation(32)[:16]
        torch.manual_seed(1)
        losses_plain.append(_train_step(plain, idx, 8)[0])
        torch.manual_seed(1)
        losses_cached.append(_train_step(cached, idx, 8)[0])
    np.testing.assert_allclose(losses_cached, losses_plain, rtol=1e-5, atol=1e-5)
    assert losses_plain[0] != losses_plain[-1]  # it trained
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    assert twin.bert.embeddings is cached.hooks.cache.embeddings  # the real modules are back after each step


def test_cache_switches_itself_off_and_says_why(tiny_bert):
    _, _, _, _, model = _setup(tiny_bert)
    assert plan(model, augments_input=False) == (-1, "the embeddings train")
    _freeze_bottom(model, 1, quiet=False)
    k, why = plan(model, augments_input=False)
    assert k == -1 and "dropout is active" in why
    _freeze_bottom(model, 1)
    assert plan(model, augments_input=False)[0] == 1
    assert plan(model, augments_input=True)[1].startswith("the task augments")


def test_freeze_recipe_turns_the_cache_on_and_frozen_dropout_turns_it_off(tiny_bert, tmp_path):
    from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

    train = write_csv(tmp_path / "train.csv", toy_rows(60))
    for name, extra, expected in (("quiet", {}, "frozen-prefix cache: on (embeddings and 1 frozen layer"),
                                  ("noisy", {"frozen_dropout": True}, "frozen-prefix cache: off (dropout is active"),
                                  ("off", {"accel": "off"}, "accel: off")):
        recipe = tiny_recipe(tiny_bert, train, tmp_path / name, max_steps=3)
        recipe["adaptation"] = {"type": "freeze", "bottom_layers": 1,
                                **{k: v for k, v in extra.items() if k != "accel"}}
        recipe["train"]["accel"] = extra.get("accel", "auto")
        proc = run_lft("train", str(write_recipe(tmp_path / f"{name}.yaml", recipe)))
        assert proc.returncode == 0, proc.stderr
        assert expected in proc.stderr, proc.stderr


def test_bf16_cache_holds_the_rounded_states_in_memory_and_on_disk(tiny_bert, tmp_path, monkeypatch):
    """bf16 runs keep half the bytes; the states are the fp32 cache's rounded to bf16, the
    memory-mapped copy (a large cache) holds the same words, and replay hands the model fp32."""
    import lftrain.accel.frozen_cache as fc

    recipe, task, tok, data, model = _setup(tiny_bert, 32, attention=register_attention())
    _freeze_bottom(model, 1)
    build = {"batch_size": 7, "precision": "fp32", "device": torch.device("cpu"), "pad_id": tok.pad_token_id}
    exact = FrozenPrefixCache(model, 1)
    exact.build(task, data, spill_dir=tmp_path, **build)
    half = FrozenPrefixCache(model, 1)
    half.build(task, data, spill_dir=tmp_path, dtype=torch.bfloat16, **build)
    assert half.states.dtype == torch.bfloat16 and half.states.shape == exact.states.shape
    assert torch.equal(half.states, exact.states.to(torch.bfloat16))
    monkeypatch.setattr(fc, "MEMORY_LIMIT_BYTES", 16)  # force the memory-mapped file
    mapped = FrozenPrefixCache(model, 1)
    mapped.build(task, data, spill_dir=tmp_path / "spill", dtype=torch.bfloat16, **build)
    assert (tmp_path / "spill" / "frozen_prefix.npy").is_file()
    assert torch.equal(mapped.states, half.states)
    replayed = mapped.batch_states(np.array([3, 0]), 40, torch.device("cpu"))
    assert replayed.dtype == torch.float32
    n = int(data["offsets"][4] - data["offsets"][3])
    torch.testing.assert_close(replayed[0, :n], exact.states[data["offsets"][3]:data["offsets"][4]],
                               rtol=2 ** -8, atol=0)
    assert not replayed[0, n:].any()  # padding stays zero


def test_training_memory_is_released_before_the_final_evaluation(tiny_bert):
    """Once fit() is done, the optimizer moments, gradients and cached states are dropped (they would sit
    under the final evaluation's memory); the model itself is untouched."""
    from lftrain.training.loop import release_training_memory

    recipe, task, tok, data, model = _setup(tiny_bert, 32, lr=1e-3, attention=register_attention())
    _freeze_bottom(model, 1)
    ctx = _ctx(recipe, task, data, model, tok)
    ctx.hooks = StepHooks(cache=FrozenPrefixCache(model, 1))
    ctx.hooks.cache.build(task, data, batch_size=7, precision="fp32", device=torch.device("cpu"),
                          pad_id=tok.pad_token_id, spill_dir=None)
    model.train()
    _train_step(ctx, np.arange(16), 8)
    ctx.optimizer.zero_grad(set_to_none=False)  # gradients present, as they could be after a skipped step
    assert ctx.optimizer.state
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    release_training_memory(ctx)
    assert not ctx.optimizer.state and ctx.hooks.cache.states is None
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())

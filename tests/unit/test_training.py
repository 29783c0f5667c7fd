"""The loop's arithmetic: accumulation, schedules, batch order, checkpoints."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lftrain.data.batching import epoch_batches
from lftrain.methods import build_method
from lftrain.training import checkpoint as ck
from lftrain.training.loop import FitContext, _train_step
from lftrain.training.optim import build_optimizer, build_scheduler
from tests.conftest import toy_setup

_setup = toy_setup  # (model_dir, n, lr=..., attention=...): in-process setup shared with the other loop tests


def _ctx(recipe, task, data, model, tok, sgd: bool = False):
    # SGD makes the update linear in the gradient, so equal updates mean equal gradients (Adam's first
    # step is ~lr*sign(g) and would turn rounding noise in near-zero gradients into full-size differences).
    opt = torch.optim.SGD(model.parameters(), lr=1.0) if sgd else build_optimizer(model, recipe.train)
    return FitContext(model=model, method=build_method(recipe.method, task), task=task, train_data=data,
                      optimizer=opt, scheduler=build_scheduler(opt, recipe.train, 10), cfg=recipe.train, run=None,
                      device=torch.device("cpu"), precision="fp32", pad_id=tok.pad_token_id, evaluate=None,
                      higher_is_better=True, total_steps=10, steps_per_epoch=10)


@pytest.mark.parametrize("n, micro", [(32, 8), (30, 8)])
def test_accumulated_micro_batches_equal_one_big_batch(tiny_bert_nodrop, n, micro):
    recipe, task, tok, data, model = _setup(tiny_bert_nodrop, n)
    twin = copy.deepcopy(model)
    idx = np.arange(n)
    loss_a, units_a = _train_step(_ctx(recipe, task, data, model, tok, sgd=True), idx, micro)
    loss_b, units_b = _train_step(_ctx(recipe, task, data, twin, tok, sgd=True), idx, n)
    assert units_a == units_b == n
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5, msg=name)
    moved = sum(float((a - b).abs().sum()) for a, b in zip(model.parameters(),
                                                            _setup(tiny_bert_nodrop, n)[4].parameters()))
    assert moved > 0  # the step really changed the weights


def test_linear_schedule_with_warmup():
    cfg = SimpleNamespace(warmup_steps=None, warmup_ratio=0.2, scheduler="linear")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, cfg, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert lrs[2] > lrs[5] > lrs[9] > 0 and lrs[9] == pytest.approx(1 / 8)


def test_no_weight_decay_on_biases_and_norms(tiny_bert_nodrop):
    recipe, task, tok, data, model = _setup(tiny_bert_nodrop)
    opt = build_optimizer(model, recipe.train)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim >= 2 and "norm" not in name.lower()), name


def test_epoch_batches_cover_each_example_once_and_are_reproducible():
    lengths = np.random.default_rng(0).integers(3, 100, size=1000)
    b1 = epoch_batches(lengths, 32, seed=7, epoch=3)
    b2 = epoch_batches(lengths, 32, seed=7, epoch=3)
    assert all((x == y).all() for x, y in zip(b1, b2))
    flat = np.concatenate(b1)
    assert sorted(flat.tolist()) == list(range(1000))
    other = epoch_batches(lengths, 32, seed=7, epoch=4)
    assert not all(len(x) == len(y) and (x == y).all() for x, y in zip(b1, other))
    # grouping by length leaves little padding compared with random batches
    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)
    assert padding(b1) < 0.2 * padding(epoch_batches(lengths, 32, 7, 3, group_by_length=False))


def test_batches_are_padded_to_a_multiple_of_8_within_max_length(tiny_bert):
    _, task, tok, data, model = _setup(tiny_bert, 16)
    lengths = task.lengths(data)
    assert len(set(lengths.tolist())) > 2 and lengths.max() % 8  # rows of several lengths, not all multiples
    for idx in (np.arange(16), np.argsort(lengths)[:3], np.array([int(np.argmax(lengths))])):
        batch = task.collate(data, idx, tok.pad_token_id)
        width = batch["input_ids"].shape[1]
        assert width % 8 == 0 and width - 8 < lengths[idx].max() <= width
        assert batch["attention_mask"].sum(1).tolist() == lengths[idx].tolist()  # the padding is masked out
    task.config.pad_to_multiple_of = 1
    assert task.collate(data, np.arange(16), tok.pad_token_id)["input_ids"].shape[1] == lengths.max()
    task.config.pad_to_multiple_of, task.config.max_length = 8, int(lengths.max())
    assert task.collate(data, np.arange(16), tok.pad_token_id)["input_ids"].shape[1] == lengths.max()  # capped


def test_checkpoint_round_trip_and_rotation(tmp_path, tiny_bert_nodrop):
    recipe, task, tok, data, model = _setup(tiny_bert_nodrop)
    ctx = _ctx(recipe, task, data, model, tok)
    _train_step(ctx, np.arange(16), 16)
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        ck.save_checkpoint(root, model, ctx.optimizer, ctx.scheduler, ck.TrainState(step=step, best_step=1))
        ck.rotate(root, keep=2, protect={1})
    assert [p.name for p in ck.list_checkpoints(root)] == ["step-00000001", "step-00000003", "step-00000004"]
    twin = _setup(tiny_bert_nodrop)[4]
    tctx = _ctx(recipe, task, data, twin, tok)
    state = ck.load_checkpoint(root / "step-00000004", twin, tctx.optimizer, tctx.scheduler)
    assert state.step == 4
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert tctx.optimizer.state_dict()["state"][0]["step"] == ctx.optimizer.state_dict()["state"][0]["step"]


def test_checkpoint_weights_are_a_safetensors_file(tmp_path):
    """The weights are streamed tensor by tensor (no model-sized bytes object); safetensors itself must read them
    back exactly: every dtype a state dict holds, a scalar, an empty tensor, and tied names as metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    m = torch.nn.Module()
    m.a, m.b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 5).to(torch.bfloat16)
    m.tied = m.a
    for name, t in {"ids": torch.arange(5), "flags": torch.tensor([True, False]), "scale": torch.tensor(2.5),
                    "empty": torch.zeros(0, 3), "fp16": torch.ones(2, dtype=torch.float16)}.items():
        m.register_buffer(name, t)
    path = tmp_path / "model.safetensors"
    ck._write(path, ck._safetensors(m))
    got, want = load_file(path), m.state_dict()
    assert sorted(got) == sorted(k for k in want if not k.startswith("tied."))
    for name, t in got.items():
        assert t.dtype == want[name].dtype and torch.equal(t, want[name]), name
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"tied.weight": "a.weight", "tied.bias": "a.bias"}


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, tiny_bert_nodrop):
    recipe, task, tok, data, model = _setup(tiny_bert_nodrop)
    ctx = _ctx(recipe, task, data, model, tok)
    root = tmp_path / "checkpoints"
    for step in (1, 2):
        ck.save_checkpoint(root, model, ctx.optimizer, ctx.scheduler, ck.TrainState(step=step))
    newest = root / "step-00000002" / "model.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[-1] ^= 0xFF
    newest.write_bytes(bytes(raw))
    (root / ".tmp-step-00000003").mkdir()
    ck.clean_temporary(root)
    assert not (root / ".tmp-step-00000003").exists()
    assert ck.latest_good(root).name == "step-00000001"


def test_sparse_embedding_grads_give_the_same_adamw_updates(tiny_bert_nodrop, monkeypatch):
    from lftrain.accel import StepHooks, sparse_grads

    monkeypatch.setattr(sparse_grads, "MIN_ROWS", 1)  # the tiny vocabulary is below the production threshold
    recipe, task, tok, data, model = _setup(tiny_bert_nodrop, 32)
    recipe.train.max_grad_norm = 0.5  # clipping must read the sparse rows correctly too
    twin = copy.deepcopy(model)

    def ctx_for(m, sparse):
        ctx = _ctx(recipe, task, data, m, tok)
        # A large eps keeps Adam from turning rounding noise in near-zero gradients into sign flips.
        ctx.optimizer = torch.optim.AdamW(m.parameters(), lr=1e-2, eps=1e-3, fused=True)
        ctx.hooks = StepHooks(sparse=sparse_grads.SparseEmbeddingGrads(m) if sparse else None)
        return ctx

    dense_ctx, sparse_ctx = ctx_for(model, False), ctx_for(twin, True)
    assert sparse_ctx.hooks.sparse.active and twin.bert.embeddings.word_embeddings.sparse
    for step in range(3):
        idx = np.arange(step * 8, step * 8 + 16) % 32
        _train_step(dense_ctx, idx, 8)
        _train_step(sparse_ctx, idx, 8)
    emb = sparse_ctx.hooks.sparse._buffers[id(twin.bert.embeddings.word_embeddings)]
    assert float(emb.abs().sum()) == 0.0  # the buffer is clean between steps
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)

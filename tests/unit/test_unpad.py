"""train.unpad: layers that skip padding rows change no logit and no gradient, and really skip them."""

from __future__ import annotations

import copy

import pytest
import torch

from lftrain import kernels
from lftrain.models import unpad
from lftrain.models.fast_dropout import register_attention
from lftrain.models.first_token import install_first_token_only
from lftrain.models.unpad import install_unpadded_layers
from tests.unit.test_first_token import _assert_same_training_step, _load, lora_model


@pytest.fixture(autouse=True)
def _small_row_multiple(monkeypatch):
    monkeypatch.setattr(unpad, "ROWS_MULTIPLE", 4)  # the tiny batches below hold fewer than 128 tokens


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    mask[3, 4:] = 0  # 9 + 6 + 2 + 4 = 21 real tokens of 36: 24 rows computed
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 2])}


def _pair(model, *, first_token: bool = False):
    fast = copy.deepcopy(model)
    if first_token:
        assert install_first_token_only(fast) is None
    assert install_unpadded_layers(fast) is None
    return model, fast


def _ffn_rows(model) -> list[int]:
    """Rows each layer's feed-forward block sees, per call (flattened row count)."""
    from lftrain.models.adaptation import find_layers

    seen: list[int] = []
    for layer in find_layers(model).layers:
        layer.intermediate.register_forward_hook(lambda m, a, out: seen.append(out.numel() // out.shape[-1]))
    return seen


@pytest.mark.parametrize("attention", ["eager", "sdpa", "lft"])
def test_bert_same_logits_and_gradients(tiny_bert, attention):
    full, fast = _pair(_load(tiny_bert, register_attention() if attention == "lft" else attention, dropout=0.0))
    batch = _batch(full.config.vocab_size)
    _assert_same_training_step(full.train(), fast.train(), batch)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(**batch).logits, full.eval()(**batch).logits, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("left_padded", [False, True])
def test_with_the_first_token_layer(tiny_bert, left_padded):
    full, fast = _pair(_load(tiny_bert, dropout=0.0), first_token=True)
    seen, keys = _ffn_rows(fast), []
    fast.bert.encoder.layer[-1].attention.self.key.register_forward_hook(
        lambda m, a, out: keys.append(out.numel() // out.shape[-1]))
    batch = _batch(full.config.vocab_size)
    if left_padded:  # position 0 of row 2 is padding, yet the head reads it: no layer may skip padding rows
        batch["attention_mask"][2] = batch["attention_mask"][2].flip(0)
    _assert_same_training_step(full.train(), fast.train(), batch)
    # The lower layer: 21 real rows rounded up to 24; the last layer's FFN: one row per example, its keys: the rows.
    assert (seen, keys) == (([36, 4], [36]) if left_padded else ([24, 4], [24]))


def test_the_rows_are_skipped_only_inside_the_classifier(tiny_bert):
    _, fast = _pair(_load(tiny_bert))
    seen = _ffn_rows(fast)
    batch = _batch(fast.config.vocab_size)
    fast(**batch)
    assert seen == [24, 24]
    fast.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # the encoder on its own
    assert seen[2:] == [36, 36]
    fast(**batch, output_hidden_states=True)  # hidden states asked for: the padded grid, as HF returns it
    assert seen[4:] == [36, 36]
    with pytest.raises(ValueError, match="batch_size"):
        fast(**{**batch, "labels": torch.tensor([0, 1])})  # a classifier call that fails half-way
    fast.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert seen[-2:] == [36, 36]  # the failed call left the short path off


def test_no_padding_and_full_rounding_take_the_whole_grid(tiny_bert, monkeypatch):
    _, fast = _pair(_load(tiny_bert))
    seen = _ffn_rows(fast)
    batch = _batch(fast.config.vocab_size)
    fast(**{**batch, "attention_mask": torch.ones_like(batch["attention_mask"])})
    monkeypatch.setattr(unpad, "ROWS_MULTIPLE", 64)  # 21 real tokens round past the 36-position grid
    fast(**batch)
    assert seen == [36, 36, 36, 36]


def test_a_training_step_with_dropout(tiny_bert):
    """Dropout (the tiny BERT has 0.1) on packed rows: finite loss and gradients from the short paths."""
    _, fast = _pair(_load(tiny_bert), first_token=True)
    seen = _ffn_rows(fast.train())
    out = fast(**_batch(fast.config.vocab_size))
    out.loss.backward()
    assert seen == [24, 4] and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in fast.parameters() if p.grad is not None)


def test_a_deep_copy_switches_its_own_layers(tiny_bert):
    """The short paths' state lives on the model, so a copy's hooks switch the copy's layers, not the original's."""
    full, fast = _pair(_load(tiny_bert, dropout=0.0), first_token=True)
    twin = copy.deepcopy(fast)
    seen_fast, seen_twin = _ffn_rows(fast), _ffn_rows(twin)
    _assert_same_training_step(full.train(), twin.train(), _batch(full.config.vocab_size))
    assert seen_twin == [24, 4] and seen_fast == []


def test_lora_model_same_gradients(tiny_bert):
    full, fast = _pair(lora_model(tiny_bert), first_token=True)
    seen = _ffn_rows(fast)
    _assert_same_training_step(full.train(), fast.train(), _batch(full.config.vocab_size))
    assert seen == [24, 4]


def test_not_installed_where_the_head_reads_every_token(tiny_bert):
    from transformers import AutoModelForTokenClassification

    tokens = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    assert "not a BERT-family sequence classifier" in install_unpadded_layers(tokens)


def test_the_first_token_layer_goes_first(tiny_bert):
    fast = _load(tiny_bert)
    assert install_unpadded_layers(fast) is None
    assert "install this first" in install_first_token_only(fast)


@pytest.mark.skipif(not (kernels.load() and kernels.load().lft_attn_available()), reason="attention kernel: AVX-512")
@pytest.mark.parametrize("compiled_layout", [True, False])  # False: the context comes back by torch's operators
def test_compiled_attention_under_bf16_matches_the_operators(tiny_bert, monkeypatch, compiled_layout):
    # With fast dropout's attention and bf16 autocast the unpadded layers run the compiled attention kernel
    # (softmax and dropout in one pass). It draws the same dropout keys as the operators' path, so the two paths
    # train on the same masks and differ only by the softmax's roundings.
    from lftrain.kernels.attention import KernelAttentionProbs
    from lftrain.models import fast_dropout

    monkeypatch.setattr(unpad, "COMPILED_LAYOUT", compiled_layout)
    calls = []
    apply = KernelAttentionProbs.apply
    monkeypatch.setattr(KernelAttentionProbs, "apply", lambda *args: calls.append(args[-1]) or apply(*args))

    def step(compiled: bool):
        monkeypatch.setattr(fast_dropout, "KERNEL_ATTENTION", compiled)
        torch.manual_seed(0)
        model = _load(tiny_bert, register_attention(), dropout=0.1)
        fast_dropout.install_fast_dropout(model)
        assert install_unpadded_layers(model) is None
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.train()(**_batch(model.config.vocab_size)).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    loss_ops, grads_ops = step(False)
    assert calls == []
    loss_kernel, grads_kernel = step(True)
    assert calls == [0.1, 0.1]  # both layers, with their attention dropout
    torch.testing.assert_close(loss_kernel, loss_ops, rtol=1e-2, atol=0)
    for name, grad in grads_ops.items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(grads_kernel[name], grad, rtol=0, atol=0.05 * scale + 1e-8, msg=name)


@pytest.mark.skipif(kernels.load() is None, reason="no compiled kernels here")
@pytest.mark.parametrize("pack", [False, True])
def test_whole_grid_batches_take_the_packed_path_with_the_kernels(tiny_bert, monkeypatch, pack):
    # A batch whose rounded row count reaches the grid skips no rows; with the kernels it still takes the packed
    # path (every position a row) for the compiled moves and attention, with the plain layer's logits and gradients.
    from lftrain.kernels.layout import RowsToHeads

    monkeypatch.setattr(unpad, "ROWS_MULTIPLE", 64)  # 21 real tokens round past the 36-position grid
    monkeypatch.setattr(unpad, "PACK_FULL_GRIDS", pack)
    calls = []
    apply = RowsToHeads.apply
    monkeypatch.setattr(RowsToHeads, "apply", lambda *args: calls.append(args[0].shape[0]) or apply(*args))
    full, fast = _pair(_load(tiny_bert, dropout=0.0), first_token=True)
    seen = _ffn_rows(fast)
    _assert_same_training_step(full.train(), fast.train(), _batch(full.config.vocab_size))
    assert seen == [36, 4]  # the first layer: all 36 positions; the head's layer: the 4 first rows
    assert calls == ([36] * 5 if pack else [])  # queries, keys, values; the head's layer's keys and values

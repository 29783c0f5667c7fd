"""train.first_token_only: the last layer computing only the head's row changes no logit and no gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    ElectraConfig,
    ElectraModel,
    RobertaConfig,
    RobertaModel,
)

from lftrain.accel.dropout import register_attention
from lftrain.accel.first_token import install_first_token_only


def _load(directory, attention="eager", dropout=None):
    extra = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    return AutoModelForSequenceClassification.from_pretrained(directory, num_labels=3, attn_implementation=attention,
                                                              **extra)


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padded rows: the first query must ignore the same keys as in the full layer
    mask[3, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 2])}


def _pair(model):
    """The model and an untouched deep copy with the short path installed on the copy."""
    fast = copy.deepcopy(model)
    assert install_first_token_only(fast) is None
    return model, fast


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_training_step(full, fast, batch):
    logits_full, grads_full = _loss_and_grads(full, batch)
    logits_fast, grads_fast = _loss_and_grads(fast, batch)
    torch.testing.assert_close(logits_fast, logits_full, atol=1e-6, rtol=1e-5)
    assert grads_fast.keys() == grads_full.keys()
    for name, grad in grads_full.items():
        torch.testing.assert_close(grads_fast[name], grad, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attention", ["eager", "sdpa", "lft"])
def test_bert_same_logits_and_gradients(tiny_bert, attention):
    full, fast = _pair(_load(tiny_bert, register_attention() if attention == "lft" else attention, dropout=0.0))
    full.train(), fast.train()
    batch = _batch(full.config.vocab_size)
    _assert_same_training_step(full, fast, batch)
    full.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(**batch).logits, full(**batch).logits, atol=1e-6, rtol=1e-5)


def test_the_short_path_runs_and_skips_the_other_rows(tiny_bert):
    """Guards the test above against comparing two full layers: the last layer's FFN sees one row per example."""
    _, fast = _pair(_load(tiny_bert))
    rows = []
    fast.bert.encoder.layer[-1].intermediate.register_forward_hook(lambda m, a, out: rows.append(out.shape[1]))
    batch = _batch(fast.config.vocab_size)
    fast(**batch)
    assert rows == [1]
    fast.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # the encoder on its own
    assert rows == [1, 9]
    with pytest.raises(ValueError, match="batch_size"):
        fast(**{**batch, "labels": torch.tensor([0, 1])})  # a classifier call that fails half-way
    fast.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert rows[-1] == 9  # the failed call left the short path off


@pytest.mark.parametrize("family", ["roberta", "electra"])
def test_other_first_token_families(tmp_path, family):
    config_cls, model_cls = {"roberta": (RobertaConfig, RobertaModel), "electra": (ElectraConfig, ElectraModel)}[family]
    torch.manual_seed(0)
    config = config_cls(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, pad_token_id=1)
    model_cls(config).save_pretrained(tmp_path)
    full, fast = _pair(_load(tmp_path))
    _assert_same_training_step(full.train(), fast.train(), _batch(60))


def test_hidden_states_requested_get_the_full_layer(tiny_bert):
    full, fast = _pair(_load(tiny_bert).eval())
    batch = _batch(full.config.vocab_size)
    with torch.no_grad():
        a = full(**batch, output_hidden_states=True)
        b = fast(**batch, output_hidden_states=True)
    assert b.hidden_states[-1].shape == a.hidden_states[-1].shape == (4, 9, full.config.hidden_size)
    torch.testing.assert_close(b.hidden_states[-1], a.hidden_states[-1])


def lora_model(directory):
    """A LoRA classifier on the tiny BERT whose adapters change the output (B is non-zero)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(_load(directory, dropout=0.0),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapters matter for the comparison
            torch.nn.init.normal_(p, std=0.1)
    return model


def test_lora_model_same_gradients(tiny_bert):
    full, fast = _pair(lora_model(tiny_bert))
    _assert_same_training_step(full.train(), fast.train(), _batch(full.config.vocab_size))


def test_not_installed_where_the_head_reads_every_token(tiny_bert):
    tokens = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    assert "may read more than the first token" in install_first_token_only(tokens)

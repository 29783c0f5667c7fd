"""Loss masking, truncation, and packing isolation on a tiny random Llama (loaded from disk like a user's model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lftrain.data.examples import Examples
from lftrain.data.packing import first_fit_decreasing
from lftrain.tasks.causal_lm_sft import IGNORE, CausalLMSFT

CONVS = [
    [{"role": "user", "content": "review: the film was good"}, {"role": "assistant", "content": "fresh"}],
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello world, a very good plot"}],
    [{"role": "system", "content": "say yes"}, {"role": "user", "content": "what?"},
     {"role": "assistant", "content": "yes"}, {"role": "user", "content": "again"},
     {"role": "assistant", "content": "yes yes"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "no"}],
]


def _examples(convs=CONVS) -> Examples:
    return Examples("toy", {"messages": convs}, [("toy.jsonl", i + 1, i + 1) for i in range(len(convs))])


def _task(**kw) -> CausalLMSFT:
    return CausalLMSFT(CausalLMSFT.Config(type="causal-lm-sft", **{"max_length": 128, **kw}))


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def model(tiny_llama):
    from transformers import AutoModelForCausalLM

    from lftrain.accel.dropout import register_attention

    register_attention()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()


def _tokens(tok, enc, k):
    s, e = enc["offsets"][k], enc["offsets"][k + 1]
    return enc["input_ids"][s:e], enc["loss_mask"][s:e]


def test_exactly_the_response_tokens_carry_loss(tok):
    task = _task()
    enc = task.encode(tok, _examples())
    ids, mask = _tokens(tok, enc, 0)
    assert tok.decode(ids[mask == 1]) == "fresh<|im_end|>\n"
    assert tok.decode(ids[mask == 0]).endswith("<|im_start|>assistant\n")
    ids, mask = _tokens(tok, enc, 2)  # two assistant turns: both learn, the user turn between them does not
    marked = tok.decode(ids[mask == 1])
    assert marked == "yes<|im_end|>\nyes yes<|im_end|>\n"
    # In the batch, a label is the next token, present exactly where that token is a response token.
    batch = task.collate(enc, np.arange(len(CONVS)), tok.pad_token_id)
    for k in range(len(CONVS)):
        ids, mask = _tokens(tok, enc, k)
        expected = sorted(ids[1:][mask[1:] == 1].tolist())
        assert expected
    labels = batch["labels"][batch["labels"] != IGNORE].tolist()
    all_targets = [t for k in range(len(CONVS)) for t in _tokens(tok, enc, k)[0][1:][_tokens(tok, enc, k)[1][1:] == 1]]
    assert sorted(labels) == sorted(int(t) for t in all_targets)
    assert task.loss_units(batch) == int(enc["loss_mask"].sum())


def test_mask_prompt_off_trains_on_every_token(tok):
    enc = _task(mask_prompt=False).encode(tok, _examples())
    lengths = np.diff(enc["offsets"])
    assert int(enc["loss_mask"].sum()) == int(lengths.sum()) - len(lengths)  # all but each first token


def test_loss_is_the_cross_entropy_of_the_response_tokens_only(tok, model):
    task = _task(packing=False)
    enc = task.encode(tok, _examples(CONVS[:1]))
    batch = task.collate(enc, np.array([0]), tok.pad_token_id)
    with torch.no_grad():
        loss = task.loss_sum(model(**task.model_inputs(batch)), batch)
        full = model(input_ids=batch["input_ids"]).logits[0]
    ids, mask = _tokens(tok, enc, 0)
    pos = np.flatnonzero(mask[1:])  # logits at t predict token t+1
    manual = torch.nn.functional.cross_entropy(full[pos], torch.as_tensor(ids[1:][pos], dtype=torch.long),
                                               reduction="sum")
    torch.testing.assert_close(loss, manual, rtol=1e-5, atol=1e-5)


def test_overlong_truncated_or_dropped_and_counted(tok):
    enc = _task(max_length=34).encode(tok, _examples())
    assert np.diff(enc["offsets"]).max() <= 34
    assert enc["overlong"][0] > 0  # truncated
    dropped = _task(max_length=34, overlong="drop").encode(tok, _examples())
    assert len(dropped["example_index"]) < len(CONVS)
    assert dropped["overlong"][1] == len(CONVS) - len(dropped["example_index"])


def test_first_fit_decreasing_respects_capacity():
    lengths = np.array([5, 9, 3, 7, 2, 8])
    bins = first_fit_decreasing(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(6))
    assert all(lengths[b].sum() <= 10 for b in bins)


@pytest.mark.parametrize("attention", ["eager", "sdpa", "lft_eager"])
def test_packed_batch_gives_each_example_its_loss_alone(tok, tiny_llama, attention):
    from transformers import AutoModelForCausalLM

    from lftrain.accel.dropout import register_attention

    register_attention()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32, attn_implementation=attention).eval()
    task = _task(packing=True, pack_length=128)
    enc = task.encode(tok, _examples())
    packed = task.collate(enc, np.arange(len(CONVS)), tok.pad_token_id)
    assert packed["input_ids"].shape[0] < len(CONVS)  # several examples really share a row
    assert "attention_mask" not in packed
    with torch.no_grad():
        together = float(task.loss_sum(model(**task.model_inputs(packed)), packed))
        alone = []
        for k in range(len(CONVS)):
            b = _task(packing=False).collate(enc, np.array([k]), tok.pad_token_id)
            alone.append(float(task.loss_sum(model(**task.model_inputs(b)), b)))
        # and per example: each example's positions in the packed rows give its own loss
        logits = model(**{**task.model_inputs(packed), "logits_to_keep": 0}).logits
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), packed["labels"], reduction="none",
                                                      ignore_index=IGNORE)
    assert together == pytest.approx(sum(alone), rel=1e-5)
    starts = (packed["position_ids"] == 0) & (packed["input_ids"] != tok.pad_token_id)
    segments = torch.cumsum(starts.flatten().long(), 0).view_as(starts)
    found = sorted(float(per_token.flatten()[(segments.flatten() == s)].sum()) for s in segments.unique() if s > 0)
    assert found == pytest.approx(sorted(alone), rel=1e-5)


def test_padded_batch_matches_alone_too(tok, model):
    task = _task(packing=False)
    enc = task.encode(tok, _examples())
    batch = task.collate(enc, np.arange(len(CONVS)), tok.pad_token_id)
    with torch.no_grad():
        together = float(task.loss_sum(model(**task.model_inputs(batch)), batch))
        alone = sum(float(task.loss_sum(model(**task.model_inputs(b)), b))
                    for b in (task.collate(enc, np.array([k]), tok.pad_token_id) for k in range(len(CONVS))))
    assert together == pytest.approx(alone, rel=1e-5)

"""Distillation building blocks on tiny models: the KD loss by hand, layer dropping, the teacher's cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftrain.errors import InputError
from lftrain.methods.distill import IGNORE, distill_loss, kd_loss, uniform_map
from lftrain.models.student import drop_layers, every_other, resolve_keep


def _softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_a_hand_computation():
    s, t, T = [1.0, -0.5, 0.25], [0.2, 1.5, -1.0], 2.0
    ps, pt = _softmax([x / T for x in s]), _softmax([x / T for x in t])
    by_hand = T * T * sum(q * math.log(q / p) for q, p in zip(pt, ps))
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), T)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(by_hand, rel=1e-6)
    assert kd_loss(torch.tensor([t]), torch.tensor([t]), T).item() == pytest.approx(0.0, abs=1e-7)


def test_distill_loss_mixes_soft_and_hard_on_labelled_rows_only():
    s = torch.tensor([[1.0, -0.5], [0.3, 0.9]])
    t = torch.tensor([[0.2, 1.5], [2.0, -1.0]])
    labels = torch.tensor([1, IGNORE])
    T, alpha = 3.0, 0.3
    soft = kd_loss(s, t, T)
    ce0 = -math.log(_softmax([1.0, -0.5])[1])  # row 0 is labelled 1
    got = distill_loss(s, t, labels, temperature=T, alpha=alpha)
    assert got[0].item() == pytest.approx(alpha * soft[0].item() + (1 - alpha) * ce0, rel=1e-6)
    assert got[1].item() == pytest.approx(soft[1].item(), rel=1e-6)  # unlabelled: the soft term alone


def test_every_other_is_distilberts_choice():
    assert every_other(12) == [0, 2, 4, 7, 9, 11]
    assert every_other(6) == [0, 2, 5]
    assert every_other(4) == [0, 3]
    assert resolve_keep([-1, 0], 6) == [0, 5]
    for bad in ([6], [1, 1], []):
        with pytest.raises(InputError, match="keep_layers"):
            resolve_keep(bad, 6)


def test_uniform_hidden_map_meets_at_the_top():
    assert uniform_map(3, 6) == {0: 1, 1: 3, 2: 5}
    assert uniform_map(2, 2) == {0: 0, 1: 1}


def test_drop_layers_keeps_the_right_blocks_and_reloads(tmp_path):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2)
    teacher = BertForSequenceClassification(config).eval()
    original = {i: {k: v.clone() for k, v in layer.state_dict().items()}
                for i, layer in enumerate(teacher.bert.encoder.layer)}
    student = drop_layers(BertForSequenceClassification(config).eval(), None)  # None: unchanged
    assert len(student.bert.encoder.layer) == 4
    student.load_state_dict(teacher.state_dict())
    drop_layers(student, [0, 3])
    assert len(student.bert.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    for new, old in enumerate([0, 3]):
        for k, v in student.bert.encoder.layer[new].state_dict().items():
            assert torch.equal(v, original[old][k]), (new, old, k)
    # The output equals running the kept blocks of the teacher by hand.
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.no_grad():
        h = teacher.bert.embeddings(input_ids=ids)
        for i in (0, 3):
            out = teacher.bert.encoder.layer[i](h)
            h = out[0] if isinstance(out, tuple) else out
        expected = teacher.classifier(teacher.bert.pooler(h))
        assert torch.allclose(student(input_ids=ids).logits, expected, atol=1e-6)
    student.save_pretrained(tmp_path / "s")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s").eval()
    assert len(again.bert.encoder.layer) == 2
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-6)


def test_teacher_batches_carry_cached_rows():
    from lftrain.methods.distill import _with_unlabelled, _WithTeacher
    from lftrain.tasks.text_classification import TextClassification

    task = TextClassification(TextClassification.Config(pad_to_multiple_of=1))  # exact widths
    lab = {"input_ids": np.array([5, 6, 7, 8, 9], np.int32), "offsets": np.array([0, 2, 5]),
           "token_type_ids": np.zeros(5, np.int8), "labels": np.array([1, 0])}
    unl = {"input_ids": np.array([4, 4, 4], np.int32), "offsets": np.array([0, 3]),
           "token_type_ids": np.zeros(3, np.int8)}
    enc = _with_unlabelled(lab, unl)
    enc["teacher_logits"] = np.arange(6, dtype=np.float32).reshape(3, 2)
    batch = _WithTeacher(task).collate(enc, np.array([2, 0]), 0)
    assert batch["input_ids"].tolist() == [[4, 4, 4], [5, 6, 0]]
    assert batch["labels"].tolist() == [IGNORE, 1]
    assert batch["teacher_logits"].tolist() == [[4.0, 5.0], [0.0, 1.0]]

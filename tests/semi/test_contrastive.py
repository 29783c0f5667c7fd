"""contrastive-few-shot on the tiny BERT: pair generation, the head fit, the head written into the model, and
short runs through the API and the CLI (the saved model is a plain Hugging Face classifier)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lftrain.api as api
from lftrain.errors import InputError
from lftrain.methods.contrastive import embed, fit_head, head_layer, make_pairs, pair_loss
from tests.conftest import run_lft, tiny_recipe, toy_rows, toy_setup, write_csv, write_recipe


def test_pairs_counts_balance_no_self_pairs_and_determinism():
    labels = np.array([0] * 8 + [1] * 8 + [2] * 8)
    a, b, t = make_pairs(labels, iterations=5, seed=3)
    assert len(a) == len(b) == len(t) == 2 * 5 * len(labels)  # one same + one different pair per row and round
    assert t.sum() == len(t) / 2  # balanced
    assert not np.any(a == b)
    same = labels[a] == labels[b]
    assert np.array_equal(same, t == 1.0)  # the target says whether the labels agree
    # every row starts as many pairs as every other (each row, each round, twice)
    assert np.all(np.bincount(a, minlength=len(labels)) == 10)
    a2, b2, t2 = make_pairs(labels, iterations=5, seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2) and np.array_equal(t, t2)
    assert not np.array_equal(b, make_pairs(labels, iterations=5, seed=4)[1])


def test_pairs_with_a_singleton_class_and_one_class():
    a, b, t = make_pairs(np.array([0, 0, 0, 1]), iterations=2, seed=0)
    assert not np.any(a == b) and t.sum() == 6  # class 1 has no partner: its row gets negatives only
    with pytest.raises(InputError, match="at least two classes"):
        make_pairs(np.array([1, 1, 1]), iterations=1, seed=0)


def test_fit_head_matches_logistic_regression_probabilities():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    y = (x[:, 0] + 0.3 * rng.normal(size=40) > 0).astype(int)
    w, b = fit_head(x, y, 2, c=1.0)
    logits = x @ w.T + b
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    y3 = np.arange(30) % 3
    w3, b3 = fit_head(rng.normal(size=(30, 4)), y3, 3, c=1.0)
    assert w3.shape == (3, 4) and b3.shape == (3,)
    with pytest.raises(InputError, match=r"class id\(s\) \[2\]"):
        fit_head(x, y, 3, c=1.0)


def test_losses_reward_separated_pairs():
    t = torch.tensor([1.0, 0.0])
    close, far = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    good = pair_loss(close, far, t, "cosine", 20.0)  # pair 0 same and identical, pair 1 different and orthogonal
    bad = pair_loss(close, close, t, "cosine", 20.0)
    assert float(good) == pytest.approx(0.0) and float(bad) == pytest.approx(1.0)
    assert float(pair_loss(close, far, t, "cosent", 20.0)) < float(pair_loss(close, close, t, "cosent", 20.0))


def test_head_written_into_the_classifier_reproduces_the_regression(tiny_bert_nodrop):
    from lftrain.methods.contrastive import ContrastiveFewShot

    recipe, task, tok, enc, model = toy_setup(tiny_bert_nodrop, n=32)
    assert head_layer(model) is model.classifier  # BERT: the head's output layer reads the pooler output
    cfg = ContrastiveFewShot.Config(iterations=2, embedding="head", ce_weight=0, head="logistic")  # SetFit's split
    method = ContrastiveFewShot(cfg, task)
    data, fit_task = method.prepare(model, enc, data=None, recipe=recipe, encode=None, precision="fp32",
                                    device=torch.device("cpu"))
    assert len(fit_task.lengths(data)) == 2 * 2 * 32
    feats = embed(model, task, enc, batch_size=8, precision="fp32", device=torch.device("cpu"), pad_id=0)
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(C=1.0, max_iter=1000).fit(feats, enc["labels"]).predict_proba(feats)
    from lftrain.evaluation.inference import infer_logits

    logits = infer_logits(model, task, enc, batch_size=8, precision="fp32", device=torch.device("cpu"), pad_id=0)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), -1).numpy(), ref, atol=1e-4)
    batch = fit_task.collate(data, np.arange(4), 0)
    assert batch["input_ids"].shape[0] == 8 and fit_task.loss_units(batch) == 4
    out = method(model, batch)
    out["loss_sum"].backward()
    assert model.bert.pooler.dense.weight.grad is not None  # the representation the head reads is trained
    assert model.classifier.weight.grad is None  # the head is fitted, not trained by the pair loss


def test_default_trains_mean_embedding_and_head_together(tiny_bert_nodrop):
    from lftrain.methods.contrastive import ContrastiveFewShot

    recipe, task, tok, enc, model = toy_setup(tiny_bert_nodrop, n=16)
    method = ContrastiveFewShot(ContrastiveFewShot.Config(iterations=1), task)
    data, fit_task = method.prepare(model, enc, data=None, recipe=recipe, encode=None, precision="fp32",
                                    device=torch.device("cpu"))
    batch = fit_task.collate(data, np.arange(6), 0)
    assert batch["labels"].shape[0] == 12  # both rows of each pair carry their label
    method(model, batch)["loss_sum"].backward()
    assert model.classifier.weight.grad is not None  # the classification loss trains the head
    with pytest.raises(ValueError, match="ce_weight"):
        ContrastiveFewShot.Config(ce_weight=0, head="trained")  # nothing would train the head


def _few_shot_recipe(tiny_bert, root, **method):
    rows = toy_rows(16, seed=2)  # k = 8 per class
    data = write_csv(root / "train.csv", rows)
    test = write_csv(root / "test.csv", toy_rows(40, seed=9))
    r = tiny_recipe(tiny_bert, data, root / "run", epochs=1, batch_size=16, lr=5e-3)
    r["data"].update({"test": str(test), "eval_fraction": 0.0})
    r["method"] = {"type": "contrastive-few-shot", "iterations": 4, **method}
    return r


def test_api_run_k8_saves_a_plain_hf_classifier(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    r = _few_shot_recipe(tiny_bert, tmp_path)
    result = api.train(r)
    assert result.steps == 8  # 2 · 4 iterations · 16 rows = 128 pairs, batches of 16
    assert result.metrics["test"]["accuracy"] > 0.5
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert model.classifier.weight.shape == (2, 32)
    losses = [json.loads(x)["loss"] for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(x).get("event") == "train"]
    assert len(losses) == 8


def test_cli_run_and_predict(tiny_bert, tmp_path):
    r = _few_shot_recipe(tiny_bert, tmp_path, loss="cosent")
    recipe = write_recipe(tmp_path / "few.yaml", r)
    done = run_lft("train", str(recipe))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test metrics" in done.stdout
    inputs = write_csv(tmp_path / "in.csv", [{"text": "great lovely film"}, {"text": "awful dull plot"}])
    pred = run_lft("predict", str(tmp_path / "run"), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl"))
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2


def test_bad_method_key_fails_before_training(tiny_bert, tmp_path):
    r = _few_shot_recipe(tiny_bert, tmp_path, iterations=0)
    with pytest.raises(Exception, match="iterations"):
        api.train(r)

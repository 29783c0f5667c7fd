"""`task.pooling: mean`: a classifier head on the mean of the encoder's token vectors (models/pooled.py)."""

from __future__ import annotations

import json

import numpy as np
import torch

from lftrain import api
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe


def test_head_reads_the_pretrained_encoders_mean_and_round_trips(tiny_bert_nodrop, tmp_path):
    from transformers import AutoModel, AutoModelForSequenceClassification

    from lftrain.data.labels import LabelSet
    from lftrain.models.loading import vet_model_dir
    from lftrain.tasks import build_task
    from lftrain.tasks.text_classification import TextClassification

    task = build_task(TextClassification.Config(pooling="mean"))
    task.labels = LabelSet(["neg", "pos"])
    source = vet_model_dir(str(tiny_bert_nodrop), allow_pickle=False, trust_remote_code=False)
    model = task.load_model(source, trust_remote_code=False, attention="eager").eval()
    assert type(model).__name__ == "MeanPooledForSequenceClassification"
    assert model.base_model is model.encoder and model.encoder.pooler is None  # no parameter without a gradient
    assert model.config.id2label == {0: "neg", 1: "pos"}

    ids = torch.tensor([[2, 7, 9, 11, 3, 0, 0], [2, 5, 3, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    plain = AutoModel.from_pretrained(tiny_bert_nodrop).eval()  # the pre-trained encoder, untouched
    with torch.no_grad():
        hidden = plain(input_ids=ids, attention_mask=mask).last_hidden_state
        mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        expected = model.classifier(mean)
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "lftrain-mean-pooled"
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits, got, atol=1e-5, rtol=1e-5)


def _recipe(tiny_bert, root, method: dict | None = None, **adaptation):
    data = write_csv(root / "train.csv", toy_rows(16, seed=2))
    test = write_csv(root / "test.csv", toy_rows(40, seed=9))
    r = tiny_recipe(tiny_bert, data, root / "run", epochs=2, batch_size=16, lr=5e-3)
    r["data"].update({"test": str(test), "eval_fraction": 0.0})
    r["task"] = {**r.get("task", {}), "pooling": "mean"}
    if method:
        r["method"] = method
    if adaptation:
        r["adaptation"] = adaptation
    return r


def test_contrastive_few_shot_with_mean_pooling_trains_saves_and_predicts(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import lftrain.models.pooled  # noqa: F401  (what a user imports to load the model with transformers alone)

    r = _recipe(tiny_bert, tmp_path, {"type": "contrastive-few-shot", "iterations": 4})
    done = run_lft("train", str(write_recipe(tmp_path / "few.yaml", r)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test metrics" in done.stdout
    run = tmp_path / "run"
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    assert type(model).__name__ == "MeanPooledForSequenceClassification"
    rows = toy_rows(6, seed=4)
    preds = api.predict(run, write_csv(tmp_path / "in.csv", rows), temperature=False)
    enc = AutoTokenizer.from_pretrained(run / "model")([x["text"] for x in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1).numpy()
    got = np.array([[p["probs"][name] for name in ("neg", "pos")] for p in preds])
    np.testing.assert_allclose(got, probs, atol=1e-4)  # lft predict and plain transformers agree

    from lftrain.models.compress import load_exported

    api.export(run, tmp_path / "int8", quantize="int8")
    api.export(run, tmp_path / "onnx", format="onnx")
    for name, tol in (("int8", 0.05), ("onnx", 1e-4)):
        with torch.no_grad():
            exported = torch.softmax(load_exported(tmp_path / name)(**enc).logits, -1).numpy()
        np.testing.assert_allclose(exported, probs, atol=tol, err_msg=name)


def test_lora_on_the_mean_pooled_model_merges_to_the_same_logits(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from lftrain.runs.loaded import LoadedRun

    r = _recipe(tiny_bert, tmp_path, type="lora", r=4)
    api.train(r)
    adapter = LoadedRun(tmp_path / "run")
    assert type(adapter.model.get_base_model()).__name__ == "MeanPooledForSequenceClassification"
    examples = adapter.read(r["data"]["test"], with_labels=False)
    logits, encoded = adapter.logits(examples)
    api.export(tmp_path / "run", tmp_path / "merged", merge=True)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    batch = adapter.task.collate(encoded, np.arange(len(logits)), adapter.tokenizer.pad_token_id)
    with torch.no_grad():
        merged_logits = merged(**adapter.task.model_inputs(batch)).logits.numpy()
    np.testing.assert_allclose(merged_logits, logits, atol=1e-4)


def test_freeze_with_the_frozen_prefix_cache_on_the_mean_pooled_model(tiny_bert, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="lftrain")
    r = _recipe(tiny_bert, tmp_path, type="freeze", bottom_layers=1)
    result = api.train(r)
    assert "frozen-prefix cache: on (embeddings and 1 frozen layer" in caplog.text  # found through base_model
    assert result.metrics["test"]["accuracy"] > 0.5


def test_keep_layers_on_the_mean_pooled_model_is_saved_shallower(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    r = _recipe(tiny_bert, tmp_path)
    r["model"]["keep_layers"] = [1]
    result = api.train(r)
    saved = json.loads((result.model_dir / "config.json").read_text())
    assert saved["encoder"]["num_hidden_layers"] == 1  # the nested config rebuilds the encoder on load
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert len(model.encoder.encoder.layer) == 1
    preds = api.predict(result.run_dir, r["data"]["test"], temperature=False)
    assert result.metrics["test"]["accuracy"] == np.mean([p["label"] == t["label"]
                                                          for p, t in zip(preds, toy_rows(40, seed=9))])

"""Adapters and freezing end to end on the tiny BERT: real `lft train`, `predict` and `export` runs, and the
saved adapter read back by plain peft and transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lftrain.errors import InputError
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe


@pytest.fixture(scope="module")
def lora_run(tiny_bert, tmp_path_factory):
    work = tmp_path_factory.mktemp("lora")
    train = write_csv(work / "train.csv", toy_rows(160))
    recipe = tiny_recipe(tiny_bert, train, work / "run", epochs=3, lr=5e-2)
    recipe["adaptation"] = {"type": "lora", "r": 4}
    proc = run_lft("train", str(write_recipe(work / "recipe.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr
    assert "lora: adapting query, value" in proc.stderr
    return work, work / "run"


def _texts(n: int = 24, seed: int = 7) -> list[str]:
    return [r["text"] for r in toy_rows(n, seed=seed)]


def _logits(model, tokenizer, texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits.float().numpy()


def _peft_model(base_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    return PeftModel.from_pretrained(base, adapter_dir)


def test_lora_run_saves_a_peft_adapter(lora_run, tiny_bert):
    from safetensors import safe_open

    model = lora_run[1] / "model"
    assert {p.name for p in model.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", "labels.json",
                                                 "tokenizer.json"}
    assert not (model / "config.json").exists()  # else transformers would look for full weights here
    config = json.loads((model / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "SEQ_CLS" and config["r"] == 4
    assert config["base_model_name_or_path"] == str(tiny_bert.resolve())
    with safe_open(model / "adapter_model.safetensors", "pt") as f:
        weights = {k: f.get_tensor(k) for k in f.keys()}
    assert any("classifier" in k for k in weights)
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means it trained
    assert json.loads((model / "labels.json").read_text()) == {"id2label": {"0": "neg", "1": "pos"}}


def test_peft_from_pretrained_predicts_like_lft_predict(lora_run, tiny_bert):
    from transformers import AutoTokenizer

    work, run = lora_run
    texts = _texts()
    preds_file = work / "preds.jsonl"
    proc = run_lft("predict", str(run), "--input", str(write_csv(work / "new.csv", [{"text": t} for t in texts])),
                   "--output", str(preds_file), "--no-temperature")  # raw probabilities, as peft gives them
    assert proc.returncode == 0, proc.stderr
    preds = [json.loads(x) for x in preds_file.read_text().splitlines()]
    logits = _logits(_peft_model(tiny_bert, run / "model"), AutoTokenizer.from_pretrained(run / "model"), texts)
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    np.testing.assert_allclose([[p["probs"]["neg"], p["probs"]["pos"]] for p in preds], probs, atol=1e-4)
    assert [p["label"] for p in preds] == [["neg", "pos"][i] for i in probs.argmax(-1)]
    # Predictions differ between texts by far more than the tolerance, so the comparison means something. (The
    # tiny random model barely learns in 3 LoRA epochs: the spread was 0.006-0.018 over seeds 0-3.)
    assert np.ptp(probs[:, 1]) > 20 * 1e-4


def test_export_merges_the_adapter_into_a_plain_model(lora_run, tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    work, run = lora_run
    out = work / "exported"
    proc = run_lft("export", str(run), "--output", str(out), "--merge")
    assert proc.returncode == 0, proc.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    merged = AutoModelForSequenceClassification.from_pretrained(out)
    assert merged.config.id2label == {0: "neg", 1: "pos"}
    assert not any("lora" in n for n, _ in merged.named_parameters())
    tok = AutoTokenizer.from_pretrained(out)
    texts = _texts(40, seed=11)
    np.testing.assert_allclose(_logits(merged, tok, texts), _logits(_peft_model(tiny_bert, run / "model"), tok, texts),
                               atol=1e-4)


def test_export_refuses_what_it_cannot_do_well(lora_run, capsys):
    from lftrain.api import export
    from lftrain.cli import build_parser

    work, run = lora_run
    with pytest.raises(InputError, match="holds an adapter .* add --merge"):
        export(run, work / "unmerged")
    assert not (work / "unmerged").exists()
    (work / "busy").mkdir()
    (work / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="busy: exists and is not an empty directory"):
        export(run, work / "busy", merge=True)
    assert [p.name for p in (work / "busy").iterdir()] == ["keep.txt"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    assert "--merge" in capsys.readouterr().out


def test_freeze_run_trains_only_the_top(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    from lftrain.api import export

    train = write_csv(tmp_path / "train.csv", toy_rows(60))
    recipe = tiny_recipe(tiny_bert, train, tmp_path / "run", max_steps=3)
    recipe["adaptation"] = {"type": "freeze", "bottom_layers": 1}
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr
    assert "freeze: embeddings, layer 0 of 2 (encoder.layer)" in proc.stderr
    base = load_file(tiny_bert / "model.safetensors")
    tuned = load_file(tmp_path / "run" / "model" / "model.safetensors")
    for name, value in base.items():
        moved = not torch.equal(value, tuned[f"bert.{name}"])
        assert moved == name.startswith(("encoder.layer.1.", "pooler.")), name
    out = export(tmp_path / "run", tmp_path / "exported")  # a plain model: copied, nothing to merge
    assert load_file(out / "model.safetensors").keys() == tuned.keys()


@pytest.mark.parametrize("kind", ["dora", "ia3"])
def test_other_adapters_train_predict_and_merge(kind, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    import lftrain
    from lftrain.api import export
    from lftrain.runs.loaded import LoadedRun

    train = write_csv(tmp_path / "train.csv", toy_rows(60))
    recipe = tiny_recipe(tiny_bert, train, tmp_path / "run", max_steps=3, lr=5e-2)
    recipe["adaptation"] = {"type": kind}
    lftrain.train(recipe)
    adapter = LoadedRun(tmp_path / "run")  # what `lft predict` and `lft evaluate` use
    assert type(adapter.model).__name__ == "PeftModelForSequenceClassification"
    examples = adapter.read(train, with_labels=False)
    logits, encoded = adapter.logits(examples)
    export(tmp_path / "run", tmp_path / "merged", merge=True)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    task = adapter.task
    batch = task.collate(encoded, np.arange(len(logits)), adapter.tokenizer.pad_token_id)
    with torch.no_grad():
        merged_logits = merged(**task.model_inputs(batch)).logits.numpy()
    np.testing.assert_allclose(merged_logits, logits, atol=1e-4)

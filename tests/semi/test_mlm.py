"""Domain-adaptive pretraining: the masking, and an mlm run whose saved encoder a classifier loads unchanged."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load_file

from lftrain import api
from lftrain.methods.mlm import IGNORE, mask_tokens
from tests.semi.conftest import fast_recipe


def test_masking_follows_bert_80_10_10_and_spares_special_tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 1000, size=(200, 50))
    special = np.zeros_like(ids, dtype=bool)
    special[:, 0] = special[:, -1] = True  # [CLS] ... [SEP]
    inputs, labels = mask_tokens(ids, special, rng, 0.15, mask_id=4, vocab_size=1000)
    chosen = labels != IGNORE
    assert not chosen[special].any()
    assert abs(chosen.mean() / (~special).mean() - 0.15) < 0.01
    assert (labels[chosen] == ids[chosen]).all()
    masked, kept = inputs[chosen] == 4, inputs[chosen] == ids[chosen]
    assert abs(masked.mean() - 0.8) < 0.03 and abs(kept.mean() - 0.1) < 0.03  # ~10% random, ~10% kept
    assert (inputs[~chosen] == ids[~chosen]).all()


def test_mlm_run_saves_an_encoder_the_classifier_loads(tiny_bert, semi_files, tmp_path):
    from transformers import AutoModelForSequenceClassification

    labelled, pool = semi_files
    out = tmp_path / "dapt"
    recipe = fast_recipe(tiny_bert, labelled, out, epochs=2, lr=1e-3)
    recipe["data"]["unlabeled"] = str(pool)
    recipe["method"] = {"type": "mlm"}
    result = api.train(recipe)
    ev = result.metrics["eval"]
    assert ev["loss"] > 0 and np.isclose(ev["perplexity"], np.exp(ev["loss"])) and 0 <= ev["accuracy"] <= 1
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "finished"
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(x["event"] == "eval" and "perplexity" in x for x in evals)

    saved = load_file(out / "model" / "model.safetensors")
    base = load_file(tiny_bert / "model.safetensors")
    # the encoder trained (it differs from the base) ...
    assert not torch.equal(saved["bert.encoder.layer.0.attention.self.query.weight"],
                           base["encoder.layer.0.attention.self.query.weight"])
    # ... the pooler the LM class lacks came over from the base model ...
    torch.testing.assert_close(saved["bert.pooler.dense.weight"], base["pooler.dense.weight"])
    # ... and a classifier loaded from the saved directory has exactly the trained encoder weights
    clf = AutoModelForSequenceClassification.from_pretrained(out / "model", num_labels=2)
    state = clf.state_dict()
    encoder = [k for k in saved if k.startswith("bert.") and "embeddings.position_ids" not in k]
    assert len(encoder) > 20
    for k in encoder:
        torch.testing.assert_close(state[k], saved[k], rtol=0, atol=0)


def test_causal_lm_continuation_on_a_tiny_decoder(tmp_path, semi_files):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import make_tokenizer

    labelled, pool = semi_files
    model_dir = tmp_path / "tiny-llama"
    tok = make_tokenizer(model_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                                 pad_token_id=tok.pad_token_id)).save_pretrained(model_dir)
    recipe = fast_recipe(model_dir, labelled, tmp_path / "clm", epochs=1, lr=1e-3)
    recipe["data"]["unlabeled"] = str(pool)
    recipe["method"] = {"type": "mlm"}  # objective auto: llama has no masked-LM form -> causal
    result = api.train(recipe)
    manifest = json.loads((tmp_path / "clm" / "manifest.json").read_text())
    assert manifest["objective"] == "causal-lm"
    assert result.metrics["eval"]["loss"] > 0
    assert (tmp_path / "clm" / "model" / "config.json").is_file()


def test_mlm_runs_like_every_method_data_checks_evidence_and_two_processes(tiny_bert, semi_files, tmp_path):
    """One orchestrator: an mlm run gets the data card, evidence.json, the report and `--nproc 2` like any other."""
    from tests.conftest import run_lft, write_recipe

    labelled, pool = semi_files
    out = tmp_path / "dapt2"
    recipe = fast_recipe(tiny_bert, labelled, out, epochs=1, lr=1e-3)
    recipe["data"]["unlabeled"] = str(pool)
    recipe["method"] = {"type": "mlm"}
    recipe["eval"].update(report=True, fail_if={"perplexity": "> 1e9"})
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)), "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["distributed"]["world_size"] == 2 and manifest["objective"] == "masked-lm"
    assert (out / "data_card.md").is_file() and (out / "report.html").is_file()
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["gate"]["passed"] and evidence["splits"]["eval"]["metrics"]["perplexity"] > 1
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "finished" and status["results"]["eval"]["perplexity"] > 1

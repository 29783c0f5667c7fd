"""Every task that applies, on a tiny random model of each family users bring (tests/families/conftest.py): it
trains (the loss falls), predicts, exports, and the exported folder read back by plain transformers predicts what
`lftrain.predict` does. docs/models.md's families × tasks matrix is this file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lftrain
from tests.conftest import toy_rows
from tests.families.conftest import DECODERS, ENCODERS
from tests.sft.conftest import sentiment_rows, write_jsonl
from tests.sft.test_preference import _pair_rows
from tests.tasks.test_new_tasks import _multi, _scored, _squad, _tagged

ENCODER_TASKS = ["classification", "multi-label", "regression", "ner", "qa"]
SYSTEM = "You review films."


def _train(model: Path, tmp_path: Path, data_file: Path, task: dict, **extra) -> Path:
    recipe = {"model": {"path": str(model)}, "task": task,
              "data": {"train": str(data_file), "test_fraction": 0.2, "eval_fraction": 0.1,
                       "cache_dir": str(tmp_path / "cache")},
              "train": {"epochs": 3, "lr": 1e-2, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32",
                        "log_every": 1, "warmup_ratio": 0.0},
              "eval": {"bootstrap_samples": 20, "latency": False, "report": False},
              "output": {"dir": str(tmp_path / "run")}}
    for key, value in extra.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    run = lftrain.train(recipe).run_dir
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if r.get("event") == "train"]
    quarter = max(1, len(losses) // 4)
    assert np.mean(losses[-quarter:]) < np.mean(losses[:quarter]), losses  # it learns
    return run


def _predict(run: Path, rows: list[dict], tmp_path: Path) -> list[dict]:
    return lftrain.predict(run, write_jsonl(tmp_path / "predict.jsonl", rows))


def _plain(run: Path, tmp_path: Path, auto: str):
    import transformers

    out = lftrain.export(run, tmp_path / "plain")
    return getattr(transformers, auto).from_pretrained(out).eval(), transformers.AutoTokenizer.from_pretrained(out)


def _encoder_data(kind: str, tmp_path: Path):
    """(training file, task section, rows to predict)."""
    if kind == "ner":
        rows = [{"tokens": w, "tags": t} for w, t in _tagged(160, 0)]
        return (write_jsonl(tmp_path / "train.jsonl", rows), {"type": "token-classification", "max_length": 48},
                [{"text": "the very good film was dull"}, {"text": "a poor plot"}])
    if kind == "qa":
        (tmp_path / "train.json").write_text(json.dumps(_squad(160, 0)))
        return (tmp_path / "train.json", {"type": "extractive-qa", "max_length": 48, "stride": 16},
                [{"question": "what was good ?", "context": "the plot was very superb and the cast"}])
    if kind == "multi-label":
        return (write_jsonl(tmp_path / "train.jsonl", _multi(160, 0)),
                {"type": "multi-label-classification", "max_length": 64}, [{"text": r["text"]} for r in _multi(6, 9)])
    if kind == "regression":
        return (write_jsonl(tmp_path / "train.jsonl", _scored(160, 0)), {"type": "text-regression", "max_length": 64},
                [{"text": r["text"]} for r in _scored(6, 9)])
    return (write_jsonl(tmp_path / "train.jsonl", toy_rows(160)), {"type": "text-classification", "max_length": 64},
            [{"text": r["text"]} for r in toy_rows(6, seed=9)])


def _check_sequence_predictions(kind: str, model, tok, rows: list[dict], preds: list[dict]) -> None:
    enc = tok([r["text"] for r in rows], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    names = model.config.id2label
    if kind == "regression":
        np.testing.assert_allclose(logits[:, 0].numpy(), [p["value"] for p in preds], atol=1e-4)
    elif kind == "multi-label":
        probs = torch.sigmoid(logits)
        for p, pred in zip(probs, preds):
            np.testing.assert_allclose(p.numpy(), [pred["probs"][names[j]] for j in range(len(p))], atol=1e-4)
    else:
        assert [names[int(i)] for i in logits.argmax(-1)] == [p["label"] for p in preds]


def _check_tags(model, tok, rows: list[dict], preds: list[dict]) -> None:
    """The exported tokenizer encodes pre-split words as the run did (a prefix space for byte-level BPE)."""
    for row, pred in zip(rows, preds):
        words = row["text"].split()
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            best = model(**enc).logits[0].argmax(-1).tolist()
        firsts, seen = [], set()
        for position, w in enumerate(enc.word_ids(0)):
            if w is not None and w not in seen:
                seen.add(w)
                firsts.append(model.config.id2label[best[position]])
        assert firsts == pred["tags"]


@pytest.mark.parametrize("kind", ENCODER_TASKS)
@pytest.mark.parametrize("family", ENCODERS)
def test_encoder_family(family_dirs, tmp_path, family, kind):
    train, task, rows = _encoder_data(kind, tmp_path)
    # a regression head leaves predicting the mean only after ~100 steps (tests/tasks/test_new_tasks.py)
    slow = {"lr": 5e-3, "epochs": 10, "warmup_ratio": 0.1} if kind == "regression" else {}
    run = _train(family_dirs(family), tmp_path, train, task, train=slow)
    preds = _predict(run, rows, tmp_path)
    auto = {"ner": "AutoModelForTokenClassification", "qa": "AutoModelForQuestionAnswering"}.get(
        kind, "AutoModelForSequenceClassification")
    model, tok = _plain(run, tmp_path, auto)
    if kind == "ner":
        _check_tags(model, tok, rows, preds)
    elif kind == "qa":
        from lftrain.config import load_recipe
        from lftrain.models.trained import load_trained_model
        from lftrain.tasks import build_task

        trained = load_trained_model(run / "model", build_task(load_recipe(run / "recipe.yaml").task))
        enc = tok(rows[0]["question"], rows[0]["context"], return_tensors="pt")
        with torch.no_grad():
            a, b = model(**enc), trained.model(**enc)
        torch.testing.assert_close(a.start_logits, b.start_logits)
        assert "answer" in preds[0]
    else:
        _check_sequence_predictions(kind, model, tok, rows, preds)


def _proteins(n: int, seed: int = 0) -> list[dict]:
    """Residue strings labelled by whether a lysine-rich motif is in them."""
    import random

    rng, rows = random.Random(seed), []
    for i in range(n):
        seq = "".join(rng.choices("LAGVSETIDPQNFYMHWC", k=rng.randint(8, 20)))
        if i % 2 == 0:
            at = rng.randint(0, len(seq))
            seq = seq[:at] + "KKRK" + seq[at:]
        rows.append({"text": seq, "label": "binder" if i % 2 == 0 else "other"})
    return rows


def test_protein_language_model_classifies_sequences(family_dirs, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", _proteins(200))
    run = _train(family_dirs("esm"), tmp_path, train, {"type": "text-classification", "max_length": 64})
    rows = [{"text": r["text"]} for r in _proteins(6, seed=5)]
    preds = _predict(run, rows, tmp_path)
    model, tok = _plain(run, tmp_path, "AutoModelForSequenceClassification")
    _check_sequence_predictions("classification", model, tok, rows, preds)


# ---- decoders ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", DECODERS)
def test_decoder_family_classifies_at_batch_size_above_one(family_dirs, tmp_path, family):
    """A decoder as a sequence classifier: each row is read at its last real token, which the model finds
    through config.pad_token_id, so llama3 and mistral (no pad token shipped) need one set."""
    train = write_jsonl(tmp_path / "train.jsonl", toy_rows(160))
    run = _train(family_dirs(family), tmp_path, train, {"type": "text-classification", "max_length": 64})
    rows = [{"text": r["text"]} for r in toy_rows(6, seed=9)]
    preds = _predict(run, rows, tmp_path)
    model, tok = _plain(run, tmp_path, "AutoModelForSequenceClassification")
    assert model.config.pad_token_id is not None
    _check_sequence_predictions("classification", model, tok, rows, preds)  # a padded batch of 6


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_family_sft_generates_what_plain_transformers_does(family_dirs, tmp_path, family):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(120))
    task = {"type": "causal-lm-sft", "max_length": 96, "system": SYSTEM, "generation": {"max_prompts": 0}}
    run = _train(family_dirs(family), tmp_path, train, task, train={"lr": 3e-3})
    prompts = ["review: the film was good", "review: the plot was awful"]
    ours = lftrain.generate(run, prompts, system=SYSTEM, max_new_tokens=4)
    model, tok = _plain(run, tmp_path, "AutoModelForCausalLM")
    from lftrain.data.chat import render

    for prompt, answer in zip(prompts, ours):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        text = render(tok, tok.chat_template, messages, generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() == answer.strip()


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_family_learns_preferences(family_dirs, tmp_path, family):
    train = write_jsonl(tmp_path / "train.jsonl", _pair_rows(120))
    task = {"type": "causal-lm-sft", "max_length": 48, "generation": {"max_prompts": 0}}
    _train(family_dirs(family), tmp_path, train, task, method={"type": "dpo", "beta": 0.5}, train={"lr": 3e-3})


# ---- word-level tagging with byte-level BPE ---------------------------------------------------------------------

@pytest.mark.parametrize("family", ["roberta", "modernbert"])
def test_pre_split_words_are_encoded_as_in_running_text(family_dirs, family):
    """Without a prefix space, byte-level BPE encodes a pre-split word as if it began the text ("good", not
    "Ġgood"), so a tagger would see other tokens than running text gives it."""
    from lftrain.models.loading import vet_model_dir
    from lftrain.tasks import build_task
    from lftrain.tasks.token_classification import TokenClassification

    task = build_task(TokenClassification.Config())
    tok = task.load_processor(vet_model_dir(str(family_dirs(family)), allow_pickle=False, trust_remote_code=False))
    words = ["the", "film", "was", "very", "good"]
    assert tok([words], is_split_into_words=True)["input_ids"][0] == tok(" " + " ".join(words))["input_ids"]


def _entity_f1(run: Path) -> float:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["event"] == "eval" and r.get("final") and r["split"] == "test"][-1]["f1"]


def test_ner_with_byte_level_bpe_scores_as_wordpiece_does(family_dirs, tmp_path):
    """The same toy entities, the same budget: RoBERTa-style byte-level BPE against ELECTRA's WordPiece."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"tokens": w, "tags": t} for w, t in _tagged(300, 0)])
    task = {"type": "token-classification", "max_length": 48}
    scores = {}
    for family in ("roberta", "electra"):
        scores[family] = _entity_f1(_train(family_dirs(family), tmp_path / family, train, task, train={"epochs": 4}))
    assert scores["roberta"] > 0.9 and scores["electra"] > 0.9, scores
    assert abs(scores["roberta"] - scores["electra"]) < 0.08, scores


def test_the_docs_matrix_names_the_families_tested_here():
    from tests.families.conftest import decoder_config, encoder_config

    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    types = {f: encoder_config(f, _FakeTok()).model_type for f in ENCODERS}
    types |= {f: decoder_config(f, _FakeTok()).model_type for f in DECODERS}
    for family, model_type in {**types, "esm": "esm"}.items():
        assert f"(`{model_type}`)" in text, family


class _FakeTok:
    """What the config builders read of a tokenizer."""
    pad_token_id, cls_token_id, sep_token_id, eos_token_id, bos_token_id = 1, 0, 2, 2, 0

    def __len__(self) -> int:
        return 100

"""Token classification, multi-label, regression and extractive QA end to end on the tiny BERT: the real `lft
train`, `lft predict` and the saved model read back by plain transformers, predicting the same."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE, run_lft, tiny_recipe, write_recipe


def _recipe(model, train, out, task: dict, **train_cfg) -> dict:
    recipe = tiny_recipe(model, train, out, **{"epochs": 4, "lr": 1e-2, **train_cfg})
    recipe["task"] = task
    recipe["eval"] = {"bootstrap_samples": 50, "latency": False}
    return recipe


def _train(tmp_path, recipe: dict, name: str = "run"):
    proc = run_lft("train", str(write_recipe(tmp_path / f"{name}.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / recipe["output"]["dir"].rsplit("/", 1)[-1]


def _final(run, split="test") -> dict:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["event"] == "eval" and r.get("final") and r["split"] == split][-1]


def _predict(run, rows: list[dict], tmp_path) -> list[dict]:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_lft("predict", str(run), "--input", str(inp), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(x) for x in out.read_text().splitlines()]


# ---- token classification ---------------------------------------------------------------------------------

def _tagged(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Sentences whose sentiment words are entities: POS is two words (`very` and a positive one), NEG one."""
    rng, out = random.Random(seed), []
    filler = [w for w in NEUTRAL if w != "very"]
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(3, 8)):
            kind = rng.random()
            if kind < 0.2:
                words += ["very", rng.choice(POSITIVE)]
                tags += ["B-POS", "I-POS"]
            elif kind < 0.35:
                words.append(rng.choice(NEGATIVE))
                tags.append("B-NEG")
            else:
                words.append(rng.choice(filler))
                tags.append("O")
        out.append((words, tags))
    return out


def test_token_classification_from_conll(tiny_bert, tmp_path):
    conll = tmp_path / "train.conll"
    conll.write_text("-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w} X {t}" for w, t in zip(*s))
                                                      for s in _tagged(200, 0)) + "\n")
    recipe = _recipe(tiny_bert, conll, tmp_path / "run", {"type": "token-classification", "max_length": 32})
    run = _train(tmp_path, recipe)
    test = _final(run)
    assert test["f1"] > 0.9 and set(test["per_type"]) == {"POS", "NEG"}
    evidence = json.loads((run / "evidence.json").read_text())
    assert evidence["splits"]["test"]["intervals"]["f1"]["low"] <= test["f1"]

    text = "the film was very good and it was dull"
    preds = _predict(run, [{"text": text}], tmp_path)
    ents = [(e["type"], e["text"]) for e in preds[0]["entities"]]
    assert ents == [("POS", "very good"), ("NEG", "dull")]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in preds[0]["entities"])

    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    enc = tok(text.split(), is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        ids = model(**enc).logits[0].argmax(-1).tolist()
    firsts = [i for i, w in enumerate(enc.word_ids()) if w is not None and (i == 0 or enc.word_ids()[i - 1] != w)]
    assert [model.config.id2label[ids[i]] for i in firsts] == preds[0]["tags"]


# ---- multi-label ------------------------------------------------------------------------------------------

STORY = ["story", "plot", "ending", "scene"]


def _multi(n: int, seed: int) -> list[dict]:
    """Labels: `pos` when positive words are in, `neg` for negative ones, `story` for words about the story.

    Each label is carried by two of its words, so each is as easy to learn as the others: with `story` a single
    word, the tiny model's pooled input held one token's worth of it and some runs never learned it."""
    rng, rows = random.Random(seed), []
    filler = [w for w in NEUTRAL if w not in STORY]
    for _ in range(n):
        words = rng.sample(filler, rng.randint(1, 3))
        if rng.random() < 0.5:
            words += rng.sample(POSITIVE, 2)
        if rng.random() < 0.4:
            words += rng.sample(NEGATIVE, 2)
        if rng.random() < 0.3:
            words += rng.sample(STORY, 2)
        rng.shuffle(words)
        labels = [name for name, hit in (("neg", set(words) & set(NEGATIVE)), ("pos", set(words) & set(POSITIVE)),
                                         ("story", set(words) & set(STORY))) if hit]
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def test_multi_label_tunes_thresholds_that_predict_and_plain_transformers_share(tiny_bert_learns, tmp_path):
    # tiny_bert (std-0.02 weights) learns each label only once it leaves a plateau, and when depends on the CPU's
    # rounding (one CI run on an AMX CPU ended at micro-F1 0.84). tiny_bert_learns with a warm-up, on labels of two
    # words each, lands at micro-F1 >= 0.989 over 12 seeds in fp32 and 4 in bf16 (AMD EPYC).
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in _multi(400, 0)))
    recipe = _recipe(tiny_bert_learns, train, tmp_path / "run", {"type": "multi-label-classification"}, epochs=10,
                     lr=5e-3, warmup_ratio=0.1)
    run = _train(tmp_path, recipe)
    test = _final(run)
    assert test["micro_f1"] > 0.85 and test["subset_accuracy"] > 0.5
    thresholds = json.loads((run / "model" / "thresholds.json").read_text())["thresholds"]
    assert set(thresholds) == {"neg", "pos", "story"}

    rows = [{"text": r["text"]} for r in _multi(20, 9)]
    preds = _predict(run, rows, tmp_path)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    assert model.config.problem_type == "multi_label_classification"
    tok = AutoTokenizer.from_pretrained(run / "model")
    with torch.no_grad():
        probs = torch.sigmoid(model(**tok([r["text"] for r in rows], padding=True, return_tensors="pt")).logits)
    plain = [[model.config.id2label[j] for j in range(3) if p[j] >= thresholds[model.config.id2label[j]]]
             for p in probs.tolist()]
    assert plain == [p["labels"] for p in preds]


# ---- regression -------------------------------------------------------------------------------------------

def _scored(n: int, seed: int) -> list[dict]:
    rng, rows = random.Random(seed), []
    for _ in range(n):
        pos, neg = rng.randint(0, 3), rng.randint(0, 3)
        words = rng.sample(NEUTRAL, 3) + rng.sample(POSITIVE, pos) + rng.sample(NEGATIVE, neg)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": 50.0 + 10.0 * (pos - neg)})  # far from 0 and 1: scaling shows
    return rows


def test_regression_folds_its_scaling_into_the_saved_head(tiny_bert, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in _scored(300, 0)))
    # lr 1e-2 for 4 epochs cleared pearson 0.8 / MAE 8 on some seeds only (0.68 / 12.9 on others); with a warm-up,
    # 5e-3 and 10 epochs it lands at pearson >= 0.94, MAE <= 5.5 whatever the seed, threads or precision
    recipe = _recipe(tiny_bert, train, tmp_path / "run", {"type": "text-regression"}, epochs=10, lr=5e-3,
                     warmup_ratio=0.1)
    run = _train(tmp_path, recipe)
    test = _final(run)
    assert test["pearson"] > 0.8 and test["mae"] < 8.0

    rows = _scored(16, 5)
    preds = _predict(run, [{"text": r["text"]} for r in rows], tmp_path)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    with torch.no_grad():
        plain = model(**tok([r["text"] for r in rows], padding=True, return_tensors="pt")).logits[:, 0].numpy()
    np.testing.assert_allclose(plain, [p["value"] for p in preds], atol=1e-4)
    assert abs(float(plain.mean()) - np.mean([r["label"] for r in rows])) < 15  # in the target's unit


# ---- extractive QA ----------------------------------------------------------------------------------------

def _squad(n: int, seed: int, unanswerable: float = 0.0) -> dict:
    """Contexts of neutral and sentiment words; the question asks for the positive word (or, unanswerable, has
    none to find)."""
    rng, paragraphs = random.Random(seed), []
    for i in range(n):
        words = rng.choices(NEUTRAL, k=rng.randint(4, 40))  # long ones take two or three windows
        has = rng.random() >= unanswerable
        answer = rng.choice(POSITIVE)
        if has:
            words.insert(rng.randint(0, len(words)), answer)
        context = " ".join(words)
        answers = [{"text": answer, "answer_start": context.index(f"{answer}")}] if has else []
        paragraphs.append({"context": context, "qas": [{"id": str(i), "question": "what was good ?",
                                                        "answers": answers, "is_impossible": not has}]})
    return {"version": "v2.0", "data": [{"title": "toy", "paragraphs": paragraphs}]}


def test_extractive_qa_from_squad_json_with_windows(tiny_bert, tmp_path):
    train = tmp_path / "train.json"
    train.write_text(json.dumps(_squad(300, 0, unanswerable=0.2)))
    task = {"type": "extractive-qa", "max_length": 48, "stride": 16, "max_answer_length": 4}
    run = _train(tmp_path, _recipe(tiny_bert, train, tmp_path / "run", task, epochs=6))
    test = _final(run)
    assert test["f1"] > 70 and test["exact_match"] > 60 and test["no_answer_n"] > 0

    rows = [{"question": "what was good ?", "context": "the plot was very superb and the cast"},
            {"question": "what was good ?", "context": "the plot and the cast and the score"}]
    preds = _predict(run, rows, tmp_path)
    assert preds[0]["answer"] == "superb" and rows[0]["context"][preds[0]["start"]:preds[0]["end"]] == "superb"

    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    enc = tok(rows[0]["question"], rows[0]["context"], return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0]
    with torch.no_grad():
        out = model(**enc)
    s, e = int(out.start_logits[0].argmax()), int(out.end_logits[0].argmax())
    assert rows[0]["context"][int(offsets[s][0]):int(offsets[e][1])] == "superb"


def _data(kind: str, tmp_path, n: int, seed: int):
    """A small training file for each new task, and one row to predict."""
    if kind == "ner":
        path = tmp_path / "train.jsonl"
        path.write_text("".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in _tagged(n, seed)))
        return path, {"type": "token-classification"}, {"text": "a very good film"}
    if kind == "qa":
        path = tmp_path / "train.json"
        path.write_text(json.dumps(_squad(n, seed)))
        return path, {"type": "extractive-qa", "max_length": 48, "stride": 16}, \
            {"question": "what was good ?", "context": "the fine cast"}
    path = tmp_path / "train.jsonl"
    rows = _multi(n, seed) if kind == "multi" else _scored(n, seed)
    if kind == "multi":  # labels as one delimited string, the other accepted form
        rows = [{"text": r["text"], "labels": "|".join(r["labels"])} for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"type": "multi-label-classification", "separator": "|"} if kind == "multi" else {"type": "text-regression"}
    return path, task, {"text": "good great film"}


@pytest.mark.parametrize("kind,adaptation", [("ner", {"type": "lora", "r": 4}), ("qa", {"type": "lora", "r": 4}),
                                             ("multi", {"type": "lora", "r": 4}),
                                             ("regression", {"type": "freeze", "bottom_layers": 1})])
def test_the_new_tasks_take_every_adaptation_evaluate_and_export(tiny_bert, tmp_path, kind, adaptation):
    train, task, row = _data(kind, tmp_path, 120, 1)
    recipe = _recipe(tiny_bert, train, tmp_path / "run", task, epochs=1, lr=5e-2)
    recipe["adaptation"] = adaptation
    run = _train(tmp_path, recipe)
    assert (run / "report.html").is_file()
    predicted = _predict(run, [row], tmp_path)[0]
    proc = run_lft("evaluate", str(run), "--data", str(train), "--output", str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "m.json").read_text())["n"] > 0
    proc = run_lft("export", str(run), "--output", str(tmp_path / "plain"), "--merge")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import transformers

    from lftrain.config import load_recipe
    from lftrain.models.trained import load_trained_model
    from lftrain.tasks import build_task

    arch = json.loads((tmp_path / "plain" / "config.json").read_text())["architectures"][0]
    plain = getattr(transformers, arch).from_pretrained(tmp_path / "plain").eval()
    trained = load_trained_model(run / "model", build_task(load_recipe(run / "recipe.yaml").task))
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "plain")
    enc = tok(*row.values(), return_tensors="pt")  # the text, or the question and its context
    with torch.no_grad():
        a, b = plain(**enc), trained.model(**enc)
    for key in ("logits", "start_logits", "end_logits"):  # the merged export computes what the run's model does
        if key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4)
    assert predicted


def test_tune_searches_a_new_task_on_its_own_metric(tiny_bert, tmp_path):
    import optuna

    train, task, _ = _data("ner", tmp_path, 120, 2)
    recipe = _recipe(tiny_bert, train, tmp_path / "runs" / "ner", task, epochs=1, lr=1e-2)
    recipe["data"]["eval_fraction"] = 0.2
    recipe["eval"] = {"latency": False, "bootstrap_samples": 0, "report": False}
    recipe["tune"] = {"space": {"train.lr": {"log_uniform": [1e-3, 3e-2]}}, "trials": 2, "study_name": "ner"}
    proc = run_lft("tune", str(write_recipe(tmp_path / "tune.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    study_dir = tmp_path / "runs" / "ner-tune"
    study = optuna.load_study(study_name="ner", storage=f"sqlite:///{study_dir / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(0.0 <= t.value <= 1.0 for t in study.trials)  # entity F1 of the eval split, the task's metric
    assert "f1" in proc.stderr

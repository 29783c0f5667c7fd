"""A new task and a new method defined here, in the test, and registered here: no lftrain file names them.

They go through what users run — `lft train` (the CLI in process: plug-ins register in the process that trains),
`lft evaluate`, `lft predict`, the server's POST /predict, `lft export` and the model card — each layer reading what
the plug-in declares. Also: a metric whose declared direction is lower-is-better keeps the best checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch

from lftrain.config.base import Section
from lftrain.methods.base import METHODS, Method
from lftrain.tasks.base import TASKS
from lftrain.tasks.text_classification import TextClassification
from tests.conftest import POSITIVE, tiny_recipe, toy_rows, write_csv, write_recipe


class ToyTopic(TextClassification):
    """Text classification that also reports each label's keywords found in the text, and a lower-is-better
    `miss_rate` (1 - accuracy) to select checkpoints by."""

    pipeline_tag = "text-classification"
    lower_is_better = TextClassification.lower_is_better | {"miss_rate"}

    class Config(TextClassification.Config):
        type: Literal["toy-topic"] = "toy-topic"  # type: ignore[assignment]
        keywords: dict[str, list[str]] = {}
        """Label -> words that speak for it (reported beside each prediction)."""

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        metrics = super().metrics(logits, labels)
        return {**metrics, "miss_rate": 1.0 - metrics["accuracy"]}

    def predictions(self, logits, encoded=None, examples=None) -> list[dict[str, Any]]:
        rows = super().predictions(logits, encoded, examples)
        texts = examples.fields["text"] if examples is not None else [""] * len(rows)
        for row, text in zip(rows, texts):
            words = set(text.split())
            row["keywords"] = sorted(w for w in self.config.keywords.get(row["label"], []) if w in words)
        return rows


class ConfidencePenalty(Method):
    """The task's loss minus `beta` times the predictive entropy (Pereyra et al., 2017): less confident models."""

    class Config(Section):
        type: Literal["toy-confidence-penalty"] = "toy-confidence-penalty"
        beta: float = 0.1

    def __call__(self, model, batch):
        outputs = model(**self.task.model_inputs(batch))
        logp = outputs.logits.float().log_softmax(-1)
        entropy = -(logp.exp() * logp).sum()
        return {"loss_sum": self.task.loss_sum(outputs, batch) - self.config.beta * entropy}


@pytest.fixture(scope="module")
def plugins():
    TASKS.register("toy-topic")(ToyTopic)
    METHODS.register("toy-confidence-penalty")(ConfidencePenalty)
    yield
    TASKS.unregister("toy-topic")
    METHODS.unregister("toy-confidence-penalty")


def _lft(*args: str) -> int:
    from lftrain.cli import main

    return main(list(args))


def _toy_recipe(tiny_bert: Path, tmp: Path, name: str, train: dict | None = None, **extra) -> Path:
    rows = write_csv(tmp / "train.csv", toy_rows(160))
    recipe = tiny_recipe(tiny_bert, rows, tmp / name, epochs=6, eval_every=10, metric="miss_rate", **(train or {}))
    recipe["task"] = {"type": "toy-topic", "max_length": 32, "keywords": {"pos": POSITIVE}}
    recipe["eval"] = {"bootstrap_samples": 0, "latency": False}
    recipe.update(extra)
    return write_recipe(tmp / f"{name}.yaml", recipe)


@pytest.fixture(scope="module")
def toy_run(plugins, tiny_bert, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("toy-task")
    assert _lft("train", str(_toy_recipe(tiny_bert, tmp, "run"))) == 0
    return tmp / "run"


def _evals(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r.get("event") == "eval" and not r.get("final")]


def test_a_toy_task_trains_and_keeps_the_checkpoint_its_lower_is_better_metric_picks(toy_run):
    evals = _evals(toy_run)
    status = json.loads((toy_run / "run.json").read_text())
    best = min(evals, key=lambda r: (r["miss_rate"], r["step"]))
    assert len(evals) >= 3 and status["state"]["best_step"] == best["step"]
    assert status["results"]["test"]["accuracy"] > 0.85


def test_a_toy_task_evaluates_predicts_serves_and_exports(toy_run, tmp_path):
    from fastapi.testclient import TestClient
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import lftrain
    from lftrain.serve.app import build_app

    rows = [{"text": "a superb and great film", "label": "pos"}, {"text": "the awful boring plot", "label": "neg"}]
    data = write_csv(tmp_path / "new.csv", rows)
    assert _lft("evaluate", str(toy_run), "--data", str(data), "--output", str(tmp_path / "m.json")) == 0
    assert "miss_rate" in json.loads((tmp_path / "m.json").read_text())
    assert _lft("predict", str(toy_run), "--input", str(data), "--output", str(tmp_path / "p.jsonl")) == 0
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["label"] for p in preds] == ["pos", "neg"]
    assert preds[0]["keywords"] == ["great", "superb"] and preds[1]["keywords"] == []

    with TestClient(build_app(toy_run)) as client:  # the input schema the task inherits (one text)
        served = client.post("/predict", json={"inputs": [r["text"] for r in rows]}).json()["predictions"]
        assert client.get("/metadata").json()["task"] == "toy-topic"
    assert [{k: v for k, v in p.items() if k != "row"} for p in preds] == served

    out = lftrain.export(toy_run, output=tmp_path / "plain")
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = model(**tok([r["text"] for r in rows], padding=True, return_tensors="pt")).logits
    assert [model.config.id2label[int(i)] for i in logits.argmax(-1)] == ["pos", "neg"]
    card = (toy_run / "model_card.md").read_text()
    assert "pipeline_tag: text-classification" in card and "toy-topic" in card


def test_a_toy_method_trains_through_lft_train(plugins, tiny_bert, tmp_path):
    """The entropy bonus makes the model less sure of itself than the supervised run on the same data and seed.

    Both keep their last step (train.keep_best: false): best checkpoints by miss_rate are the first perfect ones,
    taken at different steps, and their confidences compare nothing. So compared, the gap was 0.17-0.22 over
    seeds 0-5 in fp32 and bf16 (AMD EPYC); with best checkpoints it was -0.29 to +0.06."""
    last = {"keep_best": False}
    supervised = _toy_recipe(tiny_bert, tmp_path, "supervised", train=last)
    recipe = _toy_recipe(tiny_bert, tmp_path, "penalised", train=last,
                         method={"type": "toy-confidence-penalty", "beta": 1.0})
    assert _lft("train", str(supervised)) == 0 and _lft("train", str(recipe)) == 0
    run = tmp_path / "penalised"
    data = write_csv(tmp_path / "new.csv", toy_rows(40, seed=7))

    def confidence(run_dir: Path) -> float:
        import lftrain

        rows = lftrain.predict(run_dir, input=data, temperature=False)
        return float(np.mean([max(r["probs"].values()) for r in rows]))

    status = json.loads((run / "run.json").read_text())
    assert status["results"]["test"]["accuracy"] > 0.85
    assert confidence(run) < confidence(tmp_path / "supervised") - 0.1


def test_a_regression_run_selected_by_mse_keeps_its_lowest_mse_checkpoint(tiny_bert, tmp_path):
    """`train.metric: mse` is lower-is-better as text-regression declares: the kept step has the least mse."""
    import random

    rng = random.Random(0)
    rows = []
    for _ in range(160):
        k = rng.randint(0, 3)
        rows.append({"text": " ".join(rng.sample(POSITIVE, k) + ["the", "film", "was"]), "label": float(k)})
    train = write_csv(tmp_path / "train.csv", rows)
    recipe = tiny_recipe(tiny_bert, train, tmp_path / "reg", epochs=4, eval_every=5, metric="mse")
    recipe["task"] = {"type": "text-regression", "max_length": 32}
    recipe["eval"] = {"bootstrap_samples": 0, "latency": False, "report": False}
    assert _lft("train", str(write_recipe(tmp_path / "reg.yaml", recipe))) == 0
    evals = _evals(tmp_path / "reg")
    status = json.loads((tmp_path / "reg" / "run.json").read_text())
    best = min(evals, key=lambda r: (r["mse"], r["step"]))
    worst = max(evals, key=lambda r: r["mse"])
    assert worst["mse"] > best["mse"] and status["state"]["best_step"] == best["step"]

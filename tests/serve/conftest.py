"""Tiny trained runs of every served task (trained in process, a few seconds each) and apps serving them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_tiny_bert, tiny_recipe, toy_rows, write_csv

FAST_EVAL = {"bootstrap_samples": 0, "latency": False, "report": False}


def train_run(tmp: Path, model: Path, train: Path, task: dict, name: str, **train_cfg) -> Path:
    import lftrain

    recipe = tiny_recipe(model, train, tmp / name, **{"epochs": 1, "lr": 1e-2, **train_cfg})
    recipe["task"] = task
    recipe["eval"] = dict(FAST_EVAL)
    return Path(lftrain.train(recipe).run_dir)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def serve_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("serve-bert"))


@pytest.fixture(scope="session")
def cls_run(serve_bert, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("serve-cls")
    train = write_csv(tmp / "train.csv", toy_rows(60))
    return train_run(tmp, serve_bert, train, {"type": "text-classification", "max_length": 32}, "run", epochs=4)


@pytest.fixture(scope="session")
def task_runs(serve_bert, tmp_path_factory) -> dict[str, Path]:
    """A run of each other text task (multi-label, regression, token classification, extractive QA)."""
    from tests.tasks.test_new_tasks import _multi, _scored, _squad, _tagged

    tmp = tmp_path_factory.mktemp("serve-tasks")
    data = {"multi": write_jsonl(tmp / "multi.jsonl", _multi(60, 0)),
            "regression": write_jsonl(tmp / "reg.jsonl", _scored(60, 0)),
            "ner": write_jsonl(tmp / "ner.jsonl", [{"tokens": w, "tags": t} for w, t in _tagged(60, 0)])}
    (tmp / "qa.json").write_text(json.dumps(_squad(60, 0, unanswerable=0.2)))
    tasks = {"multi": {"type": "multi-label-classification"}, "regression": {"type": "text-regression"},
             "ner": {"type": "token-classification"},
             "qa": {"type": "extractive-qa", "max_length": 48, "stride": 16, "max_answer_length": 4}}
    data["qa"] = tmp / "qa.json"
    return {kind: train_run(tmp, serve_bert, data[kind], task, kind) for kind, task in tasks.items()}


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory) -> Path:
    """A tiny Llama taught a several-word answer per sentiment (a stream then has several pieces)."""
    import lftrain
    from tests.sft.conftest import make_tiny_llama, sentiment_rows

    tmp = tmp_path_factory.mktemp("serve-sft")
    model = make_tiny_llama(tmp / "llama")
    answers = {"fresh": "fresh, the film was very good.", "rotten": "rotten, the plot was very bad."}
    rows = [{"prompt": r["prompt"], "response": answers[r["response"]]} for r in sentiment_rows(64)]
    recipe = {"model": {"path": str(model)},
              "task": {"type": "causal-lm-sft", "max_length": 64, "system": "answer fresh or rotten",
                       "generation": {"max_new_tokens": 4, "max_prompts": 0, "compare_base": False}},
              "data": {"train": str(write_jsonl(tmp / "train.jsonl", rows)), "test_fraction": 0.1,
                       "eval_fraction": 0.1, "cache_dir": str(tmp / "cache")},
              "train": {"epochs": 3, "lr": 1e-2, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32"},
              "eval": dict(FAST_EVAL), "output": {"dir": str(tmp / "run")}}
    return Path(lftrain.train(recipe).run_dir)


@pytest.fixture(scope="session")
def cls_client(cls_run):
    from fastapi.testclient import TestClient

    from lftrain.serve.app import build_app
    from lftrain.serve.config import ServeConfig

    with TestClient(build_app(cls_run, ServeConfig(max_inputs=8, max_body_bytes=20_000))) as client:
        yield client

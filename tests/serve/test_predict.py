"""Served predictions are the rows `lftrain.api.predict` gives for the same inputs, for every text task."""

from __future__ import annotations

import json

import pytest

from tests.conftest import toy_rows


def _same(served: list[dict], expected: list[dict]) -> None:
    """Equal up to float rounding (a micro-batch pads differently from `lft predict`'s length-sorted batches)."""
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        want = {k: v for k, v in want.items() if k != "row"}
        assert got.keys() == want.keys()
        for key, value in want.items():
            if key == "probs":
                assert got[key] == pytest.approx(value, abs=2e-6)
            elif key == "value":
                assert got[key] == pytest.approx(value, abs=1e-4)
            else:
                assert got[key] == value, key


def _serve(run, inputs: list, **config) -> list[dict]:
    from fastapi.testclient import TestClient

    from lftrain.serve.app import build_app
    from lftrain.serve.config import ServeConfig

    with TestClient(build_app(run, ServeConfig(**config))) as client:
        response = client.post("/predict", json={"inputs": inputs})
        assert response.status_code == 200, response.text
        return response.json()["predictions"]


def _file(tmp_path, rows: list[dict]):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_text_classification_matches_predict(cls_client, cls_run, tmp_path):
    import lftrain

    texts = [r["text"] for r in toy_rows(12, seed=3)]
    expected = lftrain.predict(cls_run, input=str(_file(tmp_path, [{"text": t} for t in texts])))
    # bare strings and objects are the same input
    inputs = [t if i % 2 else {"text": t} for i, t in enumerate(texts[:8])]
    served = cls_client.post("/predict", json={"inputs": inputs}).json()["predictions"]
    _same(served, expected[:8])
    assert {p["label"] for p in served} <= {"neg", "pos"} and set(served[0]["probs"]) == {"neg", "pos"}
    raw = lftrain.predict(cls_run, input=str(_file(tmp_path, [{"text": t} for t in texts[:4]])), temperature=False)
    _same(_serve(cls_run, texts[:4], temperature=False), raw)


@pytest.mark.parametrize("kind", ["multi", "regression", "ner", "qa"])
def test_every_text_task_matches_predict(task_runs, kind, tmp_path):
    import lftrain

    run = task_runs[kind]
    if kind == "qa":
        rows = [{"question": "what was good ?", "context": "the plot was very superb and the cast"},
                {"question": "what was good ?", "context": "the cast and the score " * 6}]  # several windows
        inputs = rows
    elif kind == "ner":
        rows = [{"text": "a very good film"}, {"text": "the  awful plot, and a very fine cast"}]
        inputs = ["a very good film", {"text": rows[1]["text"]}]
    else:
        rows = [{"text": "good great film"}, {"text": "the story was dull"}, {"text": "superb"}]
        inputs = [r["text"] for r in rows]
    expected = lftrain.predict(run, input=str(_file(tmp_path, rows)))
    _same(_serve(run, inputs, max_batch=2), expected)  # more windows/rows than one batch: several passes


def test_token_classification_takes_words(task_runs, tmp_path):
    import lftrain

    words = ["a", "very", "good", "film"]
    expected = lftrain.predict(task_runs["ner"], input=str(_file(tmp_path, [{"tokens": words}])))
    served = _serve(task_runs["ner"], [{"tokens": words}])
    _same(served, expected)
    assert len(served[0]["tags"]) == 4


def test_metadata_and_health(cls_client, cls_run):
    meta = cls_client.get("/metadata").json()
    assert meta["task"] == "text-classification" and meta["labels"] == ["neg", "pos"]
    assert meta["recipe"]["task"]["type"] == "text-classification"
    assert meta["manifest"] == json.loads((cls_run / "manifest.json").read_text())
    assert meta["inputs"]["fields"] == ["text", "text_pair"] and meta["limits"]["max_inputs"] == 8
    health = cls_client.get("/health").json()
    assert health["status"] == "ok" and health["task"] == "text-classification"

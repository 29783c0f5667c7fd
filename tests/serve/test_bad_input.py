"""No request can stop the server: each bad one gets a 4xx with a JSON message saying what is wrong, and the
server answers normally afterwards."""

from __future__ import annotations

import json

import pytest

NESTED = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def _chunks(total: int, size: int = 4096):
    """A body sent chunked, without Content-Length: the limit must be counted while it streams."""
    yield b'{"inputs": ["'
    for _ in range(total // size):
        yield b"a" * size
    yield b'"]}'


# (name, method, path, request kwargs, status, a phrase the message must contain)
CASES = [
    ("number instead of text", "post", "/predict", {"json": {"inputs": [1]}}, 422, "expected a string or an object"),
    ("inputs not a list", "post", "/predict", {"json": {"inputs": "good"}}, 422, "valid list"),
    ("inputs null", "post", "/predict", {"json": {"inputs": None}}, 422, "inputs"),
    ("empty text", "post", "/predict", {"json": {"inputs": [""]}}, 422, "at least 1 character"),
    ("blank text", "post", "/predict", {"json": {"inputs": ["   "]}}, 422, "inputs.0.text: empty text"),
    ("unknown top-level field", "post", "/predict", {"json": {"inputs": ["a"], "top_k": 3}}, 422,
     "top_k: Extra inputs are not permitted"),
    ("unknown input field", "post", "/predict", {"json": {"inputs": [{"txt": "a"}]}}, 422, "inputs.0.txt"),
    ("missing field", "post", "/predict", {"json": {}}, 422, "inputs: Field required"),
    ("empty list", "post", "/predict", {"json": {"inputs": []}}, 422, "at least 1 item"),
    ("too many texts", "post", "/predict", {"json": {"inputs": ["good"] * 9}}, 422, "at most 8 items"),
    ("pair on a single-text run", "post", "/predict", {"json": {"inputs": [{"text": "a", "text_pair": "b"}]}}, 422,
     "reads no text_pair"),
    ("array body", "post", "/predict", {"json": ["good"]}, 422, "body"),
    ("invalid JSON", "post", "/predict", {"content": b'{"inputs": ["good"', "headers": {"content-type":
                                                                                         "application/json"}},
     400, "not valid JSON"),
    ("not UTF-8", "post", "/predict", {"content": b'{"inputs": ["caf\xe9"]}'}, 400, "not valid UTF-8"),
    ("nested too deep", "post", "/predict", {"content": NESTED}, 400, "error parsing the body"),
    ("form body", "post", "/predict", {"data": {"inputs": "good"}}, 415, "application/json"),
    ("huge body", "post", "/predict", {"content": b"x" * 50_000}, 413, "larger than the limit of 20000 bytes"),
    ("huge chunked body", "post", "/predict", {"content": "chunks"}, 413, "larger than the limit"),
    ("wrong endpoint", "post", "/predictions", {"json": {"inputs": ["good"]}}, 404, "no endpoint /predictions"),
    ("wrong method", "get", "/predict", {}, 405, "GET is not allowed on /predict"),
    ("chat on a classifier", "post", "/v1/chat/completions",
     {"json": {"messages": [{"role": "user", "content": "hi"}]}}, 404, "need a language model's run (causal-lm-sft"),
]


def _send(client, method: str, path: str, kwargs: dict):
    if kwargs.get("content") == "chunks":
        kwargs = {**kwargs, "content": _chunks(50_000)}  # a generator is used up once: a fresh one per request
    return getattr(client, method)(path, **kwargs)


@pytest.mark.parametrize("name,method,path,kwargs,status,phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_4xx(cls_client, name, method, path, kwargs, status, phrase):
    response = _send(cls_client, method, path, kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and phrase in error["message"], error


def test_the_server_answers_after_every_bad_input(cls_client):
    for _, method, path, kwargs, status, _ in CASES:
        assert _send(cls_client, method, path, kwargs).status_code == status
    assert cls_client.get("/health").json()["status"] == "ok"
    odd = ["a\u0000b", "emoji \U0001f600 ok", "x" * 5000, "ünïcödé"]  # odd but valid texts are answered
    response = cls_client.post("/predict", content=json.dumps({"inputs": odd}).encode())
    assert response.status_code == 200 and len(response.json()["predictions"]) == 4

"""OpenAI-compatible chat completions on a causal-lm-sft run: the same greedy answer as `lftrain.api.generate`,
whole or streamed as server-sent events."""

from __future__ import annotations

import json

import pytest

PROMPT = "review: the film was very good"


@pytest.fixture(scope="module")
def chat_client(sft_run):
    from fastapi.testclient import TestClient

    from lftrain.serve.app import build_app
    from lftrain.serve.config import ServeConfig

    with TestClient(build_app(sft_run, ServeConfig(max_new_tokens=24))) as client:
        yield client


def _events(response) -> list:
    lines = [line for line in response.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[len("data: "):] if line == "data: [DONE]" else json.loads(line[len("data: "):]) for line in lines]


def test_chat_equals_generate_and_streaming_equals_chat(chat_client, sft_run):
    import lftrain

    expected = lftrain.api.generate(sft_run, PROMPT, max_new_tokens=12)[0]  # recipe's system message, greedy
    body = {"model": "anything", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 12}
    whole = chat_client.post("/v1/chat/completions", json=body).json()
    assert whole["object"] == "chat.completion" and whole["model"] == sft_run.name
    choice = whole["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected} and expected
    usage = whole["usage"]
    assert 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 12 else "stop")

    streamed = chat_client.post("/v1/chat/completions", json={**body, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = _events(streamed)
    assert events[-1] == "[DONE]" and events[0]["choices"][0]["delta"] == {"role": "assistant"}
    chunks = events[1:-2]
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert len(chunks) > 1  # pieces as they come, not one blob
    assert "".join(e["choices"][0]["delta"]["content"] for e in chunks) == expected
    assert events[-2]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert events[-2]["usage"] == usage


def test_predict_on_an_sft_run_answers_each_prompt(chat_client, sft_run):
    import lftrain

    served = chat_client.post("/predict", json={"inputs": [PROMPT, {"prompt": "review: awful plot"}]}).json()
    expected = lftrain.api.generate(sft_run, [PROMPT, "review: awful plot"], max_new_tokens=4)  # recipe's length
    assert [p["response"] for p in served["predictions"]] == expected
    meta = chat_client.get("/metadata").json()
    assert meta["task"] == "causal-lm-sft" and meta["labels"] is None and meta["inputs"]["fields"] == ["prompt"]
    assert chat_client.get("/v1/models").json()["data"][0]["id"] == sft_run.name


@pytest.mark.parametrize("change,phrase", [
    ({"max_tokens": 25}, "more than this server allows (24"),
    ({"n": 2}, "n: Input should be 1"),
    ({"messages": []}, "at least 1 item"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "the assistant's"),
    ({"temperature": 5}, "temperature"),
    ({"stream": "yes please"}, "stream"),
    ({"top_k": 3}, "top_k: Extra inputs are not permitted"),
])
def test_bad_chat_requests(chat_client, change, phrase):
    body = {"messages": [{"role": "user", "content": PROMPT}], **change}
    for stream in (False, True):
        response = chat_client.post("/v1/chat/completions", json={**body, **({"stream": True} if stream and
                                                                             "stream" not in change else {})})
        assert response.status_code == 422 and phrase in response.json()["error"]["message"], response.text
    assert chat_client.get("/health").json()["status"] == "ok"

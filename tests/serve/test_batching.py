"""Concurrent requests share forward passes, each caller still gets its own answer, and a full queue is a 503."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lftrain.serve.batcher import Batcher, QueueFull


def _blocking_handler(inner=None):
    """A handler that records its batches and holds the first one until released (then: `inner`, or x10)."""
    started, release, batches = threading.Event(), threading.Event(), []

    def handler(items):
        batches.append(list(items))
        started.set()
        release.wait(10)
        return inner(items) if inner else [item * 10 for item in items]

    return handler, started, release, batches


def test_waiting_requests_run_as_one_batch_in_order():
    handler, started, release, batches = _blocking_handler()
    batcher = Batcher(handler, max_batch=4, max_wait_ms=0, max_queue=16)
    first = batcher.submit(1)
    assert started.wait(5)  # the worker is busy with [1]; the next ones queue up meanwhile
    rest = [batcher.submit(i) for i in range(2, 8)]
    release.set()
    assert first.result(5) == 10 and [f.result(5) for f in rest] == [20, 30, 40, 50, 60, 70]
    assert batches == [[1], [2, 3, 4, 5], [6, 7]]  # bounded by max_batch, in arrival order
    assert batcher.stats.batches == 3 and batcher.stats.largest == 4
    batcher.close()


def test_a_request_that_does_not_fit_opens_the_next_batch():
    handler, started, release, batches = _blocking_handler()
    batcher = Batcher(handler, max_batch=4, max_wait_ms=0, max_queue=16)
    batcher.submit(0)
    assert started.wait(5)
    futures = [batcher.submit(1, size=3), batcher.submit(2, size=3), batcher.submit(3, size=1)]
    release.set()
    assert [f.result(5) for f in futures] == [10, 20, 30]
    assert batches == [[0], [1], [2, 3]]
    batcher.close()


def test_full_queue_rejects_and_errors_reach_their_caller_alone():
    handler, started, release, _ = _blocking_handler()
    batcher = Batcher(handler, max_batch=1, max_wait_ms=0, max_queue=2)
    batcher.submit(1)
    assert started.wait(5)
    queued = [batcher.submit(2), batcher.submit(3)]
    with pytest.raises(QueueFull, match="2 requests are waiting"):
        batcher.submit(4)
    assert batcher.stats.rejected == 1
    release.set()
    assert [f.result(5) for f in queued] == [20, 30]

    boom = Batcher(lambda items: [ValueError("bad") if i == 2 else i for i in items], max_batch=8, max_wait_ms=50,
                   max_queue=8)
    futures = [boom.submit(i) for i in (1, 2, 3)]
    assert futures[0].result(5) == 1 and futures[2].result(5) == 3
    with pytest.raises(ValueError, match="bad"):
        futures[1].result(5)
    batcher.close()
    boom.close()


def _count_forward_passes(model) -> list[int]:
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(int(kwargs["input_ids"].shape[0])),
                                    with_kwargs=True)
    return sizes


def test_concurrent_http_requests_share_a_forward_pass(cls_run):
    import httpx

    from lftrain.serve.app import build_app
    from lftrain.serve.config import ServeConfig
    from tests.conftest import toy_rows

    app = build_app(cls_run, ServeConfig(max_batch=16, max_wait_ms=300))
    sizes = _count_forward_passes(app.state.loaded.model)
    texts = [r["text"] for r in toy_rows(16, seed=7)]

    async def ask_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            alone = [(await client.post("/predict", json={"inputs": [t]})).json() for t in texts[:2]]
            sizes.clear()
            together = await asyncio.gather(*(client.post("/predict", json={"inputs": texts[i:i + 2]})
                                              for i in range(0, 16, 2)))
            return alone, [r.json()["predictions"] for r in together]

    alone, together = asyncio.run(ask_all())
    assert sum(sizes) == 16 and len(sizes) < 8, sizes  # 8 requests of 2 texts: fewer passes than requests
    assert max(sizes) > 2
    expected = app.state.predictor.predict(app.state.predictor.examples(texts))  # one call, in order
    for i, preds in enumerate(together):  # each caller its own two answers, in its own order
        assert len(preds) == 2
        for got, want in zip(preds, expected[2 * i:2 * i + 2]):
            assert got["label"] == want["label"] and got["probs"] == pytest.approx(want["probs"], abs=2e-6)
    assert alone[0]["predictions"][0]["probs"] == pytest.approx(expected[0]["probs"], abs=2e-6)
    app.state.batcher.close()


def test_a_full_queue_is_a_503_and_the_server_recovers(cls_run):
    from fastapi.testclient import TestClient

    from lftrain.serve.app import build_app
    from lftrain.serve.config import ServeConfig

    app = build_app(cls_run, ServeConfig(max_batch=1, max_wait_ms=0, max_queue=1))
    real = app.state.batcher.handler
    handler, started, release, _ = _blocking_handler(real)
    app.state.batcher.handler = handler
    with TestClient(app) as client:
        threads = [threading.Thread(target=client.post, args=("/predict",), kwargs={"json": {"inputs": ["good"]}})
                   for _ in range(2)]
        threads[0].start()
        assert started.wait(5)  # the first request holds the model
        threads[1].start()
        for _ in range(200):  # the second waits in the queue (size 1)
            if app.state.batcher.waiting() == 1:
                break
            threading.Event().wait(0.01)
        busy = client.post("/predict", json={"inputs": ["good film"]})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "busy" in busy.json()["error"]["message"]
        release.set()
        for t in threads:
            t.join(10)
        ok = client.post("/predict", json={"inputs": ["good film"]})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] in ("neg", "pos")
        assert client.get("/health").json()["rejected"] == 1


def test_a_request_that_breaks_the_model_fails_alone(cls_run):
    import httpx

    from lftrain.serve.app import build_app
    from lftrain.serve.config import ServeConfig

    app = build_app(cls_run, ServeConfig(max_batch=16, max_wait_ms=300))
    predictor, real = app.state.predictor, app.state.predictor.predict

    def fragile(ex):
        if "boom" in ex.fields["text"]:
            raise RuntimeError("the model broke")
        return real(ex)

    predictor.predict = fragile

    async def ask():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            replies = await asyncio.gather(*(client.post("/predict", json={"inputs": [t]})
                                             for t in ("good film", "boom", "dull plot")))
            return replies, await client.get("/health")

    replies, health = asyncio.run(ask())
    assert [r.status_code for r in replies] == [200, 500, 200]
    assert "internal error (RuntimeError)" in replies[1].json()["error"]["message"]
    assert health.json()["batches"] == 1  # the three shared a batch; the two good ones were answered from a retry
    app.state.batcher.close()

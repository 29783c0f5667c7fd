"""The FastAPI application serving one trained run (docs/serving.md).

No `from __future__ import annotations` here: FastAPI reads the request models from the endpoint annotations at
run time, and they are built per run (the inputs a task takes, the limits)."""

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from lftrain.serve.config import ServeConfig
from lftrain.tasks.base import Task

log = logging.getLogger("lftrain")


def build_app(run: str | Path, config: ServeConfig | None = None):
    """A FastAPI app serving `run` (a run directory): the model is loaded now, once."""
    from lftrain.extras import need

    need("fastapi", "lft serve")
    from fastapi import FastAPI

    from lftrain.runs.chat import run_task
    from lftrain.serve.errors import BodyGuard, install_handlers

    config = config or ServeConfig()
    task = run_task(run)
    service = _load(run, task, config)
    loaded = service.model if task.chat else service.loaded

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if not task.chat:
            app.state.batcher.close()

    app = FastAPI(title=f"lftrain: {loaded.run_dir.name}", lifespan=lifespan,
                  description=f"A {task.type_name} run served by `lft serve` (docs/serving.md).")
    app.state.task, app.state.config, app.state.loaded = task, config, loaded
    if task.chat:
        app.state.chat = service
        _chat_routes(app, service)
    else:
        from lftrain.serve.batcher import Batcher

        app.state.predictor = service
        app.state.batcher = Batcher(service, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                                    max_queue=config.max_queue)
        _predict_route(app, service, app.state.batcher)
        _no_chat_route(app, task.type_name)
    _info_routes(app)
    listed = [r for r in app.routes if getattr(r, "include_in_schema", False)]  # not FastAPI's own doc pages
    install_handlers(app, ["GET /docs", *sorted(f"{m} {r.path}" for r in listed for m in r.methods if m != "HEAD")])
    app.add_middleware(BodyGuard, limit=config.max_body_bytes)
    return app


def _load(run: str | Path, task: type[Task], config: ServeConfig):
    """The run's model behind what serves it: a ChatService (chat models) or a Predictor (every other task)."""
    from lftrain.runs.chat import ChatModel
    from lftrain.runs.loaded import LoadedRun
    from lftrain.serve.chat import ChatService
    from lftrain.serve.predictor import Predictor

    if task.serve_input is None:
        from lftrain.errors import InputError
        from lftrain.tasks import TASKS

        served = ", ".join(TASKS.names(lambda c: c.serve_input is not None))
        raise InputError(f"{run}: `lft serve` does not serve {task.type_name} runs (it serves: {served})")
    if task.chat:
        model = ChatModel(run)
        return ChatService(model, name=model.run_dir.name, max_new_tokens=config.max_new_tokens,
                           max_queue=config.max_queue)
    return Predictor(LoadedRun(run), max_batch=config.max_batch, temperature=config.temperature)


def _predict_route(app, predictor, batcher) -> None:
    from starlette.concurrency import run_in_threadpool

    from lftrain.serve.schemas import predict_request

    PredictRequest = predict_request(app.state.task, app.state.config.max_inputs)  # noqa: N806

    @app.post("/predict", summary="predictions for 1 to max_inputs inputs, as `lft predict` writes them")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        examples = await run_in_threadpool(predictor.examples, body.inputs)  # validated, images decoded
        return {"predictions": await batcher.run(examples, size=len(examples))}


def _no_chat_route(app, kind: str) -> None:
    from fastapi import HTTPException

    from lftrain.tasks import TASKS

    @app.post("/v1/chat/completions", include_in_schema=False)
    async def no_chat() -> None:
        chats = ", ".join(TASKS.names(lambda c: c.chat))
        raise HTTPException(404, f"this server runs a {kind} run: chat completions need a language model's run "
                            f"({chats}; use POST /predict)")


def _chat_routes(app, service) -> None:
    from fastapi.responses import StreamingResponse
    from starlette.concurrency import run_in_threadpool

    from lftrain.serve.schemas import ChatRequest, predict_request

    PredictRequest = predict_request(app.state.task, app.state.config.max_inputs)  # noqa: N806

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat completion (stream=true: server-sent events)")
    async def chat(body: ChatRequest):
        if body.stream:
            events = await run_in_threadpool(service.stream, body)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await run_in_threadpool(service.complete, body)

    @app.get("/v1/models", summary="the one model this server runs (OpenAI's model list)")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.name, "object": "model", "owned_by": "lftrain"}]}

    @app.post("/predict", summary="the run's answer to each prompt (a one-turn conversation)")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        return {"predictions": await run_in_threadpool(service.predict, body.inputs)}


def _info_routes(app) -> None:
    @app.get("/health", summary="liveness, and how busy the server is")
    async def health() -> dict[str, Any]:
        state = app.state
        if state.task.chat:
            return {"status": "ok", "task": state.task.type_name, "active": state.chat.active}
        stats = state.batcher.stats
        return {"status": "ok", "task": state.task.type_name, "waiting": state.batcher.waiting(), **vars(stats)}

    @app.get("/metadata", summary="the run: task, labels, inputs, limits, recipe and manifest")
    async def metadata() -> dict[str, Any]:
        return _metadata(app)


def _metadata(app) -> dict[str, Any]:
    loaded, task = app.state.loaded, app.state.task
    labels = loaded.task.labels.names if loaded.task.labels is not None else None
    manifest = loaded.run_dir / "manifest.json"
    item = task.serve_input
    return {"run": loaded.run_dir.name, "task": task.type_name, "labels": labels,
            "inputs": {"fields": list(item.model_fields), "bare_strings": task.serve_bare_strings},
            "limits": app.state.config.public(), "recipe": loaded.recipe.model_dump(mode="json"),
            "manifest": json.loads(manifest.read_text()) if manifest.is_file() else None}


def run_server(run: str | Path, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
               **limits: Any) -> None:
    """Serve `run` with uvicorn until interrupted (Ctrl-C, SIGTERM)."""
    from lftrain.extras import need

    uvicorn = need("uvicorn", "lft serve")
    app = build_app(run, ServeConfig(**limits))
    log.info("serving %s (%s) on http://%s:%d - endpoints: docs/serving.md", app.state.loaded.run_dir,
             app.state.task.type_name, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)

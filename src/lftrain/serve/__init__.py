"""`lft serve RUN`: a trained run behind an HTTP API (FastAPI + uvicorn, the `[serve]` extra).

`app.build_app` turns a run directory into an application: `POST /predict` for every task, an OpenAI-compatible
`POST /v1/chat/completions` for causal-lm-sft runs, `GET /health` and `GET /metadata`. Concurrent predictions are
run together as micro-batches (`batcher.py`); every bad request gets a 4xx JSON error (`errors.py`). See
docs/serving.md.
"""

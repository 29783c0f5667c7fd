"""`lft serve RUN`: a trained run behind an HTTP API (a CLI plugin, see lftrain.cli.PLUGINS)."""

from __future__ import annotations

from lftrain.serve.config import ServeConfig

_DEFAULTS = ServeConfig()


def add_parsers(sub, epilog: str) -> None:
    s = sub.add_parser("serve", help="serve a trained run over HTTP (predictions; chat completions for SFT runs)",
                       epilog=epilog, description="Serve RUN over HTTP until interrupted: POST /predict (every "
                       "task), POST /v1/chat/completions (OpenAI-compatible, causal-lm-sft runs), GET /health and "
                       "GET /metadata. Concurrent predictions run as micro-batches. Needs the [serve] extra. "
                       "See docs/serving.md.")
    s.add_argument("run", help="run directory written by `lft train`")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--max-batch", type=int, default=_DEFAULTS.max_batch, metavar="N",
                   help=f"inputs per forward pass at most (default {_DEFAULTS.max_batch})")
    s.add_argument("--max-wait-ms", type=float, default=_DEFAULTS.max_wait_ms, metavar="MS",
                   help=f"how long a request waits for others to batch with (default {_DEFAULTS.max_wait_ms:g})")
    s.add_argument("--max-queue", type=int, default=_DEFAULTS.max_queue, metavar="N",
                   help=f"requests waiting for the model at most; more get 503 (default {_DEFAULTS.max_queue})")
    s.add_argument("--max-inputs", type=int, default=_DEFAULTS.max_inputs, metavar="N",
                   help=f"inputs per /predict request at most (default {_DEFAULTS.max_inputs})")
    s.add_argument("--max-body-bytes", type=int, default=_DEFAULTS.max_body_bytes, metavar="B",
                   help=f"largest request body; larger gets 413 (default {_DEFAULTS.max_body_bytes})")
    s.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens, metavar="N",
                   help=f"largest max_tokens of a chat completion (default {_DEFAULTS.max_new_tokens})")
    s.add_argument("--no-temperature", action="store_true",
                   help="raw probabilities: do not apply the temperature stored in model/calibration.json")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default info: one line per request)")


def run(args) -> int | None:
    if args.command != "serve":
        return None
    from lftrain import api

    api.serve(args.run, host=args.host, port=args.port, log_level=args.log_level, max_batch=args.max_batch,
              max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_inputs=args.max_inputs,
              max_body_bytes=args.max_body_bytes, max_new_tokens=args.max_new_tokens,
              temperature=not args.no_temperature)
    return 0

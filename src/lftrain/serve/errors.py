"""Every bad request gets a 4xx with a JSON body saying what is wrong, in OpenAI's error shape (chat clients read
it): `{"error": {"message": ..., "type": ..., "code": status}}`. Nothing a client sends stops the server: an
unexpected failure is a 500 for that request alone, logged with its traceback."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("lftrain")

_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
          413: "request_too_large", 415: "invalid_request_error", 422: "invalid_request_error",
          503: "server_busy", 500: "server_error"}


def error_response(status: int, message: str, details: list | None = None, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    body: dict[str, Any] = {"message": message, "type": _TYPES.get(status, "error"), "code": status}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install_handlers(app, endpoints: list[str]) -> None:
    """Turn validation errors, unknown routes, lftrain's input errors, a full queue and crashes into JSON errors."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from lftrain.errors import InputError
    from lftrain.serve.batcher import QueueFull

    async def invalid(request, exc: RequestValidationError):
        return _validation_response(exc.errors())

    async def http_error(request, exc: HTTPException):
        if exc.status_code == 404 and exc.detail == "Not Found":  # no such route (not a route's own 404)
            return error_response(404, f"no endpoint {request.url.path}; this server has: {', '.join(endpoints)}")
        if exc.status_code == 405:
            return error_response(405, f"{request.method} is not allowed on {request.url.path}",
                                  headers=getattr(exc, "headers", None))
        return error_response(exc.status_code, str(exc.detail))

    async def bad_input(request, exc: InputError):
        return error_response(422, str(exc))

    async def busy(request, exc: QueueFull):
        return error_response(503, f"{exc}; retry shortly", headers={"Retry-After": "1"})

    async def crashed(request, exc: Exception):
        log.error("serve: %s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__}); the server keeps running")

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(InputError, bad_input)
    app.add_exception_handler(QueueFull, busy)
    app.add_exception_handler(Exception, crashed)


def _validation_response(errors: list[dict]):
    """422 naming each bad field (`inputs.0.text: Input should be a valid string`); invalid JSON is a 400."""
    for e in errors:
        if e.get("type") == "json_invalid":
            where = e.get("loc", ("body", "?"))[-1]
            reason = (e.get("ctx") or {}).get("error", "")
            return error_response(400, f"the body is not valid JSON: {reason} (at character {where})")
    lines, details = [], []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
        details.append({"loc": loc, "msg": msg, "type": e.get("type")})
    more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
    return error_response(422, "; ".join(lines[:3]) + more, details)


class BodyGuard:
    """ASGI middleware in front of the app: a body over `limit` bytes is a 413 (told by Content-Length before it
    is read, or counted while it streams), a body that is not UTF-8 a 400, a body that is not JSON a 415."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        body = await self._read(receive)
        if body is None:
            return await self._too_large(scope, receive, send)
        problem = self._problem(body, headers.get("content-type", ""))
        if problem is not None:
            return await problem(scope, receive, send)
        if "content-type" not in headers:  # curl --data-binary, a bare client: read it as the JSON it must be
            scope = {**scope, "headers": [*scope.get("headers", []), (b"content-type", b"application/json")]}
        return await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _problem(self, body: bytes, content_type: str):
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind and kind != "application/json" and not kind.endswith("+json"):
            return error_response(415, f"send JSON with Content-Type: application/json (got {kind})")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = body[exc.start:exc.start + 1]
            return error_response(400, f"the body is not valid UTF-8 (byte {exc.start}: {bad!r})")
        return None

    async def _too_large(self, scope, receive, send) -> None:
        await error_response(413, f"the body is larger than the limit of {self.limit} bytes "
                             "(--max-body-bytes)")(scope, receive, send)


def _replay(body: bytes, receive):
    """An ASGI `receive` that gives the body already read, then the client's own messages (its disconnect, which
    a streamed reply listens for)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

"""What every request meets before and after a route: the bearer token (compared in constant time), the body limit
(read before any route does), and one JSON error shape {"error": one line, "field": the request field at fault} for
every failure, a bug included — never a traceback (DESIGN §10)."""
from __future__ import annotations

import hmac
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import InfolensError
from .requests import ApiError

OPEN_PATHS = ("/", "/v2/health/live", "/v2/health/ready")  # no token needed: the viewer's page and the probes


def install(app: FastAPI, config, metrics) -> None:
    """The middleware and the exception handlers, on `app` (serve/app.py's ServeConfig `config`, its Metrics)."""
    max_body = int(config.max_body_mb * 1024 * 1024)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Auth (constant-time), then the body limit, before any route reads the request."""
        if config.tokens and request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            token = given[7:].encode() if given.lower().startswith("bearer ") else b""
            if not any(hmac.compare_digest(token, t.encode()) for t in config.tokens):
                metrics.rejections.labels("auth").inc()
                return error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", "authorization",
                             {"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            metrics.rejections.labels("body").inc()
            return error(413, f"request body over {config.max_body_mb:g} MB (the server's --max-body-mb)", "body")
        if length is None and request.method in ("POST", "PUT"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    metrics.rejections.labels("body").inc()
                    return error(413, f"request body over {config.max_body_mb:g} MB (the server's --max-body-mb)",
                                 "body")
            request._body = body  # the route reads it from here
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return error(exc.status, str(exc), exc.field, exc.headers)

    @app.exception_handler(InfolensError)
    async def infolens_error(request, exc: InfolensError):
        return error(422, str(exc), exc.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return error(422, f"{first.get('msg', 'invalid request')}", where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), None)

    @app.exception_handler(sqlite3.OperationalError)
    @app.exception_handler(OSError)
    async def storage_error(request, exc: Exception):
        # the state folder full or read-only, or past SQLite's 30 s timeout another process holding the job
        # database's lock: nothing was written (a job's folder goes with its failed record)
        line = app.state.store.fault_line(exc)
        if line is None and isinstance(exc, sqlite3.OperationalError):
            line = f"the job database is busy ({exc}): try again"
        if line is None:
            return await internal_error(request, exc)
        return error(503, line, None, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {exc}", None)


def error(status: int, message: str, field: str | None, headers: dict | None = None) -> JSONResponse:
    """The one error shape: the message's first line and the field at fault (None: the request as a whole)."""
    return JSONResponse({"error": message.splitlines()[0] if message else "error", "field": field},
                        status_code=status, headers=headers)

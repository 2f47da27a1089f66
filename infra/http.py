"""HTTP plumbing shared by every API: one error format, body limits, request ids."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geofences.validation import GeometryValidationError
from services.errors import ConnectionLost, DomainError, Problem, RateLimited

log = structlog.get_logger(__name__)


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(code: str, message: str, problems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if problems:
        body["detail"] = problems
    return body


def _loc_to_field(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")] or list(loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def install_error_handlers(app: FastAPI) -> None:
    async def replace_pool(request: Request) -> None:
        """The pool keeps no pre-ping (infra/db.py): when one connection turns out dead, every pooled one is as
        stale, so the pool is replaced and the next request connects afresh."""
        engine = getattr(request.app.state, "engine", None)
        if engine is not None:
            await engine.dispose(close=False)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, error: DomainError) -> Response:
        if isinstance(error, ConnectionLost):
            await replace_pool(request)
        headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, RateLimited) else None
        body = error_body(error.code, error.message, [p.as_dict() for p in error.problems])
        return ORJSONResponse(body, status_code=error.status, headers=headers)

    @app.exception_handler(GeometryValidationError)
    async def geometry_error(request: Request, error: GeometryValidationError) -> Response:
        problems = [Problem(p.field or "body", p.reason, p.code, p.point).as_dict() for p in error.errors]
        return ORJSONResponse(error_body("validation_failed", "invalid GeoJSON", problems), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def request_validation(request: Request, error: RequestValidationError) -> Response:
        problems = [
            {
                # A JSON syntax error's location is a character offset, not a field.
                "field": "body" if e.get("type") == "json_invalid" else _loc_to_field(tuple(e.get("loc", ()))),
                "reason": str(e.get("msg")),
                "code": str(e.get("type")),
            }
            for e in error.errors()
        ]
        return ORJSONResponse(error_body("validation_failed", "the request is not valid", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return ORJSONResponse(
            error_body("http_error", str(error.detail)), status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    @app.exception_handler(SQLAlchemyTimeoutError)
    @app.exception_handler(OperationalError)
    @app.exception_handler(ConnectionError)
    @app.exception_handler(OSError)
    async def dependency_down(request: Request, error: Exception) -> Response:
        log.warning("dependency_unavailable", error=repr(error)[:300])
        return ORJSONResponse(
            error_body("unavailable", "a backing service (database or Redis) is unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.exceptions.OperatorInterventionError)
    @app.exception_handler(asyncpg.InterfaceError)
    async def connection_lost(request: Request, error: Exception) -> Response:
        """The fix hot path talks to asyncpg directly, so a connection PostgreSQL dropped (restart, failover)
        surfaces here rather than as SQLAlchemy's disconnect error."""
        if isinstance(error, asyncpg.InterfaceError) and "closed" not in str(error):
            log.exception("database_interface_error")
            return ORJSONResponse(error_body("internal", "unexpected database error"), status_code=500)
        await replace_pool(request)
        return await dependency_down(request, error)

    @app.exception_handler(DBAPIError)
    async def db_error(request: Request, error: DBAPIError) -> Response:
        if error.connection_invalidated:
            return await dependency_down(request, error)
        # SQLSTATE class 22 (data exception): a value the database cannot hold, e.g. an id beyond bigint.
        if str(getattr(error.orig, "sqlstate", "") or "").startswith("22"):
            body = error_body(
                "validation_failed",
                "a value in the request is out of range",
                [{"field": "request", "reason": "a number or text is out of range", "code": "out_of_range"}],
            )
            return ORJSONResponse(body, status_code=422)
        log.exception("database_error")
        return ORJSONResponse(error_body("internal", "unexpected database error"), status_code=500)


class BodyLimitMiddleware:
    """Refuse bodies over a limit with 413 before reading them all (Content-Length or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    def _limit(self, path: str) -> int:
        for prefix, limit in self.overrides.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._reject(send, limit)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send, limit)

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        body = orjson.dumps(error_body("too_large", f"request body over {limit} bytes"))
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass

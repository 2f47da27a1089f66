"""HTTP plumbing shared by every API: one error format (and its place in the OpenAPI document), body limits."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from datetime import date, datetime
from typing import Annotated, Any

import asyncpg
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geofences.validation import GeometryValidationError
from kernel.errors import ConnectionLost, DomainError, Problem, RateLimited, Unavailable

log = structlog.get_logger(__name__)

RETRY_AFTER_UNAVAILABLE_S = 2  # every 503 says when to come back: a database failover or restart takes seconds
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(value: object) -> object:
    """pydantic reads a number as epoch seconds: `to=0` would be 1970, hiding a client's bug."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an ISO 8601 date or time such as 2025-06-15T13:45:00Z, not a number")
    return value


# Query parameters that are dates or times: ISO 8601 only.
IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]
IsoDate = Annotated[date, BeforeValidator(_not_a_number)]


class ErrorProblem(BaseModel):
    """One thing wrong with the request."""

    field: str = Field(description="Where: a dotted path into the body (`fixes[2].lat`), a parameter or header name")
    reason: str = Field(description="Why, for people")
    code: str = Field(description="Why, for programs: e.g. `missing`, `greater_than_equal`, `bool_type`, `protocol`")
    point: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="[lon, lat] of the offending vertex (geometry only)"
    )


class Error(BaseModel):
    """Every error answer of every route, 422 included: a machine code, a message, and per-field problems."""

    error: str = Field(
        description="Machine code: validation_failed, bad_request, unauthorized, forbidden, not_found, conflict, "
        "too_large, rate_limited, unavailable, http_error, ..."
    )
    message: str = Field(description="What went wrong, for people")
    detail: list[ErrorProblem] = Field(default_factory=list, description="Per-field problems; absent when none")


ERROR_ANSWERS = {
    400: "The request cannot be understood (a body that cannot be parsed, a client protocol's message)",
    401: "Missing, unknown or revoked credentials",
    403: "Authenticated, but not allowed (role, organisation, CSRF token, proof of presence)",
    404: "What the request names does not exist (in this organisation)",
    409: "The request conflicts with the current state",
    413: "The request body is over the size limit",
    422: "The request is not valid: `detail` names each field and why",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "A backing service (database or Redis) is unavailable: retry shortly",
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
# Operations answering 503 in a shape of their own, or not at all.
_NO_BACKING = re.compile(r"^GET /(health|ready)$")


def _error_answers(key: str, operation: dict[str, Any], extra: Iterable[tuple[re.Pattern[str], set[int]]]) -> set[int]:
    """The error statuses an operation can answer: from its shape, plus `extra` (pattern over "METHOD /path")."""
    parameters = operation.get("parameters", [])
    statuses = set() if _NO_BACKING.match(key) else {503}
    if parameters or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {400, 413}  # 400: a body FastAPI cannot parse at all (a broken multipart form)
    if operation.get("security"):
        statuses.add(401)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    for pattern, more in extra:
        if pattern.search(key):
            statuses |= more
    return statuses


def _not_null(parameter: dict[str, Any]) -> None:
    """A header, query or path parameter is text or absent, never JSON null: `str | None` means optional."""
    schema = parameter.get("schema", {})
    options = [option for option in schema.get("anyOf", []) if option != {"type": "null"}]
    if "anyOf" in schema and len(options) == 1:
        del schema["anyOf"]
        schema.update(options[0])
    elif "anyOf" in schema:
        schema["anyOf"] = options


def document_errors(app: FastAPI, extra: dict[str, set[int]], optional_auth: Iterable[str] = ()) -> None:
    """Make the OpenAPI document the contract: `Error` replaces FastAPI's `HTTPValidationError` for 422, and each
    operation lists every error status it can answer, all with `Error`. `extra` maps a regular expression over
    "METHOD /path" to further statuses; a pattern that matches no operation is a mistake and raises.
    `optional_auth` names operations ("METHOD /path") that also serve a caller without credentials."""
    optional_auth = frozenset(optional_auth)
    build = app.openapi
    patterns = [(re.compile(pattern), statuses) for pattern, statuses in extra.items()]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        with warnings.catch_warnings():
            # Fixed below: one function serving GET and POST (OsmAnd) gets one id from FastAPI.
            warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
            schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        error_schema = Error.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(error_schema.pop("$defs", {}))
        components["Error"] = error_schema
        matched: set[str] = set()
        operation_ids: set[str] = set()
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                key = f"{method.upper()} {path}"
                matched |= {p.pattern for p, _ in patterns if p.search(key)}
                for parameter in operation.get("parameters", []):
                    _not_null(parameter)
                if key in optional_auth:
                    operation["security"] = [*operation.get("security", []), {}]
                responses = operation.setdefault("responses", {})
                declared = {int(status) for status in responses if status.isdigit() and int(status) >= 400}
                for status in sorted(declared | _error_answers(key, operation, patterns)):
                    answer = responses.setdefault(str(status), {})
                    if answer.get("description") in (None, "Validation Error", "Successful Response"):
                        answer["description"] = ERROR_ANSWERS.get(status, "Error")
                    content = answer.get("content", {}).get("application/json", {}).get("schema")
                    if content is None or content == {"$ref": "#/components/schemas/HTTPValidationError"}:
                        answer["content"] = {"application/json": {"schema": _ERROR_REF}}
                    if status == 429:
                        responses["429"]["headers"] = {
                            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
                        }
                # One function serving two methods gets one id from FastAPI: ids must be unique.
                if operation.get("operationId") in operation_ids:
                    operation["operationId"] += f"_{method}"
                operation_ids.add(operation.get("operationId", ""))
        unmatched = {p.pattern for p, _ in patterns} - matched
        if unmatched:
            raise ValueError(f"error answers declared for no operation: {sorted(unmatched)}")
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


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


def _allowed_methods(request: Request) -> list[str]:
    def serves(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)

    return [method for method in ("GET", "POST", "PUT", "PATCH", "DELETE") if serves(method)]


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
        headers = None
        if isinstance(error, RateLimited):
            headers = {"Retry-After": str(error.retry_after_s)}
        elif isinstance(error, Unavailable):
            headers = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)}
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
        if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
            # FastAPI's answer to a body that is not even text; a body that is not JSON is a 422 already.
            problem = {"field": "body", "reason": "the body is not UTF-8 JSON", "code": "json_invalid"}
            return ORJSONResponse(error_body("validation_failed", "the request is not valid", [problem]), 422)
        headers = error.headers
        if error.status_code == 405:
            # Starlette names only the methods of the first route matching the path; Allow lists them all.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return ORJSONResponse(
            error_body("http_error", str(error.detail)), status_code=error.status_code, headers=headers
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
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)},
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
        sqlstate = str(getattr(error.orig, "sqlstate", "") or "")
        # A lost connection, or a server that cannot serve now (08: connection exception; 53: e.g. too many
        # connections; 57: shutting down or "the database system is starting up"): retry shortly, not a bug.
        if error.connection_invalidated or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES:
            return await dependency_down(request, error)
        # SQLSTATE class 22 (data exception): a value the database cannot hold, e.g. an id beyond bigint.
        if sqlstate.startswith("22"):
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
        over = started = False

        async def limited_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            """Once the body is over the limit, the answer is 413 whatever the app made of the interruption
            (FastAPI turns any error while reading a body into a 400)."""
            nonlocal started
            if over:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not started:
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

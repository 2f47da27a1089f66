"""FastAPI dependencies as Annotated aliases: the process's resources, the unit of work, settings, the admin
principal. The resources are the composition root's (`infra/container.py`), made in the app's lifespan.

An admin principal comes from an organisation API key (`Authorization: Bearer` or `X-API-Key`) or from the
browser session cookie set by `POST /admin/v1/session`. A cookie is sent by the browser on its own, so a
state-changing request with one must also carry the session's CSRF token, which only our own pages can read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from infra.resources import Resources
from infra.settings import Settings
from kernel.errors import Forbidden, Problem, Unauthorized, ValidationFailed
from kernel.uow import UnitOfWork, unit_of_work
from services.accounts import SESSION_COOKIE, AdminSession, load_session, principal_for_user
from services.orgs import Principal, authenticate_api_key

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def resources_of(request: Request) -> Resources:
    """The API process's resources; for code that has the request but is no dependency (SSE streams, hooks)."""
    found: Resources = request.app.state.resources
    return found


ResourcesDep = Annotated[Resources, Depends(resources_of)]


async def _uow(resources: ResourcesDep) -> AsyncIterator[UnitOfWork]:
    async with unit_of_work(resources.session_factory) as uow:
        yield uow


# scope="function": the transaction commits before the response is sent, so a 2xx means durable.
UowDep = Annotated[UnitOfWork, Depends(_uow, scope="function")]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]

# Ids are bigint: a larger one is a 422 naming the parameter, not a database error.
MAX_ID = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]

_bearer = HTTPBearer(auto_error=False, description="Organisation API key")
_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Browser session from POST /admin/v1/session")


async def _session(resources: ResourcesDep, token: Annotated[str | None, Depends(_cookie)]) -> AdminSession | None:
    return await load_session(resources.redis, token) if token else None


# The browser session behind the cookie, or None (no cookie, expired, logged out).
SessionDep = Annotated[AdminSession | None, Depends(_session)]


def require_csrf(request: Request, session: AdminSession) -> None:
    if request.method not in SAFE_METHODS and not session.csrf_matches(request.headers.get("X-CSRF-Token")):
        raise Forbidden("CSRF token missing or wrong")


# A positive id (below 2**63), or empty for none: the OpenAPI document says so, and clients generated from it.
ORGANISATION_ID = r"^([1-9][0-9]{0,17})?$"


def _organisation_id(value: str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise ValidationFailed("bad organisation", [Problem(field, "expected an organisation id (a positive integer)")])
    return int(value)


async def _principal(
    request: Request,
    uow: UowDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
    cookie: Annotated[str | None, Depends(_cookie)],
    session: SessionDep,
    x_organisation: Annotated[
        str | None,
        Header(alias="X-Organisation", pattern=ORGANISATION_ID, description="Organisation id for a browser session"),
    ] = None,
    organisation: Annotated[
        str | None,
        Query(
            pattern=ORGANISATION_ID,
            description="Organisation id for a browser session where headers cannot be set (SSE)",
        ),
    ] = None,
) -> Principal:
    if x_organisation is not None:
        wanted = _organisation_id(x_organisation, "X-Organisation")
    else:
        wanted = _organisation_id(organisation, "organisation")
    key = bearer.credentials if bearer else header_key
    if key:
        principal = await authenticate_api_key(uow.session, key)
        if wanted is not None and wanted != principal.organisation_id:
            raise Forbidden(f"this API key belongs to organisation {principal.organisation_id}, not {wanted}")
        return principal
    if session is not None:
        require_csrf(request, session)
        return await principal_for_user(uow.session, session.user_id, wanted)
    if cookie:
        raise Unauthorized("your session has expired or was ended; log in again")
    raise Unauthorized(
        "log in (POST /admin/v1/session) or send an organisation API key"
        " as 'Authorization: Bearer <key>' or 'X-API-Key'"
    )


PrincipalDep = Annotated[Principal, Depends(_principal)]

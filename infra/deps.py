"""FastAPI dependencies as Annotated aliases: the unit of work, settings, the admin principal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from infra.settings import Settings
from services.errors import Unauthorized
from services.orgs import Principal, authenticate_api_key
from services.uow import UnitOfWork, unit_of_work


async def _uow(request: Request) -> AsyncIterator[UnitOfWork]:
    async with unit_of_work(request.app.state.session_factory) as uow:
        yield uow


# scope="function": the transaction commits before the response is sent, so a 2xx means durable.
UowDep = Annotated[UnitOfWork, Depends(_uow, scope="function")]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]

_bearer = HTTPBearer(auto_error=False, description="Organisation API key")
_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def _principal(
    uow: UowDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> Principal:
    key = bearer.credentials if bearer else header_key
    if not key:
        raise Unauthorized("send an organisation API key as 'Authorization: Bearer <key>' or 'X-API-Key'")
    return await authenticate_api_key(uow.session, key)


PrincipalDep = Annotated[Principal, Depends(_principal)]

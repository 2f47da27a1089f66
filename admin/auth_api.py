"""Login, logout and "who am I" for the admin UI: a session cookie plus a CSRF token for state changes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from infra.deps import SessionDep, UowDep, require_csrf, resources_of
from infra.proxy import client_host, is_https
from kernel.errors import Unauthorized
from services import accounts

router = APIRouter(prefix="/admin/v1", tags=["admin: session"])


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=accounts.MAX_PASSWORD)


class UserOut(BaseModel):
    id: int
    email: str


class OrganisationOut(BaseModel):
    id: int
    name: str
    slug: str
    role: str


class SessionOut(BaseModel):
    user: UserOut
    organisations: list[OrganisationOut] = Field(description="The first is used when X-Organisation is not sent")
    csrf_token: str = Field(description="Send as X-CSRF-Token on every request other than GET/HEAD")


def _set_cookie(response: Response, request: Request, token: str) -> None:
    # No Max-Age: the cookie ends with the browser; the server ends the session after 12 h idle in any case.
    response.set_cookie(
        accounts.SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/",
    )


@router.post("/session", response_model=SessionOut)
async def log_in(body: LoginIn, request: Request, response: Response, uow: UowDep, current: SessionDep) -> Any:
    """Log in with email and password; sets the `placecast_session` cookie."""
    redis = resources_of(request).redis
    address = client_host(request)
    await accounts.count_login_attempt(redis, address, body.email)
    limit = request.app.state.settings.login_failures_per_address
    await accounts.check_not_locked(redis, address, body.email, address_limit=limit)
    user_id = await accounts.authenticate(uow.session, body.email, body.password)
    if user_id is None:
        await accounts.record_login_failure(redis, address, body.email)
        raise Unauthorized("wrong email or password")
    if current is not None:  # a fresh token on every login: a planted cookie never becomes a logged-in one
        await accounts.end_session(redis, current.token)
    session = await accounts.start_session(redis, user_id)
    _set_cookie(response, request, session.token)
    return {**await accounts.profile(uow.session, user_id), "csrf_token": session.csrf_token}


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
async def log_out(request: Request, current: SessionDep) -> Response:
    """End the session (needs X-CSRF-Token); without a live session it only clears the cookie."""
    if current is not None:
        require_csrf(request, current)
        await accounts.end_session(resources_of(request).redis, current.token)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(accounts.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/me", response_model=SessionOut)
async def me(uow: UowDep, current: SessionDep) -> Any:
    """The logged-in user, their organisations and roles, and the session's CSRF token (after a page reload)."""
    if current is None:
        raise Unauthorized("not logged in")
    return {**await accounts.profile(uow.session, current.user_id), "csrf_token": current.csrf_token}

"""Device authentication, enrolment and limits for the mobile API."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infra.deps import UowDep, resources_of
from infra.proxy import client_host
from infra.settings import Settings
from kernel.errors import Unauthorized
from kernel.uow import UnitOfWork
from notifications.tasks import INBOX_CHANNEL
from services.devices import DeviceAuth, authenticate_device
from services.orgs import Principal, authenticate_api_key
from services.ratelimit import check_rate

_bearer = HTTPBearer(auto_error=False, description="Device credential from registration")
REVOKED = "revoked"  # on the device's inbox channel: its open streams re-check their credential at once


async def rate_limit(request: Request, device: DeviceAuth) -> None:
    settings = request.app.state.settings
    await check_rate(
        resources_of(request).redis,
        f"device:{device.device_id}",
        settings.device_requests_per_window,
        settings.rate_window_s,
    )


def _credential(bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    if bearer is None:
        raise Unauthorized("send the device credential as 'Authorization: Bearer <credential>'")
    return bearer.credentials


# The raw device credential of the request (streams keep it to re-check that it still opens the device).
CredentialDep = Annotated[str, Depends(_credential)]


async def _device(request: Request, uow: UowDep, credential: CredentialDep) -> DeviceAuth:
    # Reads take no row lock (see authenticate_device); anything that writes holds the row against rotate/erase.
    reading = request.method in ("GET", "HEAD")
    device = await authenticate_device(uow.session, credential, lock=None if reading else "key share")
    await rate_limit(request, device)
    return device


async def _device_for_change(request: Request, uow: UowDep, credential: CredentialDep) -> DeviceAuth:
    device = await authenticate_device(uow.session, credential, lock="update")
    await rate_limit(request, device)
    return device


DeviceDep = Annotated[DeviceAuth, Depends(_device)]
# For rotating the credential and erasing: the device's row locked for update from the start.
DeviceChangeDep = Annotated[DeviceAuth, Depends(_device_for_change)]


def announce_revocation(request: Request, uow: UnitOfWork, device_id: int) -> None:
    """After commit, the device's open inbox streams (on any API process) re-check their credential now; if this
    message is lost they still do within a second (see inbox_api)."""
    redis = resources_of(request).redis

    async def publish() -> None:
        await redis.publish(INBOX_CHANNEL.format(device_id), REVOKED)

    uow.after_commit(publish)


async def limit_enrolment_by_address(request: Request) -> None:
    """Counted before the key is checked, so guessing enrolment keys is limited too."""
    settings: Settings = request.app.state.settings
    await check_rate(
        resources_of(request).redis,
        f"enrol-address:{client_host(request)}",
        settings.enrolments_per_address,
        settings.enrolment_window_s,
        subject="enrolments from this address",
    )


async def limit_enrolment_by_key(request: Request, key: str) -> None:
    settings: Settings = request.app.state.settings
    await check_rate(
        resources_of(request).redis,
        "enrol-key:" + hashlib.sha256(key.encode()).hexdigest()[:32],
        settings.enrolments_per_key,
        settings.enrolment_window_s,
        subject="enrolments with this enrolment key",
    )


async def authenticate_enrolment(request: Request, uow: UnitOfWork, key: str) -> Principal:
    """The organisation whose enrolment key this is, within the enrolment limits (429 + Retry-After)."""
    await limit_enrolment_by_address(request)
    organisation = await authenticate_api_key(uow.session, key, purpose="enrolment")
    await limit_enrolment_by_key(request, key)
    return organisation


async def _enrolment(
    request: Request,
    uow: UowDep,
    enrolment_key: Annotated[
        str | None, Header(alias="X-Enrolment-Key", description="The organisation's app key")
    ] = None,
) -> Principal:
    if not enrolment_key:
        raise Unauthorized("send the organisation's enrolment key as 'X-Enrolment-Key'")
    return await authenticate_enrolment(request, uow, enrolment_key)


# The organisation enrolling a new device with its app key (POST /v1/devices).
EnrolmentDep = Annotated[Principal, Depends(_enrolment)]

"""Device authentication and limits for the mobile API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infra.deps import UowDep
from services.devices import DeviceAuth, authenticate_device
from services.errors import Unauthorized
from services.ratelimit import check_rate

_bearer = HTTPBearer(auto_error=False, description="Device credential from registration")


async def rate_limit(request: Request, device: DeviceAuth) -> None:
    settings = request.app.state.settings
    await check_rate(
        request.app.state.redis,
        f"device:{device.device_id}",
        settings.device_requests_per_window,
        settings.rate_window_s,
    )


async def _device(
    request: Request, uow: UowDep, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> DeviceAuth:
    if bearer is None:
        raise Unauthorized("send the device credential as 'Authorization: Bearer <credential>'")
    device = await authenticate_device(uow.session, bearer.credentials, request.app.state.credentials)
    await rate_limit(request, device)
    return device


DeviceDep = Annotated[DeviceAuth, Depends(_device)]

"""Real client protocols, translated into the same `ingest()` call as the native API.

- OwnTracks HTTP mode (`POST /v1/owntracks`): HTTP basic auth whose password is the device credential, or
  the organisation's enrolment key (then the device is found, or enrolled, by OwnTracks' "user/device").
  The answer is `[]`, as the app expects.
- Traccar Client / OsmAnd (`/v1/osmand`): the `id` (device identifier) is the device credential, since
  these clients send no headers; query or form parameters, or the transistorsoft JSON body.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from infra.deps import UowDep
from infra.http import ORJSONResponse, error_body
from mobile_api.api import ingest
from mobile_api.deps import rate_limit
from mobile_api.protocols import ProtocolError, parse_osmand_json, parse_osmand_params, parse_owntracks
from services import devices
from services.devices import DeviceAuth
from services.errors import DomainError, Unauthorized
from services.orgs import authenticate_api_key

router = APIRouter(prefix="/v1", tags=["mobile: client protocols"])


def protocol_error(error: ProtocolError) -> Response:
    body = error_body("bad_request", str(error), [{"field": error.field, "reason": error.reason, "code": "protocol"}])
    return ORJSONResponse(body, status_code=400)


def _basic_password(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


async def _owntracks_device(session: AsyncSession, request: Request, password: str, device_key: str) -> DeviceAuth:
    if not password.startswith("pce_"):
        return await devices.authenticate_device(session, password, request.app.state.credentials)
    organisation = await authenticate_api_key(session, password, purpose="enrolment")
    found = await devices.device_by_external_id(session, organisation.organisation_id, device_key)
    if found is not None:
        return found
    device_id, _ = await devices.register_device(
        session,
        organisation_id=organisation.organisation_id,
        fields={"platform": "android", "role": "visitor", "external_id": device_key},
    )
    return DeviceAuth(device_id, organisation.organisation_id, "visitor")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ProtocolError("body", f"not JSON: {error}") from error


@router.post("/owntracks", summary="OwnTracks HTTP mode")
async def owntracks(request: Request, uow: UowDep) -> Response:
    """Location and transition messages become fixes; other `_type`s are accepted and ignored."""
    password = _basic_password(request.headers.get("authorization"))
    if not password:
        raise Unauthorized("OwnTracks: set HTTP authentication with the device credential as the password")
    try:
        message = parse_owntracks(await _json_body(request), {k.lower(): v for k, v in request.headers.items()})
    except ProtocolError as error:
        return protocol_error(error)
    device = await _owntracks_device(uow.session, request, password, message.device_key)
    await rate_limit(request, device)
    if message.fix is not None:
        await ingest(request, uow, device, [message.fix], source="owntracks")
    return ORJSONResponse([])


@router.api_route("/osmand", methods=["GET", "POST"], summary="Traccar Client / OsmAnd")
async def osmand(request: Request, uow: UowDep) -> Response:
    """Query or form parameters (`id lat lon timestamp speed bearing altitude accuracy batt`) or JSON."""
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            parsed = parse_osmand_json(await _json_body(request))
        else:
            params: dict[str, str] = dict(request.query_params)
            if request.method == "POST":
                form = await request.form()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
            parsed = parse_osmand_params(params)
    except ProtocolError as error:
        return protocol_error(error)
    try:
        device = await devices.authenticate_device(uow.session, parsed.device_id, request.app.state.credentials)
    except DomainError:
        body = error_body("unknown_device", "unknown device: set the device identifier to the device credential")
        return ORJSONResponse(body, status_code=400)
    await rate_limit(request, device)
    await ingest(request, uow, device, [parsed.fix], source="osmand")
    return Response(status_code=200)

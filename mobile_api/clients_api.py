"""Real client protocols, translated into the same `ingest()` call as the native API.

- OwnTracks HTTP mode (`POST /v1/owntracks`): HTTP basic auth whose password is the device credential, or
  the organisation's enrolment key, which enrols OwnTracks' "user/device" when it is not yet known (within the
  enrolment limits) and is refused (401) for one already enrolled: the key ships in every app, so it must never
  post as an existing device. The answer is `[]`, as the app expects; on enrolment it carries the new credential
  (a `setConfiguration` command, and the X-Device-Credential header).
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

from infra.deps import UowDep
from infra.http import ORJSONResponse, error_body
from kernel.errors import Conflict, DomainError, Unauthorized
from kernel.uow import UnitOfWork
from mobile_api.api import ingest
from mobile_api.deps import authenticate_enrolment, rate_limit
from mobile_api.protocols import ProtocolError, parse_osmand_json, parse_osmand_params, parse_owntracks
from services import devices
from services.devices import DeviceAuth

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


async def _owntracks_device(
    uow: UnitOfWork, request: Request, password: str, device_key: str
) -> tuple[DeviceAuth, str | None]:
    """The device, and its new credential when this post enrolled it. The enrolment key (public: it ships in the
    app) only ever creates a device: a "user/device" already enrolled must send its own credential."""
    if not password.startswith("pce_"):
        return await devices.authenticate_device(uow.session, password), None
    organisation = await authenticate_enrolment(request, uow, password)
    try:
        device_id, credential = await devices.register_device(
            uow.session,
            organisation_id=organisation.organisation_id,
            fields={"platform": "android", "role": "visitor", "external_id": device_key},
        )
    except Conflict as error:
        raise Unauthorized(
            f"OwnTracks device {device_key!r} is already enrolled: set its own device credential (returned when it"
            " enrolled) as the password; the enrolment key only enrols new devices"
        ) from error
    return DeviceAuth(device_id, organisation.organisation_id, "visitor"), credential


def _enrolled_answer(credential: str) -> list[dict[str, Any]]:
    """OwnTracks applies a `setConfiguration` command when its remote configuration is enabled, so the app
    switches to its own credential by itself; otherwise the user copies it from the X-Device-Credential header."""
    configuration = {"_type": "configuration", "password": credential}
    return [{"_type": "cmd", "action": "setConfiguration", "configuration": configuration}]


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
    device, credential = await _owntracks_device(uow, request, password, message.device_key)
    await rate_limit(request, device)
    if message.fix is not None:
        await ingest(request, uow, device, [message.fix], source="owntracks")
    if credential is not None:
        return ORJSONResponse(_enrolled_answer(credential), headers={"X-Device-Credential": credential})
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
        device = await devices.authenticate_device(uow.session, parsed.device_id)
    except DomainError:
        body = error_body("unknown_device", "unknown device: set the device identifier to the device credential")
        return ORJSONResponse(body, status_code=400)
    await rate_limit(request, device)
    await ingest(request, uow, device, [parsed.fix], source="osmand")
    return Response(status_code=200)

"""Mobile API `/v1`: devices, fixes, check-ins. Thin: parse, authenticate, call a service."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Literal

from fastapi import APIRouter, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from geofences.transitions import TransitionConfig
from infra.deps import MAX_ID, SettingsDep, UowDep, resources_of
from infra.http import ORJSONResponse
from infra.settings import Settings
from kernel.errors import NotFound, Problem, ValidationFailed
from kernel.uow import UnitOfWork
from mobile_api.deps import DeviceChangeDep, DeviceDep, EnrolmentDep, announce_revocation
from mobile_api.schemas import (
    DeviceIn,
    FixAccepted,
    FixBatchIn,
    FixIn,
    Latitude,
    Longitude,
    Purpose,
    PushTargetUpdate,
    Timestamp,
    WebPushSubscriptionIn,
)
from notifications.egress import url_problem
from notifications.webpush import origin, vapid_public_key
from services import checkins, devices
from services.devices import DeviceAuth
from services.tracking import FixOutcome, FixRecord, record_fixes

router = APIRouter(prefix="/v1", tags=["mobile"])


def transition_config(settings: Settings) -> TransitionConfig:
    return TransitionConfig(**{f.name: getattr(settings, f.name) for f in fields(TransitionConfig)})


def to_record(fix: FixIn) -> FixRecord:
    return FixRecord(fix.ts, fix.lon, fix.lat, fix.accuracy_m, fix.speed_mps)


async def ingest(
    request: Request,
    uow: UnitOfWork,
    device: DeviceAuth,
    fixes: list[FixIn],
    *,
    batch_id: str | None = None,
    source: Literal["native", "owntracks", "osmand"] = "native",
) -> FixOutcome:
    """The one service call every protocol (native, OwnTracks, OsmAnd) ends in."""
    index = await resources_of(request).fence_indexes().get(device.organisation_id)
    settings: Settings = request.app.state.settings
    outcome = await record_fixes(
        uow,
        device=device,
        fixes=[to_record(f) for f in fixes],
        index=index,
        config=transition_config(settings),
        batch_id=batch_id,
        source=source,
        assumed_accuracy_m=settings.assumed_accuracy_m[source],
        late_after_s=settings.late_fix_after_s,
    )
    if outcome.events:
        hook = resources_of(request).events_recorded
        event_ids = [e.id for e in outcome.events]
        uow.after_commit(lambda: hook(device.organisation_id, event_ids))
    return outcome


def _accepted(outcome: FixOutcome) -> Response:
    # Serialised directly (the shape is FixAccepted's, as documented): this is the hot path of every fix.
    body = {
        "accepted": outcome.accepted,
        "duplicate": outcome.duplicate,
        "events": [e.as_dict() for e in outcome.events],
    }
    return ORJSONResponse(body, status_code=status.HTTP_202_ACCEPTED)


class Registered(BaseModel):
    device_id: int
    credential: str = Field(description="Shown once; send as 'Authorization: Bearer <credential>'")


@router.post("/devices", status_code=status.HTTP_201_CREATED, response_model=Registered)
async def register_device(body: DeviceIn, uow: UowDep, organisation: EnrolmentDep) -> Registered:
    """Register a new device with the organisation's enrolment key (shipped inside its app); limited per client
    address and per key (429 + Retry-After)."""
    device_id, credential = await devices.register_device(
        uow.session, organisation_id=organisation.organisation_id, fields=body.device_fields()
    )
    return Registered(device_id=device_id, credential=credential)


@router.get("/devices/me")
async def get_device(device: DeviceDep, uow: UowDep) -> dict[str, Any]:
    exported = await devices.export_device(uow.session, device.device_id, include_history=False)
    device_row: dict[str, Any] = exported["device"]
    return device_row


class Credential(BaseModel):
    credential: str


@router.post("/devices/me/credential", response_model=Credential)
async def rotate_credential(device: DeviceChangeDep, uow: UowDep, request: Request) -> Credential:
    """Issue a new credential; the old one stops working at once, its open streams close."""
    credential = await devices.rotate_credential(uow.session, device.device_id)
    announce_revocation(request, uow, device.device_id)
    return Credential(credential=credential)


@router.put("/devices/me/fcm-token", status_code=status.HTTP_204_NO_CONTENT)
async def update_fcm_token(body: PushTargetUpdate, device: DeviceDep, uow: UowDep) -> Response:
    """Replace the push target: an FCM registration token or a Firebase installation ID (null: none)."""
    await devices.update_device(uow.session, device.device_id, body.push_target())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def webpush_endpoint_problem(endpoint: str, settings: Settings) -> str | None:
    """Why a Web Push endpoint may not be stored: it must be https and reach a public address (the webhook rules,
    notifications/egress.py), except the configured local push service outside production."""
    local = settings.webpush_local_origin
    if local and settings.environment != "production" and origin(endpoint) == origin(local):
        return None
    if not endpoint.startswith("https://"):
        return "a push service endpoint must be https"
    problem = url_problem(endpoint)
    return problem and problem.replace("webhooks go to", "push services are at")


@router.put("/devices/me/web-push", status_code=status.HTTP_204_NO_CONTENT)
async def set_web_push(body: WebPushSubscriptionIn, device: DeviceDep, uow: UowDep, settings: SettingsDep) -> Response:
    """Register the browser's Web Push subscription (`PushSubscription.toJSON()`, subscribed with the key from
    `GET /v1/push/vapid-public-key`); from now on this device's pushes go through Web Push."""
    if problem := webpush_endpoint_problem(body.endpoint, settings):
        raise ValidationFailed("the push endpoint must reach a public push service", [Problem("endpoint", problem)])
    await devices.update_device(uow.session, device.device_id, body.subscription())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/devices/me/web-push", status_code=status.HTTP_204_NO_CONTENT)
async def delete_web_push(device: DeviceDep, uow: UowDep) -> Response:
    """Forget the Web Push subscription (the app unsubscribed); pushes go to the FCM token again, if there is one."""
    values = {"webpush_endpoint": None, "webpush_p256dh": None, "webpush_auth": None, "push_channel": "fcm"}
    await devices.update_device(uow.session, device.device_id, values)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class VapidKey(BaseModel):
    public_key: str = Field(description="The `applicationServerKey` for `pushManager.subscribe` (base64url)")


@router.get("/push/vapid-public-key", response_model=VapidKey, responses={404: {"description": "Web Push is off"}})
async def get_vapid_public_key(settings: SettingsDep) -> VapidKey:
    """The server's VAPID public key, which a browser subscribes with. Needs no credential: it is public."""
    if not settings.webpush_enabled or settings.vapid_private_key is None:
        raise NotFound("Web Push is not enabled on this server")
    return VapidKey(public_key=vapid_public_key(settings.vapid_private_key.get_secret_value()))


class ConsentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    consents: dict[Purpose, bool]


@router.put("/devices/me/consents")
async def set_consents(body: ConsentsIn, device: DeviceDep, uow: UowDep) -> dict[str, bool]:
    """Grant or withdraw consent per purpose (offers, tasks, analytics); enforced when sending."""
    consents = {str(k): v for k, v in body.consents.items()}
    return await devices.set_consents(uow.session, device.device_id, consents)


@router.get("/devices/me/export")
async def export_device(device: DeviceDep, uow: UowDep) -> dict[str, Any]:
    """Everything stored about this device, as JSON."""
    return await devices.export_device(uow.session, device.device_id)


@router.delete("/devices/me", status_code=status.HTTP_204_NO_CONTENT)
async def erase_device(device: DeviceChangeDep, uow: UowDep, request: Request) -> Response:
    """Erase the device and all its data (fixes, events, visits, inbox)."""
    await devices.erase_device(uow.session, device.device_id)
    announce_revocation(request, uow, device.device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/fixes", status_code=status.HTTP_202_ACCEPTED, response_model=FixAccepted)
async def post_fix(body: FixIn, device: DeviceDep, uow: UowDep, request: Request) -> Response:
    """One fix. 202 means it is stored; events it caused are in the answer and on their way."""
    return _accepted(await ingest(request, uow, device, [body]))


@router.post(
    "/fixes/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=FixAccepted,
    responses={409: {"description": "`batch_id` already used for different fixes"}},
)
async def post_fix_batch(body: FixBatchIn, device: DeviceDep, uow: UowDep, request: Request) -> Response:
    """Up to 1,000 fixes, idempotent on `batch_id`: a replay of the same fixes (in any order) stores nothing and
    says `duplicate`; the same `batch_id` with different fixes is a 409 and stores nothing."""
    return _accepted(await ingest(request, uow, device, body.fixes, batch_id=body.batch_id))


class CheckInIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    place_id: int = Field(ge=1, le=MAX_ID)
    lat: Latitude | None = None
    lon: Longitude | None = None
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False)
    ts: Timestamp | None = None
    qr_token: str | None = Field(default=None, max_length=500)


class CheckOutIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    place_id: int = Field(ge=1, le=MAX_ID)
    ts: Timestamp | None = Field(default=None, description="When, on the device's clock (as check-ins and fixes)")


@router.post("/checkins", status_code=status.HTTP_201_CREATED)
async def check_in(body: CheckInIn, device: DeviceDep, uow: UowDep, request: Request) -> dict[str, Any]:
    """Check in at a place: proven by a fix within its fence (allowing for accuracy) or a signed QR token."""
    settings: Settings = request.app.state.settings
    event = await checkins.check_in(
        uow,
        device=device,
        place_id=body.place_id,
        lat=body.lat,
        lon=body.lon,
        accuracy_m=body.accuracy_m,
        at=body.ts,
        qr_token=body.qr_token,
        secret=settings.secret_key.get_secret_value(),
        max_accuracy_m=settings.checkin_max_accuracy_m,
    )
    hook = resources_of(request).events_recorded
    uow.after_commit(lambda: hook(device.organisation_id, [event.id]))
    return event.as_dict()


@router.post("/checkouts", status_code=status.HTTP_201_CREATED)
async def check_out(body: CheckOutIn, device: DeviceDep, uow: UowDep, request: Request) -> dict[str, Any]:
    event = await checkins.check_out(uow, device=device, place_id=body.place_id, at=body.ts)
    hook = resources_of(request).events_recorded
    uow.after_commit(lambda: hook(device.organisation_id, [event.id]))
    return event.as_dict()

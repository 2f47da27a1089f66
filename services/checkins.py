"""Explicit check-in and check-out, proven by proximity or by a signed QR token for the place."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

from geofences import repository as geofences
from kernel.errors import Forbidden, NotFound, Problem, ValidationFailed
from kernel.uow import UnitOfWork
from services import orgs
from services import tracking_repository as repository
from services.devices import DeviceAuth
from services.tracking import RecordedEvent, lock_state, open_visit


def _sign(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign_qr_token(key: bytes, organisation_id: int, place_id: int, ttl_s: int) -> str:
    """`<place>.<expiry>.<signature>` under the organisation's own QR key: useless for another place or
    organisation, and for every place once the organisation rotates its key."""
    expires = int(time.time()) + ttl_s
    return f"{place_id}.{expires}.{_sign(key, f'{organisation_id}:{place_id}:{expires}')}"


def check_qr_token(key: bytes | None, organisation_id: int, place_id: int, token: str) -> None:
    """Refuses (403) a token not signed with `key` for this place, whatever its shape; None: no key, none valid."""
    try:
        token_place, expires_text, signature = token.split(".")
        expires = int(expires_text)
        # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, i.e. a 500).
        valid = (
            key is not None
            and int(token_place) == place_id
            and hmac.compare_digest(signature.encode(), _sign(key, f"{organisation_id}:{place_id}:{expires}").encode())
        )
    except ValueError:
        valid = False
    if not valid:
        raise Forbidden("the QR token is not valid for this place (a code printed before a key rotation is not)")
    if expires < time.time():
        raise Forbidden("the QR token has expired; print a new one from the admin UI")


async def issue_qr_token(uow: UnitOfWork, *, secret: str, organisation_id: int, place_id: int, ttl_s: int) -> str:
    """A token for the place's printed code, signed with the organisation's QR key (made on first need).
    `secret` is the service's PLACECAST_SECRET_KEY, which opens the sealed key."""
    key = await orgs.qr_key(
        uow.session, sealer=orgs.qr_key_sealer(secret), organisation_id=organisation_id, create=True
    )
    assert key is not None
    return sign_qr_token(key, organisation_id, place_id, ttl_s)


async def verify_qr_token(uow: UnitOfWork, *, secret: str, organisation_id: int, place_id: int, token: str) -> None:
    key = await orgs.qr_key(
        uow.session, sealer=orgs.qr_key_sealer(secret), organisation_id=organisation_id, create=False
    )
    check_qr_token(key, organisation_id, place_id, token)


async def _record(
    uow: UnitOfWork,
    device: DeviceAuth,
    place_id: int,
    place_name: str,
    kind: str,
    at: datetime,
    visit_id: int | None,
) -> RecordedEvent:
    row = await repository.insert_building_event(
        uow.session,
        organisation_id=device.organisation_id,
        device_id=device.device_id,
        place_id=place_id,
        kind=kind,
        at=at,
        visit_id=visit_id,
    )
    await repository.write_outbox(uow.session, [row])
    return RecordedEvent(row, kind, place_id, None, "building", at, visit_id, place_name)


async def _place_name(uow: UnitOfWork, organisation_id: int, place_id: int) -> str:
    name = await geofences.place_name(uow.session, organisation_id, place_id)
    if name is None:
        raise NotFound(f"place {place_id} not found")
    return name


async def check_in(
    uow: UnitOfWork,
    *,
    device: DeviceAuth,
    place_id: int,
    lat: float | None,
    lon: float | None,
    accuracy_m: float | None,
    at: datetime | None,
    qr_token: str | None,
    secret: str,
    max_accuracy_m: float,
) -> RecordedEvent:
    place_name = await _place_name(uow, device.organisation_id, place_id)
    if qr_token is not None:
        await verify_qr_token(
            uow, secret=secret, organisation_id=device.organisation_id, place_id=place_id, token=qr_token
        )
    elif lat is None or lon is None:
        raise ValidationFailed("proof needed", [Problem("lat", "send a fix (lat, lon, accuracy_m) or a qr_token")])
    else:
        allowance = min(accuracy_m if accuracy_m is not None else max_accuracy_m, max_accuracy_m)
        if not await geofences.place_fence_within(uow.session, place_id, lon, lat, allowance):
            raise Forbidden(f"the fix is not within {allowance:.0f} m of place {place_id}; check in at the building")
    await lock_state(uow.session, device.device_id)  # serialise with this device's fix processing
    when = at or datetime.now(UTC)
    visit_id = await open_visit(uow.session, device, place_id, when, checked_in=True)
    return await _record(uow, device, place_id, place_name, "checkin", when, visit_id)


async def check_out(uow: UnitOfWork, *, device: DeviceAuth, place_id: int, at: datetime | None = None) -> RecordedEvent:
    """Ends the open visit at `at`, on the device's clock as check-ins and fixes are (the server's now when the
    app sends no time). A visit never ends before it began: a device clock running ahead of the server's started
    it, and a check-out without a time would otherwise give it a negative duration."""
    place_name = await _place_name(uow, device.organisation_id, place_id)
    await lock_state(uow.session, device.device_id)
    visit_id = await repository.current_visit(uow.session, device.device_id, place_id)
    if visit_id is None:
        raise NotFound(f"no open visit at place {place_id} to check out of")
    ended = await repository.end_visit(uow.session, visit_id, at or datetime.now(UTC))
    return await _record(uow, device, place_id, place_name, "checkout", ended, visit_id)

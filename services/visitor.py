"""The visitor web app's use cases: enrolment by the printed QR code, and the place's page.

Enrolling by QR code: the token printed at a place's door (signed with its organisation's QR key, see
`services/checkins.py`) proves that the person stood at a place of that organisation, which is what the
organisation's enrolment key proves for its own app. Like that key, it only ever creates a *new* anonymous visitor
device of that organisation: it names no device, so it can never open an existing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from geofences import repository as geofences
from kernel.errors import Forbidden, NotFound
from kernel.uow import UnitOfWork
from notifications import content_repository
from notifications.models import ContentItem
from notifications.rules import ContentRule, on_show, open_now
from services import devices
from services.checkins import verify_qr_token
from services.devices import DeviceAuth

INVALID_TOKEN = "the QR code is not valid (a code printed before a key rotation is not): scan the code at the door"


@dataclass(frozen=True, slots=True)
class Enrolled:
    device_id: int
    credential: str
    organisation_id: int
    place_id: int


def token_place(token: str) -> int:
    """The place a QR token names (`<place>.<expiry>.<signature>`); unsigned until verified."""
    try:
        place_text = token.split(".", 1)[0]
        place_id = int(place_text)
    except ValueError:
        raise Forbidden(INVALID_TOKEN) from None
    if not 1 <= place_id < 2**63:
        raise Forbidden(INVALID_TOKEN)
    return place_id


async def enrol_by_qr(uow: UnitOfWork, *, secret: str, token: str, fields: dict[str, Any]) -> Enrolled:
    """A new anonymous visitor device of the organisation whose place the token was signed for.

    An unknown place answers as a forged token does (403), so the codes tell nothing about which places exist.
    """
    place_id = token_place(token)
    organisation_id = await geofences.place_organisation(uow.session, place_id)
    if organisation_id is None:
        raise Forbidden(INVALID_TOKEN)
    await verify_qr_token(uow, secret=secret, organisation_id=organisation_id, place_id=place_id, token=token)
    visitor = {**fields, "platform": "web", "role": "visitor", "external_id": None, "team": None, "tags": []}
    device_id, credential = await devices.register_device(uow.session, organisation_id=organisation_id, fields=visitor)
    return Enrolled(device_id, credential, organisation_id, place_id)


def _content(item: ContentItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "title": item.title,
        "body": item.body,
        "deep_link": item.deep_link,
        "image_url": item.image_url,
        "trigger": item.trigger,
    }


async def place_page(uow: UnitOfWork, *, device: DeviceAuth, place_id: int, now: datetime) -> dict[str, Any]:
    """A place of the device's own organisation as its visitors see it: name, kind, address, opening hours and
    whether it is open now, and the content on show now (see `notifications.rules.on_show`)."""
    place = await geofences.public_place(uow.session, device.organisation_id, place_id)
    if place is None:
        raise NotFound(f"place {place_id} not found")
    items = await content_repository.content_on_show(uow.session, device.organisation_id, place.id, place.kind)
    showing = []
    for item in items:
        try:
            rule = ContentRule.from_model_values(**{c.key: getattr(item, c.key) for c in ContentItem.__table__.columns})
        except ValueError:  # a malformed stored schedule: not shown, as it is not pushed
            continue
        if on_show(rule, now, place.timezone, place.opening_hours):
            showing.append(_content(item))
    state: Literal["open", "closed", "unknown"] = open_now(place.opening_hours, now, place.timezone)
    return {
        "id": place.id,
        "name": place.name,
        "kind": place.kind,
        "address": place.address,
        "timezone": place.timezone,
        "opening_hours": place.opening_hours,
        "open_now": state,
        "content": showing,
    }

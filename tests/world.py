"""A fresh organisation with a place (the Oodi block), its keys, and helpers to register devices and make fixes."""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

# A 200 m x 110 m block around Oodi, Helsinki.
BLOCK = {
    "type": "Polygon",
    "coordinates": [
        [[24.9370, 60.1735], [24.9406, 60.1735], [24.9406, 60.1745], [24.9370, 60.1745], [24.9370, 60.1735]]
    ],
}
INSIDE = (24.9388, 60.1740)
FAR_OUTSIDE = (24.9300, 60.1700)


@dataclass
class World:
    organisation_id: int
    admin: dict[str, str]
    enrolment: dict[str, str]
    place_id: int


@pytest.fixture
async def world(client, app) -> World:
    from kernel.uow import unit_of_work
    from services.orgs import create_api_key, create_organisation

    slug = "m-" + secrets.token_hex(4)
    async with unit_of_work(app.state.resources.session_factory) as uow:
        organisation_id = await create_organisation(uow.session, name=slug, slug=slug)
        admin = await create_api_key(uow.session, organisation_id=organisation_id, name="admin")
        enrol = await create_api_key(uow.session, organisation_id=organisation_id, name="app", purpose="enrolment")
    body = {"name": "Oodi", "kind": "library", "fences": [{"geometry": BLOCK}]}
    place = await client.post("/admin/v1/places", json=body, headers={"X-API-Key": admin})
    assert place.status_code == 201
    return World(organisation_id, {"X-API-Key": admin}, {"X-Enrolment-Key": enrol}, place.json()["id"])


async def register(client, world: World, **fields) -> dict[str, str]:
    body = {"platform": "android", "fcm_token": "tok-" + secrets.token_hex(8), **fields}
    answer = await client.post("/v1/devices", json=body, headers=world.enrolment)
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['credential']}"}


# Far enough back that a long suite never pushes device time past the server clock (future fixes are refused),
# within the 7 days a fix is accepted at all.
_clock = [datetime.now(UTC) - timedelta(days=5)]


def fix(lon_lat: tuple[float, float], accuracy: float = 10.0, seconds: float = 30.0, **extra: Any) -> dict[str, Any]:
    """A fix `seconds` after the previous one made by this helper (device time moves forward)."""
    _clock[0] += timedelta(seconds=seconds)
    return {
        "lon": lon_lat[0],
        "lat": lon_lat[1],
        "accuracy_m": accuracy,
        "ts": _clock[0].isoformat(),
        **extra,
    }

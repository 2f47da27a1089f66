"""OwnTracks HTTP mode and Traccar Client / OsmAnd, with payloads shaped exactly as those apps send them."""

from __future__ import annotations

import base64
import time

import pytest
from sqlalchemy import text

from tests.api.conftest import INSIDE, World, register


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def owntracks_location(lon: float, lat: float, tst: int) -> dict[str, object]:
    # As the Android app sends it (booklet docs/tech/json.md example, trimmed).
    return {
        "_type": "location",
        "acc": 12,
        "alt": 21,
        "batt": 87,
        "bs": 1,
        "conn": "w",
        "created_at": tst,
        "lat": lat,
        "lon": lon,
        "t": "u",
        "tid": "ja",
        "tst": tst,
        "vac": 3,
        "vel": 5,
    }


async def events_of(app, device_id: int) -> list[str]:
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(text("SELECT kind FROM events WHERE device_id = :d ORDER BY id"), {"d": device_id})
        return list(rows.scalars())


async def device_id_of(client, headers) -> int:
    return int((await client.get("/v1/devices/me", headers=headers)).json()["id"])


async def test_owntracks_location_with_device_credential(client, world: World, app) -> None:
    device = await register(client, world)
    credential = device["Authorization"].removeprefix("Bearer ")
    headers = {**basic("jane", credential), "X-Limit-U": "jane", "X-Limit-D": "phone"}
    now = int(time.time()) - 60
    answer = await client.post("/v1/owntracks", json=owntracks_location(*INSIDE, now), headers=headers)
    assert answer.status_code == 200 and answer.json() == []
    assert await events_of(app, await device_id_of(client, device)) == ["enter"]


async def test_owntracks_enrols_by_user_and_device_with_the_enrolment_key(client, world: World, app) -> None:
    key = world.enrolment["X-Enrolment-Key"]
    headers = {**basic("ville", key), "X-Limit-U": "ville", "X-Limit-D": "pixel"}
    now = int(time.time()) - 120
    answer = await client.post("/v1/owntracks", json=owntracks_location(*INSIDE, now), headers=headers)
    assert answer.status_code == 200
    # The new credential, as a remote-configuration command the app applies, and as a header.
    [command] = answer.json()
    assert command["_type"] == "cmd" and command["action"] == "setConfiguration"
    credential = command["configuration"]["password"]
    assert credential == answer.headers["X-Device-Credential"] and credential.startswith("pcd_")
    # The enrolment key never posts as a device that exists: the app must use its own credential from now on.
    again = await client.post("/v1/owntracks", json=owntracks_location(*INSIDE, now + 30), headers=headers)
    assert again.status_code == 401 and "own device credential" in again.json()["message"]
    headers = {**basic("ville", credential), "X-Limit-U": "ville", "X-Limit-D": "pixel"}
    answer = await client.post("/v1/owntracks", json=owntracks_location(*INSIDE, now + 30), headers=headers)
    assert answer.status_code == 200 and answer.json() == []
    async with app.state.resources.session_factory() as session:
        ids = (
            (
                await session.execute(
                    text("SELECT id FROM devices WHERE external_id = 'ville/pixel' AND organisation_id = :o"),
                    {"o": world.organisation_id},
                )
            )
            .scalars()
            .all()
        )
    assert len(ids) == 1  # enrolled once
    assert await events_of(app, ids[0]) == ["enter"]


async def test_owntracks_transition_is_a_fix_and_other_types_are_ignored(client, world: World, app) -> None:
    device = await register(client, world)
    headers = basic("jane", device["Authorization"].removeprefix("Bearer "))
    headers["X-Limit-D"] = "phone"
    tst = int(time.time()) - 30
    transition = {
        "_type": "transition",
        "acc": 10,
        "desc": "Oodi",
        "event": "enter",
        "lat": INSIDE[1],
        "lon": INSIDE[0],
        "tid": "ja",
        "tst": tst,
        "wtst": tst - 1000,
        "t": "c",
    }
    assert (await client.post("/v1/owntracks", json=transition, headers=headers)).json() == []
    for other in (
        {"_type": "lwt", "tst": tst},
        {"_type": "waypoint", "desc": "x", "lat": 1, "lon": 1, "rad": 5, "tst": tst},
        {"_type": "card", "name": "Jane"},
    ):
        answer = await client.post("/v1/owntracks", json=other, headers=headers)
        assert answer.status_code == 200 and answer.json() == []
    assert await events_of(app, await device_id_of(client, device)) == ["enter"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"_type": "encrypted", "data": "abc"}, 400),
        ({"_type": "location", "lat": "60.1", "lon": 24.9, "tst": 1700000000}, 400),
        ({"_type": "location", "lat": 91, "lon": 24.9, "tst": 1700000000}, 400),
        ({"_type": "location", "lat": 60.1, "lon": 24.9}, 400),
        ({"_type": "location", "lat": 60.1, "lon": 24.9, "tst": 4102444800}, 400),  # year 2100
        ([1, 2], 400),
    ],
)
async def test_malformed_owntracks_is_a_clear_400(client, world: World, body, status) -> None:
    device = await register(client, world)
    headers = {**basic("jane", device["Authorization"].removeprefix("Bearer ")), "X-Limit-D": "phone"}
    answer = await client.post("/v1/owntracks", json=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"][0]["field"]


async def test_owntracks_encrypted_says_what_to_do(client, world: World) -> None:
    device = await register(client, world)
    headers = {**basic("jane", device["Authorization"].removeprefix("Bearer ")), "X-Limit-D": "phone"}
    answer = await client.post("/v1/owntracks", json={"_type": "encrypted", "data": "abc"}, headers=headers)
    assert "encrypt" in answer.json()["message"].lower()


async def test_owntracks_needs_auth(client, world: World) -> None:
    body = owntracks_location(*INSIDE, int(time.time()))
    assert (await client.post("/v1/owntracks", json=body)).status_code == 401
    wrong = {**basic("jane", "pcd_wrong"), "X-Limit-D": "phone"}
    assert (await client.post("/v1/owntracks", json=body, headers=wrong)).status_code == 401


async def test_traccar_client_query_parameters(client, world: World, app) -> None:
    device = await register(client, world)
    credential = device["Authorization"].removeprefix("Bearer ")
    ts = int(time.time()) - 60
    # Traccar Client (Android) ProtocolFormatter: POST with everything in the query string; speed in knots.
    params = {
        "id": credential,
        "timestamp": str(ts),
        "lat": str(INSIDE[1]),
        "lon": str(INSIDE[0]),
        "speed": "1.943844",
        "bearing": "90.0",
        "altitude": "20.0",
        "accuracy": "8.0",
        "batt": "77.0",
    }
    answer = await client.post("/v1/osmand", params=params)
    assert answer.status_code == 200
    async with app.state.resources.session_factory() as session:
        row = (
            await session.execute(
                text("SELECT speed_mps, source FROM fixes WHERE device_id = :d"),
                {"d": await device_id_of(client, device)},
            )
        ).one()
    assert row.speed_mps == pytest.approx(1.0, abs=1e-6) and row.source == "osmand"
    assert await events_of(app, await device_id_of(client, device)) == ["enter"]


async def test_osmand_get_with_millisecond_timestamp_and_form_post(client, world: World, app) -> None:
    device = await register(client, world)
    credential = device["Authorization"].removeprefix("Bearer ")
    ms = (int(time.time()) - 120) * 1000
    got = await client.get(
        "/v1/osmand", params={"id": credential, "lat": "60.17", "lon": "24.93", "timestamp": str(ms)}
    )
    assert got.status_code == 200
    form = {
        "id": credential,
        "lat": str(INSIDE[1]),
        "lon": str(INSIDE[0]),
        "timestamp": str(ms // 1000 + 60),
        "accuracy": "5",
    }
    posted = await client.post("/v1/osmand", data=form)
    assert posted.status_code == 200
    assert await events_of(app, await device_id_of(client, device)) == ["enter"]


async def test_traccar_json_body(client, world: World, app) -> None:
    device = await register(client, world)
    credential = device["Authorization"].removeprefix("Bearer ")
    iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 30))
    body = {
        "location": {
            "timestamp": iso,
            "coords": {
                "latitude": INSIDE[1],
                "longitude": INSIDE[0],
                "accuracy": 6,
                "speed": 1.2,
                "heading": 10,
                "altitude": 15,
            },
            "is_moving": True,
            "odometer": 0,
            "event": "motionchange",
            "battery": {"level": 0.5, "is_charging": False},
            "activity": {"type": "walking"},
        },
        "device_id": credential,
    }
    answer = await client.post("/v1/osmand", json=body)
    assert answer.status_code == 200, answer.text
    assert await events_of(app, await device_id_of(client, device)) == ["enter"]


@pytest.mark.parametrize(
    "params",
    [
        {"id": "pcd_unknown", "lat": "60.1", "lon": "24.9", "timestamp": str(int(time.time()) - 60)},
    ],
)
async def test_osmand_unknown_device_is_400(client, params) -> None:
    answer = await client.post("/v1/osmand", params=params)
    assert answer.status_code == 400 and answer.json()["error"] == "unknown_device"


@pytest.mark.parametrize(
    "params",
    [
        {"lat": "60.1", "lon": "24.9", "timestamp": "1700000000"},
        {"id": "x", "lat": "NaN", "lon": "24.9", "timestamp": "1700000000"},
        {"id": "x", "lat": "95", "lon": "24.9", "timestamp": "1700000000"},
        {"id": "x", "lat": "60.1", "lon": "24.9", "timestamp": "4102444800"},
        {"id": "x", "lat": "60.1", "lon": "24.9", "timestamp": "1700000000", "accuracy": "-3"},
        {"id": "x", "lat": "sixty", "lon": "24.9", "timestamp": "1700000000"},
    ],
)
async def test_malformed_osmand_is_400_naming_the_field(client, params) -> None:
    answer = await client.post("/v1/osmand", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"][0]["field"]

"""A place's GPS tuning (`gps_tuning`) through the admin API: checked at the edge, stored, exported, and used by the
transition rules of every fix once the index has followed the change (the fence version moves with it).

The world's Oodi block is untuned; a second place, EAST (~110 m square), is created with a tuning that asks for an
enter 400 m deep, which no fix in it can be: a fresh device's fixes in its middle (~55 m from its walls, 5 m
accurate), which enter an untuned building at the first fix, enter nothing until the tuning is taken away.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text

from geofences.transitions import ZONE_TUNABLES
from tests.api.conftest import INSIDE, World, fix, register

EAST = {
    "type": "Polygon",
    "coordinates": [
        [[24.9420, 60.1735], [24.9440, 60.1735], [24.9440, 60.1745], [24.9420, 60.1745], [24.9420, 60.1735]]
    ],
}
IN_EAST = (24.9430, 60.1740)  # ~55 m from every wall of EAST
# Within the ranges (sigmas <= 20, metres <= 500): neither one deep fix nor the mean position can be 400 m deep here.
UNREACHABLE = {"min_enter_depth_m": 400, "enter_depth_sigmas": 20, "enter_sigmas": 20, "min_depth_m": 400}


def place_body(**extra: Any) -> dict[str, Any]:
    return {"name": "East hall", "kind": "hall", "fences": [{"geometry": EAST}], **extra}


async def send(client, device: dict[str, str], point: tuple[float, float], n: int) -> list[list[dict[str, Any]]]:
    """`n` fixes at `point`, 5 m accurate and 10 s apart; the events of each."""
    out = []
    for _ in range(n):
        answer = await client.post("/v1/fixes", json=fix(point, accuracy=5, seconds=10), headers=device)
        assert answer.status_code == 202, answer.text
        out.append(answer.json()["events"])
    return out


async def fence_version(app, organisation_id: int) -> int:
    async with app.state.resources.session_factory() as session:
        query = text("SELECT fence_version FROM organisations WHERE id = :o")
        return int((await session.execute(query, {"o": organisation_id})).scalar_one())


async def indexed(app, organisation_id: int, fence_id: int, expected: dict[str, float]) -> float:
    """Wait until the API's index gives `fence_id` the tuning `expected` ({}: none); the seconds it took."""
    started = time.monotonic()
    while True:
        index = await app.state.resources.indexes.get(organisation_id)
        if dict(index.tuning.get(fence_id, {})) == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < 10, f"the index did not follow: {dict(index.tuning)}"
        await asyncio.sleep(0.02)


async def test_a_tuned_place_enters_nothing_until_its_tuning_is_taken_away(app, client, world: World) -> None:
    created = await client.post("/admin/v1/places", json=place_body(gps_tuning=UNREACHABLE), headers=world.admin)
    assert created.status_code == 201, created.text
    place = created.json()
    assert place["gps_tuning"] == UNREACHABLE
    [fence_id] = [f["id"] for f in place["fences"]]
    await indexed(app, world.organisation_id, fence_id, {k: float(v) for k, v in UNREACHABLE.items()})

    # An untuned building: a fresh device's first fix deep inside enters at once.
    untuned = await send(client, await register(client, world), INSIDE, 1)
    assert [(e["kind"], e["place_id"]) for e in untuned[0]] == [("enter", world.place_id)]

    device = await register(client, world)
    tuned = await send(client, device, IN_EAST, 6)
    assert tuned == [[]] * 6  # deep inside, accurate, a minute of fixes: the tuning forbids entering

    version = await fence_version(app, world.organisation_id)
    reset = await client.patch(f"/admin/v1/places/{place['id']}", json={"gps_tuning": {}}, headers=world.admin)
    assert reset.status_code == 200 and reset.json()["gps_tuning"] == {}
    assert await fence_version(app, world.organisation_id) == version + 1  # a tuning change is a fence change
    assert await indexed(app, world.organisation_id, fence_id, {}) < 3.0

    # The device has sat there a minute: its mean position (not one fix) moves it in, within two minutes.
    after = [e for events in await send(client, device, IN_EAST, 12) for e in events]
    assert [(e["kind"], e["place_id"], e["zone"]) for e in after] == [("enter", place["id"], "building")]


async def test_only_a_change_of_the_tuning_moves_the_fence_version(app, client, world: World) -> None:
    url = f"/admin/v1/places/{world.place_id}"
    version = await fence_version(app, world.organisation_id)
    bodies: list[dict[str, Any]] = [{"name": "Oodi (renamed)"}, {"gps_tuning": {}}, {"properties": {"floors": 3}}]
    for body in bodies:
        assert (await client.patch(url, json=body, headers=world.admin)).status_code == 200
    assert await fence_version(app, world.organisation_id) == version
    tuned = {"min_exit_margin_m": 25, "exit_sigmas": 5.5}
    answer = await client.patch(url, json={"gps_tuning": tuned}, headers=world.admin)
    assert answer.status_code == 200 and answer.json()["gps_tuning"] == tuned
    assert await fence_version(app, world.organisation_id) == version + 1
    again = await client.patch(
        url, json={"gps_tuning": {"exit_sigmas": 5.5, "min_exit_margin_m": 25.0}}, headers=world.admin
    )
    assert again.status_code == 200
    assert await fence_version(app, world.organisation_id) == version + 1  # the same tuning: nothing to rebuild


async def test_the_tuning_is_read_back_as_stored(client, org) -> None:
    _, headers = org
    tuning = {"max_accuracy_m": 40, "min_exit_s": 90, "dwell_after_s": 600, "min_mean_age_s": 60}
    created = await client.post("/admin/v1/places", json=place_body(gps_tuning=tuning), headers=headers)
    assert created.status_code == 201, created.text
    plain = await client.post("/admin/v1/places", json=place_body(name="Plain"), headers=headers)
    assert plain.status_code == 201 and plain.json()["gps_tuning"] == {}
    got = await client.get(f"/admin/v1/places/{created.json()['id']}", headers=headers)
    assert got.json()["gps_tuning"] == tuning
    listed = {
        p["name"]: p["gps_tuning"] for p in (await client.get("/admin/v1/places", headers=headers)).json()["items"]
    }
    assert listed == {"East hall": tuning, "Plain": {}}
    renamed = await client.patch(f"/admin/v1/places/{created.json()['id']}", json={"name": "Hall"}, headers=headers)
    assert renamed.json()["gps_tuning"] == tuning  # a PATCH without it leaves it alone


def problems(answer: Any) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 422, answer.text
    return {p["field"]: p for p in answer.json()["detail"]}


@pytest.mark.parametrize(
    ("tuning", "field", "code"),
    [
        ({"wall_thickness_m": 3}, "gps_tuning.wall_thickness_m", "unknown_key"),
        ({"max_speed_mps": 30}, "gps_tuning.max_speed_mps", "unknown_key"),  # a device-wide limit, not a place's
        ({"exit_sigmas": True}, "gps_tuning.exit_sigmas", "wrong_type"),
        ({"exit_sigmas": "4"}, "gps_tuning.exit_sigmas", "wrong_type"),
        ({"exit_sigmas": None}, "gps_tuning.exit_sigmas", "wrong_type"),
        ({"exit_sigmas": [4]}, "gps_tuning.exit_sigmas", "wrong_type"),
        ({"exit_sigmas": -1}, "gps_tuning.exit_sigmas", "out_of_range"),
        ({"enter_sigmas": 50}, "gps_tuning.enter_sigmas", "out_of_range"),
        ({"max_accuracy_m": 1}, "gps_tuning.max_accuracy_m", "out_of_range"),
        ({"max_accuracy_m": 5001}, "gps_tuning.max_accuracy_m", "out_of_range"),
        ({"min_sigma_m": 0}, "gps_tuning.min_sigma_m", "out_of_range"),
        ({"min_exit_margin_m": 501}, "gps_tuning.min_exit_margin_m", "out_of_range"),
        ({"dwell_after_s": 86401}, "gps_tuning.dwell_after_s", "out_of_range"),
    ],
)
async def test_a_bad_tuning_is_a_422_naming_the_key(client, world: World, tuning, field, code) -> None:
    created = problems(await client.post("/admin/v1/places", json=place_body(gps_tuning=tuning), headers=world.admin))
    assert list(created) == [field] and created[field]["code"] == code
    url = f"/admin/v1/places/{world.place_id}"
    patched = problems(await client.patch(url, json={"gps_tuning": tuning}, headers=world.admin))
    assert list(patched) == [field] and patched[field]["code"] == code
    assert (await client.get(url, headers=world.admin)).json()["gps_tuning"] == {}  # nothing stored


async def test_the_reasons_say_what_is_allowed(client, org) -> None:
    _, headers = org
    body = place_body(gps_tuning={"wall_thickness_m": 3, "max_accuracy_m": 1, "exit_sigmas": False})
    found = problems(await client.post("/admin/v1/places", json=body, headers=headers))
    unknown = found["gps_tuning.wall_thickness_m"]["reason"]
    assert all(name in unknown for name in ZONE_TUNABLES), unknown
    assert "[5, 5000] m" in found["gps_tuning.max_accuracy_m"]["reason"]
    assert "number, got boolean" in found["gps_tuning.exit_sigmas"]["reason"]


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity"])
async def test_nan_and_infinity_are_refused(client, org, value) -> None:
    _, headers = org
    raw = (
        b'{"name":"x","kind":"hall","fences":[{"geometry":{"type":"Point","coordinates":[24.9,60.1]},"radius_m":50}],'
        b'"gps_tuning":{"min_exit_s":' + value + b"}}"
    )
    answer = await client.post("/admin/v1/places", content=raw, headers={**headers, "content-type": "application/json"})
    found = problems(answer)
    assert list(found) == ["gps_tuning.min_exit_s"] and found["gps_tuning.min_exit_s"]["code"] == "not_finite"


@pytest.mark.parametrize("body", [{"gps_tuning": None}, {"gps_tuning": [1]}, {"gps_tuning": "{}"}])
async def test_the_tuning_is_an_object(client, world: World, body) -> None:
    found = problems(await client.patch(f"/admin/v1/places/{world.place_id}", json=body, headers=world.admin))
    assert list(found) == ["gps_tuning"]


async def test_tuning_and_fence_problems_come_together(client, org) -> None:
    _, headers = org
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[24.93, 60.17], [24.94, 60.18], [24.94, 60.17], [24.93, 60.18], [24.93, 60.17]]],
    }
    body = {"name": "x", "kind": "hall", "fences": [{"geometry": bowtie}], "gps_tuning": {"nope": 1}}
    found = problems(await client.post("/admin/v1/places", json=body, headers=headers))
    assert "gps_tuning.nope" in found and any(f.startswith("fences[0]") for f in found)


async def test_geojson_carries_the_tuning_and_an_import_without_it_keeps_it(app, client, org) -> None:
    organisation_id, headers = org
    tuning = {"min_exit_margin_m": 30.0, "exit_sigmas": 6.0}
    created = await client.post(
        "/admin/v1/places", json=place_body(gps_tuning=tuning, external_ref="hall-1"), headers=headers
    )
    assert created.status_code == 201, created.text
    place_url = f"/admin/v1/places/{created.json()['id']}"

    exported = (await client.get("/admin/v1/export/geojson", headers=headers)).json()
    [feature] = exported["features"]
    assert feature["properties"]["gps_tuning"] == tuning
    assert (await client.post("/admin/v1/import/geojson", json=exported, headers=headers)).json()["updated"] == 1

    version = await fence_version(app, organisation_id)
    untold = {**feature, "properties": {k: v for k, v in feature["properties"].items() if k != "gps_tuning"}}
    collection = {"type": "FeatureCollection", "features": [untold]}
    assert (await client.post("/admin/v1/import/geojson", json=collection, headers=headers)).json()["updated"] == 1
    assert (await client.get(place_url, headers=headers)).json()["gps_tuning"] == tuning  # a source that does not say
    assert await fence_version(app, organisation_id) == version

    cleared = {**feature, "properties": {**feature["properties"], "gps_tuning": {}}}
    collection = {"type": "FeatureCollection", "features": [cleared]}
    assert (await client.post("/admin/v1/import/geojson", json=collection, headers=headers)).json()["updated"] == 1
    assert (await client.get(place_url, headers=headers)).json()["gps_tuning"] == {}
    assert await fence_version(app, organisation_id) == version + 1
    again = (await client.get("/admin/v1/export/geojson", headers=headers)).json()
    assert "gps_tuning" not in again["features"][0]["properties"]

    bad = {**feature, "properties": {**feature["properties"], "gps_tuning": {"exit_sigmas": "6", "x": 1}}}
    summary = (
        await client.post(
            "/admin/v1/import/geojson", json={"type": "FeatureCollection", "features": [bad]}, headers=headers
        )
    ).json()
    [refused] = summary["refused"]
    assert {p["field"] for p in refused["problems"]} == {
        "features[0].properties.gps_tuning.exit_sigmas",
        "features[0].properties.gps_tuning.x",
    }

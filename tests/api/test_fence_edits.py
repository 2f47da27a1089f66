"""Editing a place's fences under devices that are inside them: stable fence ids, and only true transitions.

The map UI sends every fence of a place on every save (a rename too) and imports rewrite every place they know,
so a fence that did not change must keep its id (a new id is a fresh enter for everyone inside it), a changed one
is updated in place (devices inside stay or exit by the normal rules), and a removed one still gets its exit.
Fixes here are accurate (5 m), 10 s apart and well inside (>= 20 m from walls) or well outside (>= 60 m), so the
exact GPS hysteresis does not matter: each step sends several of them and counts the events.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from infra.settings import get_settings
from tests.api.conftest import INSIDE, World, fix, register
from tests.integration.worker_helpers import run_worker

EXTRACT = Path(__file__).resolve().parents[1] / "data" / "osm" / "helsinki-centre.osm.pbf"
FIXES = 6  # confirms an enter or an exit under any of the hysteresis rules (up to ~3 fixes); 50 s in all
# A square of ~110 m x 110 m east of the block (BLOCK ends at 24.9406), and a point in its middle: > 55 m from
# its walls and ~170 m east of the block.
EAST = {
    "type": "Polygon",
    "coordinates": [
        [[24.9420, 60.1735], [24.9440, 60.1735], [24.9440, 60.1745], [24.9420, 60.1745], [24.9420, 60.1735]]
    ],
}
IN_EAST = (24.9430, 60.1740)
# Inside "Helsingin yliopisto" of the OSM extract, ~89 m from its nearest wall.
IN_UNIVERSITY = (24.94918, 60.17069)


def with_east_wall(lon: float) -> dict[str, Any]:
    """BLOCK with its east wall (24.9406) moved to `lon`: two vertices dragged in the map UI."""
    west, south, north = 24.9370, 60.1735, 60.1745
    return {
        "type": "Polygon",
        "coordinates": [[[west, south], [lon, south], [lon, north], [west, north], [west, south]]],
    }


async def send(client, device: dict[str, str], point: tuple[float, float], n: int = FIXES) -> list[dict[str, Any]]:
    """`n` accurate fixes at `point`, 10 s apart; the events they caused."""
    events: list[dict[str, Any]] = []
    for _ in range(n):
        answer = await client.post("/v1/fixes", json=fix(point, accuracy=5, seconds=10), headers=device)
        assert answer.status_code == 202, answer.text
        events += answer.json()["events"]
    return events


async def fences_of(client, world: World, place_id: int) -> list[dict[str, Any]]:
    answer = await client.get(f"/admin/v1/places/{place_id}", headers=world.admin)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["fences"])


def as_sent(fences: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fences as the map UI sends them back: what it read, without the ids."""
    return [{"geometry": f["geometry"], "radius_m": f["radius_m"]} for f in fences]


async def patch(client, world: World, place_id: int, **body: Any) -> dict[str, Any]:
    answer = await client.patch(f"/admin/v1/places/{place_id}", json=body, headers=world.admin)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def rows(app, organisation_id: int) -> dict[int, str]:
    """Every fence row of the organisation: id -> its row version (xmin changes with any write to the row)."""
    async with app.state.resources.session_factory() as session:
        result = await session.execute(
            text("SELECT id, xmin::text AS v FROM geofences WHERE organisation_id = :o"), {"o": organisation_id}
        )
        return {int(r.id): str(r.v) for r in result}


async def index_matches_database(app, organisation_id: int, *points: tuple[float, float]) -> None:
    """Wait until the API's index answers at `points` what PostGIS says (the change is live for fixes)."""
    deadline = time.monotonic() + 10
    while True:
        index = await app.state.resources.indexes.get(organisation_id)
        async with app.state.resources.session_factory() as session:
            agree = True
            for lon, lat in points:
                stored = await session.execute(
                    text(
                        "SELECT id FROM geofences WHERE organisation_id = :o"
                        " AND ST_Covers(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"
                    ),
                    {"o": organisation_id, "x": lon, "y": lat},
                )
                indexed = {f.fence_id for f in index.query(lon, lat) if f.zone == "building"}
                agree = agree and indexed == set(stored.scalars())
        if agree:
            return
        assert time.monotonic() < deadline, "the API's index did not follow the change"
        await asyncio.sleep(0.05)


async def entered(client, world: World, point: tuple[float, float]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    device = await register(client, world)
    events = await send(client, device, point)
    assert {e["kind"] for e in events} == {"enter"}, events
    return device, events


async def test_a_rename_with_every_fence_sent_back_touches_no_fence_row(app, client, world: World) -> None:
    device, enters = await entered(client, world, INSIDE)
    assert [(e["place_id"], e["zone"]) for e in enters] == [(world.place_id, "building")]
    before = await fences_of(client, world, world.place_id)
    rows_before = await rows(app, world.organisation_id)

    renamed = await patch(client, world, world.place_id, name="Oodi (renamed)", fences=as_sent(before))

    assert [f["id"] for f in renamed["fences"]] == [f["id"] for f in before]
    assert await rows(app, world.organisation_id) == rows_before, "a rename wrote to fence rows"
    await index_matches_database(app, world.organisation_id, INSIDE)
    assert await send(client, device, INSIDE) == []


async def test_a_vertex_move_that_keeps_the_device_inside_fires_nothing(app, client, world: World) -> None:
    device, _ = await entered(client, world, INSIDE)
    [before] = await fences_of(client, world, world.place_id)

    # The east wall moves 33 m west: the device is still ~67 m inside.
    moved = await patch(client, world, world.place_id, fences=[{"geometry": with_east_wall(24.9400)}])

    assert [f["id"] for f in moved["fences"]] == [before["id"]], "the fence was updated in place"
    assert moved["fences"][0]["geometry"]["coordinates"][0][1][0] == 24.9400
    await index_matches_database(app, world.organisation_id, INSIDE, (24.9403, 60.1740))
    assert await send(client, device, INSIDE) == []


async def test_a_vertex_move_that_leaves_the_device_outside_exits_it_once(app, client, world: World) -> None:
    device, _ = await entered(client, world, INSIDE)
    [before] = await fences_of(client, world, world.place_id)

    # The east wall moves to 24.9376: the device (24.9388) is now ~67 m outside.
    moved = await patch(client, world, world.place_id, fences=[{"geometry": with_east_wall(24.9376)}])

    assert [f["id"] for f in moved["fences"]] == [before["id"]]
    await index_matches_database(app, world.organisation_id, INSIDE)
    events = await send(client, device, INSIDE)
    assert [(e["kind"], e["fence_id"], e["place_id"]) for e in events] == [("exit", before["id"], world.place_id)]


async def test_an_added_fence_enters_whoever_is_in_it_and_no_one_else(app, client, world: World) -> None:
    in_block, _ = await entered(client, world, INSIDE)
    in_east = await register(client, world)
    assert await send(client, in_east, IN_EAST) == []
    [block] = await fences_of(client, world, world.place_id)

    grown = await patch(client, world, world.place_id, fences=[*as_sent([block]), {"geometry": EAST}])

    ids = [f["id"] for f in grown["fences"]]
    assert block["id"] in ids and len(ids) == 2
    [east_id] = [i for i in ids if i != block["id"]]
    await index_matches_database(app, world.organisation_id, INSIDE, IN_EAST)
    assert await send(client, in_block, INSIDE) == []
    events = await send(client, in_east, IN_EAST)
    assert [(e["kind"], e["fence_id"], e["place_id"]) for e in events] == [("enter", east_id, world.place_id)]


async def test_a_removed_fence_still_exits_the_devices_inside_it_with_its_place(app, client, world: World) -> None:
    [block] = await fences_of(client, world, world.place_id)
    grown = await patch(client, world, world.place_id, fences=[*as_sent([block]), {"geometry": EAST}])
    [east_id] = [f["id"] for f in grown["fences"] if f["id"] != block["id"]]
    await index_matches_database(app, world.organisation_id, IN_EAST)
    device, enters = await entered(client, world, IN_EAST)
    assert [(e["fence_id"], e["place_id"]) for e in enters] == [(east_id, world.place_id)]

    shrunk = await patch(client, world, world.place_id, fences=as_sent([block]))

    assert [f["id"] for f in shrunk["fences"]] == [block["id"]]
    await index_matches_database(app, world.organisation_id, IN_EAST)
    events = await send(client, device, IN_EAST)
    assert [(e["kind"], e["zone"], e["fence_id"], e["place_id"]) for e in events] == [
        ("exit", "building", None, world.place_id)
    ]
    async with app.state.resources.session_factory() as session:
        stored = await session.execute(
            text("SELECT kind, place_id, fence_id, visit_id FROM events WHERE id = :e"), {"e": events[0]["id"]}
        )
        kind, place_id, fence_id, visit_id = stored.one()
        assert (kind, place_id, fence_id) == ("exit", world.place_id, None)
        ended = await session.execute(text("SELECT ended_at FROM visits WHERE id = :v"), {"v": visit_id})
        assert ended.scalar_one() is not None, "the visit the enter opened is closed by the exit"


async def import_extract(client, world: World) -> dict[str, Any]:
    """The OSM extract through the admin upload and the worker's import job, as the admin UI runs it."""
    upload = await client.post(
        "/admin/v1/imports",
        files={"file": ("helsinki-centre.osm.pbf", EXTRACT.read_bytes(), "application/octet-stream")},
        headers=world.admin,
    )
    assert upload.status_code == 202, upload.text
    await run_worker(get_settings())
    state = await client.get(f"/admin/v1/imports/{upload.json()['id']}", headers=world.admin)
    return dict(state.json())


async def test_reimporting_the_same_osm_extract_keeps_fence_ids_and_fires_nothing(app, client, world: World) -> None:
    first = await import_extract(client, world)
    assert (first["phase"], first["created"]) == ("done", 62)
    await index_matches_database(app, world.organisation_id, IN_UNIVERSITY)
    device, enters = await entered(client, world, IN_UNIVERSITY)
    assert enters
    rows_before = await rows(app, world.organisation_id)

    second = await import_extract(client, world)

    assert (second["phase"], second["created"], second["updated"]) == ("done", 0, 62)
    assert await rows(app, world.organisation_id) == rows_before, "a re-import of the same data wrote fence rows"
    await index_matches_database(app, world.organisation_id, IN_UNIVERSITY)
    assert await send(client, device, IN_UNIVERSITY) == []

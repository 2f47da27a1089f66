"""The fence version lives in PostgreSQL: an admin's change reaches every index even when Redis is down as it is
saved, and a registry that starts later (a replica restarting) agrees with the ones that were running."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from redis.asyncio import Redis

from geofences.index import FenceIndex
from geofences.registry import FenceRows, IndexRegistry
from geofences.repository import PlaceRepository, bump_fence_version, fence_versions
from infra.stack import RedisServer, free_port
from tests.world import BLOCK, FAR_OUTSIDE, INSIDE, World

# ~110 m x 110 m east of the block, and its middle.
EAST = {
    "type": "Polygon",
    "coordinates": [
        [[24.9420, 60.1735], [24.9440, 60.1735], [24.9440, 60.1745], [24.9420, 60.1745], [24.9420, 60.1735]]
    ],
}
IN_EAST = (24.9430, 60.1740)
PROBES = (INSIDE, IN_EAST, FAR_OUTSIDE)


async def load(app, organisation_id: int) -> FenceRows:
    async with app.state.resources.session_factory() as session:
        return await PlaceRepository(session).fences_for_index(organisation_id)


async def versions(app, organisation_ids) -> dict[int, int]:
    async with app.state.resources.session_factory() as session:
        return await fence_versions(session, organisation_ids)


def answers(index: FenceIndex) -> list[list[tuple[int, int, str]]]:
    return [[(f.fence_id, f.place_id, f.zone) for f in index.query(lon, lat)] for lon, lat in PROBES]


def unreachable_redis() -> Redis:
    return Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)


async def redis_back(app) -> None:
    """The app's pool holds connections from before the restart: each is dropped on its first failed use."""
    deadline = time.monotonic() + 15
    while True:
        with contextlib.suppress(Exception):
            if await app.state.resources.redis.ping():
                return
        assert time.monotonic() < deadline, "redis did not come back"
        await asyncio.sleep(0.1)


async def test_a_change_saved_while_redis_is_down_reaches_the_index_and_a_restarted_replica_agrees(
    app, client, world: World, test_env
) -> None:
    registry: IndexRegistry = app.state.resources.indexes
    before = await registry.get(world.organisation_id)
    assert before.query(*IN_EAST) == []
    redis = RedisServer(Path(test_env["PLACECAST_VAR_DIR"]).parent / "redis", int(test_env["PLACECAST_REDIS_PORT"]))
    await asyncio.to_thread(redis.stop)
    try:
        started = time.monotonic()
        save = asyncio.create_task(
            client.patch(
                f"/admin/v1/places/{world.place_id}",
                json={"fences": [{"geometry": BLOCK}, {"geometry": EAST}]},
                headers=world.admin,
            )
        )
        while not (await registry.get(world.organisation_id)).query(*IN_EAST):
            assert time.monotonic() - started < 3.0, "the index did not pick up the change from PostgreSQL"
            await asyncio.sleep(0.05)
        picked_up_s = time.monotonic() - started
        answer = await save  # the message after commit is lost; the change is not
        assert answer.status_code == 200, answer.text
    finally:
        await asyncio.to_thread(redis.start)
    await redis_back(app)
    assert picked_up_s < 3.0

    running = await registry.get(world.organisation_id)
    stored = (await versions(app, [world.organisation_id]))[world.organisation_id]
    assert running.version == stored == before.version + 1

    # A replica that starts now reads the same version and the same fences, Redis or not.
    restarted = IndexRegistry(unreachable_redis(), lambda o: load(app, o), lambda o: versions(app, o))
    fresh = await restarted.get(world.organisation_id)
    assert fresh.version == running.version
    assert answers(fresh) == answers(running)
    assert fresh.query(*IN_EAST) and fresh.query(*INSIDE) and not fresh.query(*FAR_OUTSIDE)


async def test_the_version_read_before_the_rows_makes_a_change_in_between_rebuild_again(app, world: World, org) -> None:
    other_id, _ = org
    loads: list[int] = []
    version_queries: list[list[int]] = []

    async def load_and_change(organisation_id: int) -> FenceRows:
        rows = await load(app, organisation_id)
        loads.append(organisation_id)
        if len(loads) == 1:  # an admin's change commits between the version read and the rows read
            async with app.state.resources.session_factory() as session, session.begin():
                await bump_fence_version(session, organisation_id)
        return rows

    async def counted_versions(organisation_ids) -> dict[int, int]:
        version_queries.append(sorted(organisation_ids))
        return await versions(app, organisation_ids)

    registry = IndexRegistry(unreachable_redis(), load_and_change, counted_versions)
    first = await registry.get(world.organisation_id)
    stored = (await versions(app, [world.organisation_id]))[world.organisation_id]
    assert first.version == stored - 1, "labelled with the version read before the rows"
    await registry.get(other_id)

    version_queries.clear()
    assert await registry.check() == [world.organisation_id]
    assert version_queries == [sorted([world.organisation_id, other_id])], "one query for every organisation held"
    deadline = time.monotonic() + 5
    while (await registry.get(world.organisation_id)).version != stored:
        assert time.monotonic() < deadline, "the stale index was not rebuilt"
        await asyncio.sleep(0.02)
    assert loads == [world.organisation_id, other_id, world.organisation_id]
    assert await registry.check() == []
    await registry.stop()

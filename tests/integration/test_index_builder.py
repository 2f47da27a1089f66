"""Index rebuilds in the builder process (geofences/builder.py), on real PostGIS and Redis."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import MappingProxyType

from geofences.builder import ProcessIndexBuilder
from geofences.index import FenceIndex
from geofences.registry import IndexRegistry, build_index
from geofences.repository import PlaceRepository, bump_fence_version, fence_versions
from tests.world import FAR_OUTSIDE, INSIDE, World


async def load(app, organisation_id: int):
    async with app.state.resources.session_factory() as session:
        return await PlaceRepository(session).fences_for_index(organisation_id)


async def versions(app, organisation_ids: Sequence[int]) -> dict[int, int]:
    async with app.state.resources.session_factory() as session:
        return await fence_versions(session, organisation_ids)


async def bump(app, organisation_id: int) -> None:
    async with app.state.resources.session_factory() as session, session.begin():
        await bump_fence_version(session, organisation_id)


async def test_the_builder_process_builds_what_a_build_here_would(app, world: World) -> None:
    builder = ProcessIndexBuilder(app.state.settings.sync_database_url)
    builder.start()
    try:
        there = await builder.build(world.organisation_id, 7)
        assert await builder.pid() != os.getpid()  # really another process
    finally:
        builder.close()
    here = build_index(await load(app, world.organisation_id), 7)
    assert there.version == 7 and len(there) == len(here) > 0
    for lon, lat in (INSIDE, FAR_OUTSIDE, (24.93885, 60.17405)):
        assert there.query(lon, lat) == here.query(lon, lat)
    assert there.query(*INSIDE)  # the world's building


async def test_a_change_is_rebuilt_elsewhere_and_a_failed_rebuild_falls_back_to_a_build_here(app, world: World) -> None:
    calls: list[tuple[int, int]] = []

    async def rebuild(organisation_id: int, version: int) -> FenceIndex:
        calls.append((organisation_id, version))
        if len(calls) > 1:
            raise RuntimeError("builder process gone")
        return build_index(await load(app, organisation_id), version)

    registry = IndexRegistry(
        app.state.resources.redis, lambda o: load(app, o), lambda o: versions(app, o), rebuild=rebuild
    )
    first = await registry.get(world.organisation_id)
    assert calls == []  # the first build has no index to answer meanwhile: here

    await bump(app, world.organisation_id)
    second = await registry.refresh(world.organisation_id)
    assert calls == [(world.organisation_id, second.version)] and second.version == first.version + 1

    await bump(app, world.organisation_id)
    third = await registry.refresh(world.organisation_id)
    assert len(calls) == 2 and third.version == second.version + 1  # built here after all
    assert third.query(*INSIDE)


async def test_a_places_gps_tuning_survives_the_hand_over_from_the_builder_process(app, client, world: World) -> None:
    tuning = {"min_exit_margin_m": 25.0, "exit_sigmas": 5.0}
    answer = await client.patch(f"/admin/v1/places/{world.place_id}", json={"gps_tuning": tuning}, headers=world.admin)
    assert answer.status_code == 200, answer.text
    [fence_id] = [f["id"] for f in answer.json()["fences"]]
    builder = ProcessIndexBuilder(app.state.settings.sync_database_url)
    builder.start()
    try:
        there = await builder.build(world.organisation_id, 8)
    finally:
        builder.close()
    assert {f: dict(t) for f, t in there.tuning.items()} == {fence_id: tuning}
    assert isinstance(there.tuning, MappingProxyType) and isinstance(there.tuning[fence_id], MappingProxyType)
    assert build_index(await load(app, world.organisation_id), 8).tuning == there.tuning

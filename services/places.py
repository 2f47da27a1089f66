"""Use cases for places and their fences. Services never commit: the caller's unit of work does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from geofences.domain import BBox, PlaceRecord, PlaceSpec
from geofences.repository import PlaceRepository, bump_fence_version
from geofences.validation import FencesNear
from kernel.audit import record_audit
from kernel.errors import NotFound
from kernel.uow import UnitOfWork

FencesChanged = Callable[[int], Awaitable[None]]
# The place's fields the fence index holds besides its fences: changing one is a fence change.
INDEXED = frozenset({"approach_m", "gps_tuning"})


def _index_fields(changes: Mapping[str, Any], before: tuple[float | None, dict[str, Any]]) -> tuple[Any, Any]:
    """(approach_m, gps_tuning) once `changes` are applied to `before`."""
    return changes.get("approach_m", before[0]), changes.get("gps_tuning", before[1])


async def _fences_changed(uow: UnitOfWork, organisation_id: int, fences_changed: FencesChanged | None) -> None:
    """Every API process's in-memory index follows the change: the organisation's fence version is bumped in this
    transaction (each registry polls it, geofences/registry.py), and `fences_changed` (a Redis message, the fast
    path) runs once the change is committed; losing the message only makes a replica notice it at its next poll."""
    await bump_fence_version(uow.session, organisation_id)
    if fences_changed is not None:
        uow.after_commit(lambda: fences_changed(organisation_id))


async def create_place(
    uow: UnitOfWork,
    *,
    organisation_id: int,
    actor: str,
    spec: PlaceSpec,
    fences_changed: FencesChanged | None = None,
) -> PlaceRecord:
    places = PlaceRepository(uow.session)
    place_id = await places.add(organisation_id, spec)
    await record_audit(
        uow.session,
        organisation_id=organisation_id,
        actor=actor,
        action="create",
        entity="place",
        entity_id=place_id,
        details={"name": spec.name},
    )
    await _fences_changed(uow, organisation_id, fences_changed)
    return await get_place(uow, organisation_id=organisation_id, place_id=place_id)


async def get_place(uow: UnitOfWork, *, organisation_id: int, place_id: int) -> PlaceRecord:
    record = await PlaceRepository(uow.session).get(organisation_id, place_id)
    if record is None:
        raise NotFound(f"place {place_id} not found")
    return record


async def list_places(
    uow: UnitOfWork,
    *,
    organisation_id: int,
    bbox: BBox | None,
    kind: str | None,
    query: str | None,
    after_id: int | None,
    limit: int,
) -> tuple[list[PlaceRecord], int | None]:
    records = await PlaceRepository(uow.session).search(
        organisation_id, bbox=bbox, kind=kind, query=query, after_id=after_id, limit=limit + 1
    )
    next_cursor = records[limit - 1].id if len(records) > limit else None
    return records[:limit], next_cursor


async def update_place(
    uow: UnitOfWork,
    *,
    organisation_id: int,
    actor: str,
    place_id: int,
    changes: dict[str, Any],
    fences: list[Any] | None = None,
    fences_changed: FencesChanged | None = None,
) -> PlaceRecord:
    """`fences`, when given, is the place's whole list (the map UI sends it even for a rename): fences that did not
    change keep their ids and rows untouched, changed ones are updated in place (`PlaceRepository.sync_fences`)."""
    places = PlaceRepository(uow.session)
    before = await places.index_fields(organisation_id, place_id) if INDEXED.intersection(changes) else None
    if not await places.update(organisation_id, place_id, changes):
        raise NotFound(f"place {place_id} not found")
    fences_moved = fences is not None and (await places.sync_fences(organisation_id, place_id, fences)).changed
    await record_audit(
        uow.session,
        organisation_id=organisation_id,
        actor=actor,
        action="update",
        entity="place",
        entity_id=place_id,
        details={"fields": sorted(changes), "fences_changed": fences_moved},
    )
    if fences_moved or (before is not None and _index_fields(changes, before) != before):
        await _fences_changed(uow, organisation_id, fences_changed)
    return await get_place(uow, organisation_id=organisation_id, place_id=place_id)


async def delete_place(
    uow: UnitOfWork,
    *,
    organisation_id: int,
    actor: str,
    place_id: int,
    fences_changed: FencesChanged | None = None,
) -> None:
    if not await PlaceRepository(uow.session).delete(organisation_id, place_id):
        raise NotFound(f"place {place_id} not found")
    await record_audit(
        uow.session,
        organisation_id=organisation_id,
        actor=actor,
        action="delete",
        entity="place",
        entity_id=place_id,
    )
    await _fences_changed(uow, organisation_id, fences_changed)


async def upsert_places(
    uow: UnitOfWork,
    *,
    organisation_id: int,
    actor: str,
    specs: Iterable[PlaceSpec],
    fences_changed: FencesChanged | None = None,
) -> tuple[int, int]:
    """Create or update places by external ref (an OSM id, a GeoJSON feature id): imports are idempotent, and a
    re-import keeps the ids of the fences it did not change (no fresh enters for the devices inside them)."""
    places = PlaceRepository(uow.session)
    created = updated = 0
    fences_moved = False
    for spec in specs:
        existing = await places.find_by_external_ref(organisation_id, spec.external_ref) if spec.external_ref else None
        if existing is None:
            await places.add(organisation_id, spec)
            created += 1
            fences_moved = True
        else:
            before = await places.index_fields(organisation_id, existing)
            values: dict[str, Any] = {
                "name": spec.name,
                "kind": spec.kind,
                "address": spec.address,
                "timezone": spec.timezone,
                "opening_hours": spec.opening_hours,
                "approach_m": spec.approach_m,
                "properties": spec.properties,
            }
            if spec.gps_tuning is not None:  # a source that does not say (OSM) keeps the place's tuning
                values["gps_tuning"] = spec.gps_tuning
            await places.update(organisation_id, existing, values)
            synced = await places.sync_fences(organisation_id, existing, spec.fences)
            indexed_changed = before is not None and _index_fields(values, before) != before
            fences_moved = fences_moved or synced.changed or indexed_changed
            updated += 1
    await record_audit(
        uow.session,
        organisation_id=organisation_id,
        actor=actor,
        action="import",
        entity="place",
        details={"created": created, "updated": updated},
    )
    if fences_moved:
        await _fences_changed(uow, organisation_id, fences_changed)
    return created, updated


def other_fences_near(uow: UnitOfWork, *, organisation_id: int, except_place_id: int | None = None) -> FencesNear:
    """Whether the organisation has a fence, other than `except_place_id`'s, within a distance of a point; for
    judging a new fence against the organisation's others (geofences/validation.swapped_axes_problem)."""
    places = PlaceRepository(uow.session)

    async def near(lon: float, lat: float, radius_m: float) -> bool:
        return await places.has_fence_within(organisation_id, lon, lat, radius_m, except_place_id=except_place_id)

    return near


async def all_places(uow: UnitOfWork, *, organisation_id: int) -> list[PlaceRecord]:
    records: list[PlaceRecord] = []
    after: int | None = None
    places = PlaceRepository(uow.session)
    while True:
        page = await places.search(organisation_id, after_id=after, limit=1000)
        records += page
        if len(page) < 1000:
            return records
        after = page[-1].id

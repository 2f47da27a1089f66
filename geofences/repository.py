"""All SQL for places and fences. Geometry converts between shapely and PostGIS here only."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from geoalchemy2.shape import from_shape, to_shape
from shapely import from_wkb
from sqlalchemy import and_, delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from geofences.domain import BBox, FenceSpec, IndexRow, PlaceRecord, PlaceSpec
from geofences.models import Geofence, Place

PLACE_FIELDS = (
    "name",
    "kind",
    "address",
    "timezone",
    "opening_hours",
    "external_ref",
    "approach_m",
    "properties",
)


def _place_values(spec: PlaceSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in PLACE_FIELDS} | {"gps_tuning": spec.gps_tuning or {}}


def _fence_row(organisation_id: int, place_id: int, fence: FenceSpec) -> dict[str, Any]:
    return {
        "organisation_id": organisation_id,
        "place_id": place_id,
        "kind": fence.kind,
        "geom": from_shape(fence.geometry, srid=4326),
        "radius_m": fence.radius_m if fence.kind == "circle" else None,
    }


# Coordinates closer than this (degrees, ~0.1 mm) are the same vertex: a map client's round trip through floats.
SAME_VERTEX_DEG = 1e-9


def same_fence(kind: str, geom: Any, radius_m: float | None, fence: FenceSpec) -> bool:
    """A stored fence (kind, shapely geometry, radius) is `fence`: same kind, vertices and radius."""
    if kind != fence.kind:
        return False
    if kind == "circle" and not (
        radius_m is not None and fence.radius_m is not None and abs(radius_m - fence.radius_m) <= 1e-9
    ):
        return False
    return bool(geom.geom_type == fence.geometry.geom_type and geom.equals_exact(fence.geometry, SAME_VERTEX_DEG))


@dataclass(frozen=True, slots=True)
class FenceSync:
    """What `sync_fences` did: `fence_ids[i]` holds `fences[i]`; `changed` is False when no row was written."""

    fence_ids: list[int]
    updated: int = 0
    inserted: int = 0
    deleted: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.updated or self.inserted or self.deleted)


class PlaceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, organisation_id: int, spec: PlaceSpec) -> int:
        place_id: int = (
            await self.session.execute(
                insert(Place).values(organisation_id=organisation_id, **_place_values(spec)).returning(Place.id)
            )
        ).scalar_one()
        await self._insert_fences(organisation_id, place_id, spec.fences)
        return place_id

    async def _insert_fences(self, organisation_id: int, place_id: int, fences: Sequence[FenceSpec]) -> list[int]:
        if not fences:
            return []
        rows = [_fence_row(organisation_id, place_id, fence) for fence in fences]
        result = await self.session.execute(insert(Geofence).returning(Geofence.id), rows)
        return list(result.scalars())

    async def find_by_external_ref(self, organisation_id: int, external_ref: str) -> int | None:
        return (
            await self.session.execute(
                select(Place.id).where(Place.organisation_id == organisation_id, Place.external_ref == external_ref)
            )
        ).scalar_one_or_none()

    async def update(self, organisation_id: int, place_id: int, values: dict[str, Any]) -> bool:
        if not values:
            return await self.exists(organisation_id, place_id)
        result = await self.session.execute(
            update(Place)
            .where(Place.id == place_id, Place.organisation_id == organisation_id)
            .values(**values, updated_at=func.now())
            .returning(Place.id)
        )
        return result.scalar_one_or_none() is not None

    async def sync_fences(self, organisation_id: int, place_id: int, fences: Sequence[FenceSpec]) -> FenceSync:
        """Make the place's fences `fences` while keeping the identity of every fence that stays.

        Device state and events refer to fence ids, so a fence that did not change keeps its row untouched
        (no fresh "enter" for the devices inside it), a changed one is updated in place (devices inside get
        an exit or stay, by the normal rules), and only extra fences are inserted or left-over ones deleted.
        Unchanged fences are matched first, whatever their order; the rest pair up in order.
        """
        stored = (
            await self.session.execute(
                select(Geofence.id, Geofence.kind, Geofence.geom, Geofence.radius_m)
                .where(Geofence.place_id == place_id, Geofence.organisation_id == organisation_id)
                .order_by(Geofence.id)
            )
        ).all()
        old = [(row.id, row.kind, to_shape(row.geom), row.radius_m) for row in stored]
        ids: list[int | None] = [None] * len(fences)
        for position, fence in enumerate(fences):
            match = next((o for o in old if same_fence(o[1], o[2], o[3], fence)), None)
            if match is not None:
                ids[position] = match[0]
                old.remove(match)
        changed = [position for position, fence_id in enumerate(ids) if fence_id is None]
        updated = 0
        for position, (fence_id, *_) in zip(changed, old, strict=False):
            values = _fence_row(organisation_id, place_id, fences[position])
            await self.session.execute(
                update(Geofence)
                .where(Geofence.id == fence_id)
                .values(kind=values["kind"], geom=values["geom"], radius_m=values["radius_m"], updated_at=func.now())
            )
            ids[position] = fence_id
            updated += 1
        extra = changed[updated:]
        new_ids = await self._insert_fences(organisation_id, place_id, [fences[p] for p in extra])
        for position, fence_id in zip(extra, new_ids, strict=True):
            ids[position] = fence_id
        left_over = [o[0] for o in old[updated:]]
        if left_over:
            await self.session.execute(delete(Geofence).where(Geofence.id.in_(left_over)))
        return FenceSync([i for i in ids if i is not None], updated, len(new_ids), len(left_over))

    async def index_fields(self, organisation_id: int, place_id: int) -> tuple[float | None, dict[str, Any]] | None:
        """The place's fields the fence index is built from besides its fences: (approach_m, gps_tuning)."""
        row = (
            await self.session.execute(
                select(Place.approach_m, Place.gps_tuning).where(
                    Place.id == place_id, Place.organisation_id == organisation_id
                )
            )
        ).one_or_none()
        return None if row is None else (row.approach_m, dict(row.gps_tuning or {}))

    async def exists(self, organisation_id: int, place_id: int) -> bool:
        found = await self.session.execute(
            select(Place.id).where(Place.id == place_id, Place.organisation_id == organisation_id)
        )
        return found.scalar_one_or_none() is not None

    async def delete(self, organisation_id: int, place_id: int) -> bool:
        result = await self.session.execute(
            delete(Place).where(Place.id == place_id, Place.organisation_id == organisation_id).returning(Place.id)
        )
        return result.scalar_one_or_none() is not None

    async def get(self, organisation_id: int, place_id: int) -> PlaceRecord | None:
        records = await self._load(select(Place).where(Place.id == place_id, Place.organisation_id == organisation_id))
        return records[0] if records else None

    async def search(
        self,
        organisation_id: int,
        *,
        bbox: BBox | None = None,
        kind: str | None = None,
        query: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[PlaceRecord]:
        stmt = select(Place).where(Place.organisation_id == organisation_id)
        if kind:
            stmt = stmt.where(Place.kind == kind)
        if query:
            stmt = stmt.where(Place.name.ilike(f"%{query}%"))
        if after_id is not None:
            stmt = stmt.where(Place.id > after_id)
        if bbox is not None:
            envelope = func.ST_MakeEnvelope(bbox.min_lon, bbox.min_lat, bbox.max_lon, bbox.max_lat, 4326)
            touching = select(Geofence.place_id).where(
                Geofence.organisation_id == organisation_id,
                or_(
                    func.ST_Intersects(Geofence.geom, envelope),
                    and_(
                        Geofence.kind == "circle",
                        func.ST_DWithin(func.Geography(Geofence.geom), func.Geography(envelope), Geofence.radius_m),
                    ),
                ),
            )
            stmt = stmt.where(Place.id.in_(touching))
        return await self._load(stmt.order_by(Place.id).limit(limit))

    async def _load(self, stmt: Any) -> list[PlaceRecord]:
        places = list((await self.session.execute(stmt)).scalars())
        if not places:
            return []
        fences: dict[int, list[Geofence]] = defaultdict(list)
        rows = await self.session.execute(
            select(Geofence).where(Geofence.place_id.in_([p.id for p in places])).order_by(Geofence.id)
        )
        for fence in rows.scalars():
            fences[fence.place_id].append(fence)
        return [self._record(place, fences[place.id]) for place in places]

    @staticmethod
    def _record(place: Place, fences: list[Geofence]) -> PlaceRecord:
        spec = PlaceSpec(
            name=place.name,
            kind=place.kind,
            address=place.address,
            timezone=place.timezone,
            opening_hours=place.opening_hours,
            external_ref=place.external_ref,
            approach_m=place.approach_m,
            properties=dict(place.properties or {}),
            gps_tuning=dict(place.gps_tuning or {}),
            fences=[
                FenceSpec(
                    kind="circle" if f.kind == "circle" else "polygon",
                    geometry=to_shape(f.geom),
                    radius_m=f.radius_m,
                )
                for f in fences
            ],
        )
        return PlaceRecord(
            id=place.id, organisation_id=place.organisation_id, spec=spec, fence_ids=[f.id for f in fences]
        )

    async def count(self, organisation_id: int) -> int:
        return (
            await self.session.execute(select(func.count(Place.id)).where(Place.organisation_id == organisation_id))
        ).scalar_one()

    async def has_fence_within(
        self, organisation_id: int, lon: float, lat: float, radius_m: float, *, except_place_id: int | None = None
    ) -> bool:
        """Whether a fence of the organisation, other than `except_place_id`'s, lies within `radius_m` of the point
        (on the sphere; a circle by its centre)."""
        found = await self.session.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM geofences WHERE organisation_id = :org"
                " AND place_id IS DISTINCT FROM :place AND ST_DWithin(CAST(geom AS geography),"
                " CAST(ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS geography), :radius, false))"
            ),
            {"org": organisation_id, "place": except_place_id, "lon": lon, "lat": lat, "radius": radius_m},
        )
        return bool(found.scalar_one())

    async def fences_for_index(self, organisation_id: int) -> list[IndexRow]:
        """Every fence of the organisation with its place's approach distance and GPS tuning, for the index."""
        return fence_rows(await self.session.execute(fences_for_index_query(organisation_id)))


async def bump_fence_version(session: AsyncSession, organisation_id: int) -> None:
    """In the transaction of a fence change: every API process's index registry polls this version."""
    await session.execute(
        text("UPDATE organisations SET fence_version = fence_version + 1 WHERE id = :o"), {"o": organisation_id}
    )


async def fence_versions(session: AsyncSession, organisation_ids: Iterable[int]) -> dict[int, int]:
    """The fence version of each organisation, in one query (a deleted organisation is left out)."""
    rows = await session.execute(
        text("SELECT id, fence_version FROM organisations WHERE id = ANY(CAST(:ids AS bigint[]))"),
        {"ids": list(organisation_ids)},
    )
    return {int(r.id): int(r.fence_version) for r in rows}


def fences_for_index_query(organisation_id: int) -> Any:
    """The index's rows, as one statement: run by `PlaceRepository` and by the index builder process."""
    return (
        select(
            Geofence.id,
            Geofence.place_id,
            Geofence.kind,
            func.ST_AsBinary(Geofence.geom),
            Geofence.radius_m,
            Place.approach_m,
            Place.gps_tuning,
        )
        .join(Place, Place.id == Geofence.place_id)
        .where(Geofence.organisation_id == organisation_id)
    )


def fence_rows(rows: Any) -> list[IndexRow]:
    return [
        (
            fence_id,
            place_id,
            FenceSpec(kind="circle" if kind == "circle" else "polygon", geometry=from_wkb(bytes(wkb)), radius_m=radius),
            approach,
            dict(tuning or {}),
        )
        for fence_id, place_id, kind, wkb, radius, approach, tuning in rows
    ]


async def fence_places(session: AsyncSession, fence_ids: list[int]) -> dict[int, int]:
    """Fence id -> place id for the fences that still exist (the fix path: one query, none for no ids)."""
    if not fence_ids:
        return {}
    rows = await session.execute(
        text("SELECT id, place_id FROM geofences WHERE id = ANY(CAST(:ids AS bigint[]))"), {"ids": fence_ids}
    )
    return {int(r.id): int(r.place_id) for r in rows}


async def place_name(session: AsyncSession, organisation_id: int, place_id: int) -> str | None:
    """The place's name, or None when the organisation has no such place."""
    found = await session.execute(
        text("SELECT name FROM places WHERE id = :p AND organisation_id = :o"),
        {"p": place_id, "o": organisation_id},
    )
    name = found.scalar_one_or_none()
    return None if name is None else str(name)


async def place_fence_within(session: AsyncSession, place_id: int, lon: float, lat: float, allowance_m: float) -> bool:
    """Whether the point lies within `allowance_m` of one of the place's fences (a circle: of its edge)."""
    near = await session.execute(
        text(
            "SELECT 1 FROM geofences WHERE place_id = :p AND ST_DWithin(geom::geography,"
            " ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography,"
            " COALESCE(radius_m, 0) + :allow) LIMIT 1"
        ),
        {"p": place_id, "lon": lon, "lat": lat, "allow": allowance_m},
    )
    return near.first() is not None


@dataclass(frozen=True, slots=True)
class PublicPlace:
    """What a visitor of the place may see of it (no fences, no tuning, no properties)."""

    id: int
    name: str
    kind: str
    address: str | None
    timezone: str
    opening_hours: str | None


async def public_place(session: AsyncSession, organisation_id: int, place_id: int) -> PublicPlace | None:
    """The place as its visitors see it, or None when the organisation has no such place."""
    found = await session.execute(
        text(
            "SELECT id, name, kind, address, timezone, opening_hours FROM places WHERE id = :p AND organisation_id = :o"
        ),
        {"p": place_id, "o": organisation_id},
    )
    row = found.first()
    if row is None:
        return None
    return PublicPlace(int(row.id), row.name, row.kind, row.address, row.timezone, row.opening_hours)


async def place_organisation(session: AsyncSession, place_id: int) -> int | None:
    """The organisation a place belongs to (None: no such place); only for checking a QR token of the place."""
    found = await session.execute(text("SELECT organisation_id FROM places WHERE id = :p"), {"p": place_id})
    organisation_id = found.scalar_one_or_none()
    return None if organisation_id is None else int(organisation_id)

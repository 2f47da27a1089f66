"""All SQL for reading what the geofence engine decided: events and visits, filtered and paged by id, counted per
place and day for analytics, and loaded by id for the live feed.

Every query is scoped to one organisation. Pages go newest first: `ORDER BY id DESC`, and the cursor is the
last id seen (`id < cursor`), served by `ix_events_org_id` / `ix_visits_org_id`. Ids follow the order the server
recorded the rows in, so a page never moves under the reader when new rows arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, cast, extract, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from geofences.models import Event, Place, Visit

EVENT_KINDS = ("enter", "exit", "dwell", "checkin", "checkout")
ZONES = ("building", "approach")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events: all conditions must hold. `start` is inclusive, `end` exclusive, both on `occurred_at`."""

    organisation_id: int
    place_id: int | None = None
    device_id: int | None = None
    kinds: tuple[str, ...] = ()
    zone: str | None = None
    late: bool | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class VisitFilter:
    """Which visits: `start` inclusive, `end` exclusive, both on `started_at`; `open` means not ended yet."""

    organisation_id: int
    place_id: int | None = None
    device_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    open: bool | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    kind: str
    zone: str
    place_id: int
    place_name: str
    fence_id: int | None
    device_id: int
    visit_id: int | None
    occurred_at: datetime
    created_at: datetime
    late: bool


@dataclass(frozen=True, slots=True)
class VisitRow:
    id: int
    place_id: int
    place_name: str
    device_id: int
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    checked_in: bool
    detected: bool


EVENT_COLUMNS: tuple[str, ...] = tuple(EventRow.__dataclass_fields__)
VISIT_COLUMNS: tuple[str, ...] = tuple(VisitRow.__dataclass_fields__)


# Analytics count a visit known only from late fixes (offline uploads) when `include_late` is true.
_VISITS_PER_DAY = text(
    """
    SELECT v.place_id, p.name AS place_name, CAST(v.started_at AT TIME ZONE :tz AS date) AS day, count(*) AS visits
    FROM visits v JOIN places p ON p.id = v.place_id
    WHERE v.organisation_id = :org AND v.started_at >= :start AND v.started_at < :end
      AND (:include_late OR EXISTS (SELECT 1 FROM events e WHERE e.visit_id = v.id AND NOT e.late))
    GROUP BY v.place_id, p.name, day
    ORDER BY day, v.place_id
    """
)
_MEDIAN_DWELL = text(
    """
    SELECT v.place_id, p.name AS place_name,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(extract(epoch FROM v.ended_at - v.started_at) AS float8))
               AS median_s,
           count(*) AS visits
    FROM visits v JOIN places p ON p.id = v.place_id
    WHERE v.organisation_id = :org AND v.started_at >= :start AND v.started_at < :end AND v.ended_at IS NOT NULL
      AND (:include_late OR EXISTS (SELECT 1 FROM events e WHERE e.visit_id = v.id AND NOT e.late))
    GROUP BY v.place_id, p.name
    ORDER BY v.place_id
    """
)
# The live feed shows an event at a point of its place (on the surface of its fences, none if it has none).
_LIVE_EVENTS = text(
    """
    SELECT e.id AS event_id, e.kind, e.zone, e.place_id, p.name AS place_name, e.device_id, e.occurred_at,
           ST_X(f.point) AS lon, ST_Y(f.point) AS lat
    FROM events e
    JOIN places p ON p.id = e.place_id
    LEFT JOIN LATERAL (
        SELECT ST_PointOnSurface(ST_Collect(g.geom)) AS point FROM geofences g WHERE g.place_id = e.place_id
    ) f ON true
    WHERE e.id = ANY(CAST(:ids AS bigint[])) AND e.organisation_id = :org
    ORDER BY e.id
    """
)


class ActivityRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def events(self, where: EventFilter, *, before_id: int | None, limit: int) -> list[EventRow]:
        """Up to `limit` events with ids below `before_id` (all if None), newest first."""
        query = (
            select(
                Event.id,
                Event.kind,
                Event.zone,
                Event.place_id,
                Place.name.label("place_name"),
                Event.fence_id,
                Event.device_id,
                Event.visit_id,
                Event.occurred_at,
                Event.created_at,
                Event.late,
            )
            .join(Place, Place.id == Event.place_id)
            .where(Event.organisation_id == where.organisation_id)
        )
        if where.place_id is not None:
            query = query.where(Event.place_id == where.place_id)
        if where.device_id is not None:
            query = query.where(Event.device_id == where.device_id)
        if where.kinds:
            query = query.where(Event.kind.in_(where.kinds))
        if where.zone is not None:
            query = query.where(Event.zone == where.zone)
        if where.late is not None:
            query = query.where(Event.late.is_(where.late))
        if where.start is not None:
            query = query.where(Event.occurred_at >= where.start)
        if where.end is not None:
            query = query.where(Event.occurred_at < where.end)
        if before_id is not None:
            query = query.where(Event.id < before_id)
        rows = await self.session.execute(query.order_by(Event.id.desc()).limit(limit))
        return [EventRow(**row) for row in rows.mappings()]

    async def visits(self, where: VisitFilter, *, before_id: int | None, limit: int) -> list[VisitRow]:
        """Up to `limit` visits with ids below `before_id` (all if None), newest first."""
        query = (
            select(
                Visit.id,
                Visit.place_id,
                Place.name.label("place_name"),
                Visit.device_id,
                Visit.started_at,
                Visit.ended_at,
                cast(extract("epoch", Visit.ended_at - Visit.started_at), Float).label("duration_s"),
                Visit.checked_in,
                Visit.detected,
            )
            .join(Place, Place.id == Visit.place_id)
            .where(Visit.organisation_id == where.organisation_id)
        )
        if where.place_id is not None:
            query = query.where(Visit.place_id == where.place_id)
        if where.device_id is not None:
            query = query.where(Visit.device_id == where.device_id)
        if where.start is not None:
            query = query.where(Visit.started_at >= where.start)
        if where.end is not None:
            query = query.where(Visit.started_at < where.end)
        if where.open is True:
            query = query.where(Visit.ended_at.is_(None))
        elif where.open is False:
            query = query.where(Visit.ended_at.is_not(None))
        if before_id is not None:
            query = query.where(Visit.id < before_id)
        rows = await self.session.execute(query.order_by(Visit.id.desc()).limit(limit))
        return [VisitRow(**row) for row in rows.mappings()]

    async def visits_per_day(
        self, organisation_id: int, *, tz: str, start: datetime, end: datetime, include_late: bool
    ) -> list[dict[str, Any]]:
        """Visits begun in [start, end) per place and calendar day in `tz`: place_id, place_name, day, visits."""
        params = {"org": organisation_id, "tz": tz, "start": start, "end": end, "include_late": include_late}
        rows = await self.session.execute(_VISITS_PER_DAY, params)
        return [dict(row) for row in rows.mappings()]

    async def median_dwell(
        self, organisation_id: int, *, start: datetime, end: datetime, include_late: bool
    ) -> list[dict[str, Any]]:
        """Per place, the median length of the ended visits begun in [start, end): place_id, place_name, median_s,
        visits."""
        params = {"org": organisation_id, "start": start, "end": end, "include_late": include_late}
        rows = await self.session.execute(_MEDIAN_DWELL, params)
        return [dict(row) for row in rows.mappings()]

    async def live_events(self, organisation_id: int, event_ids: list[int]) -> list[dict[str, Any]]:
        """The organisation's events among `event_ids`, in id order, with their place's name and a point of it."""
        rows = await self.session.execute(_LIVE_EVENTS, {"ids": event_ids, "org": organisation_id})
        return [dict(row) for row in rows.mappings()]

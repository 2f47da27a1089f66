"""Analytics for the admin UI: visits per place per day, dwell time, pushes sent and opened, task times.

Days are calendar days in `tz` (default UTC); `from` and `to` are inclusive and lie in 2000..2099. Every query is
scoped to the principal's organisation and aggregated in PostgreSQL (medians with percentile_cont).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import text

from infra.deps import PrincipalDep, UowDep
from infra.http import IsoDate
from kernel.errors import Problem, ValidationFailed
from kernel.timezones import UnknownTimeZone, time_zone
from services.activity import EARLIEST, LATEST

router = APIRouter(prefix="/admin/v1", tags=["admin: analytics"])

DEFAULT_DAYS = 30
MAX_DAYS = 366

_VISITS = text(
    """
    SELECT v.place_id, p.name AS place_name, CAST(v.started_at AT TIME ZONE :tz AS date) AS day, count(*) AS visits
    FROM visits v JOIN places p ON p.id = v.place_id
    WHERE v.organisation_id = :org AND v.started_at >= :start AND v.started_at < :end
      AND (:include_late OR EXISTS (SELECT 1 FROM events e WHERE e.visit_id = v.id AND NOT e.late))
    GROUP BY v.place_id, p.name, day
    ORDER BY day, v.place_id
    """
)
_DWELL = text(
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
# A push counts as sent once FCM accepted it; an inbox-only notification is not a push but can still be opened.
_PUSHES = text(
    """
    SELECT CAST(n.created_at AT TIME ZONE :tz AS date) AS day,
           count(*) AS notifications,
           count(*) FILTER (WHERE s.pushed) AS sent,
           count(*) FILTER (WHERE n.opened_at IS NOT NULL) AS opened
    FROM notifications n
    LEFT JOIN LATERAL (
        SELECT true AS pushed FROM deliveries d
        WHERE d.notification_id = n.id AND d.channel = 'fcm' AND d.status = 'sent' LIMIT 1
    ) s ON true
    WHERE n.organisation_id = :org AND n.created_at >= :start AND n.created_at < :end
    GROUP BY day
    ORDER BY day
    """
)
# Times run from the push to the worker (or from creation for a task never pushed); `open` is a current count.
_TASKS = text(
    """
    SELECT
      percentile_cont(0.5) WITHIN GROUP (
          ORDER BY CAST(extract(epoch FROM acknowledged_at - COALESCE(notified_at, created_at)) AS float8)
      ) FILTER (WHERE acknowledged_at >= :start AND acknowledged_at < :end) AS median_ack_s,
      percentile_cont(0.5) WITHIN GROUP (
          ORDER BY CAST(extract(epoch FROM done_at - COALESCE(notified_at, created_at)) AS float8)
      ) FILTER (WHERE done_at >= :start AND done_at < :end) AS median_done_s,
      count(*) FILTER (WHERE done_at >= :start AND done_at < :end) AS done,
      count(*) FILTER (WHERE status <> 'done') AS open
    FROM staff_tasks
    WHERE organisation_id = :org
    """
)


class VisitsPerDay(BaseModel):
    place_id: int
    place_name: str
    day: date
    visits: int


class MedianDwell(BaseModel):
    place_id: int
    place_name: str
    median_s: float
    visits: int


class Pushes(BaseModel):
    sent: int
    opened: int
    notifications: int


class PushesPerDay(Pushes):
    day: date


class Tasks(BaseModel):
    median_ack_s: float | None
    median_done_s: float | None
    done: int
    open: int


class Analytics(BaseModel):
    from_: date = Field(serialization_alias="from")
    to: date
    tz: str
    visits_per_place_per_day: list[VisitsPerDay]
    median_dwell_s: list[MedianDwell]
    pushes: Pushes
    pushes_per_day: list[PushesPerDay]
    tasks: Tasks


def _zone(name: str) -> ZoneInfo:
    try:
        return time_zone(name)
    except UnknownTimeZone as error:
        raise ValidationFailed("bad time zone", [Problem("tz", str(error))]) from error


def _day(value: date | None, field: str) -> date | None:
    """A day between 2000 and 2099, as for events and visits: the range's end plus a day must still be a date."""
    if value is not None and not EARLIEST.date() <= value < LATEST.date():
        reason = f"must lie between {EARLIEST.date()} and {LATEST.date() - timedelta(days=1)}"
        raise ValidationFailed("day out of range", [Problem(field, reason, "out_of_range")])
    return value


def _range(first: date | None, last: date | None, zone: ZoneInfo) -> tuple[date, date]:
    first, last = _day(first, "from"), _day(last, "to")
    last = last or datetime.now(UTC).astimezone(zone).date()
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise ValidationFailed("bad range", [Problem("from", "must not be after 'to'")])
    if (last - first).days + 1 > MAX_DAYS:
        raise ValidationFailed("range too long", [Problem("to", f"at most {MAX_DAYS} days from 'from'")])
    return first, last


@router.get("/analytics", response_model=Analytics)
async def analytics(
    principal: PrincipalDep,
    uow: UowDep,
    from_: Annotated[
        IsoDate | None, Query(alias="from", description="YYYY-MM-DD, inclusive; default 29 days before to")
    ] = None,
    to: Annotated[IsoDate | None, Query(description="YYYY-MM-DD, inclusive; default today")] = None,
    tz: Annotated[str, Query(max_length=64, description="IANA zone the days are counted in")] = "UTC",
    include_late: Annotated[
        bool,
        Query(description="Count visits known only from late fixes (offline uploads); false counts live ones only"),
    ] = True,
) -> dict[str, Any]:
    zone = _zone(tz)
    first, last = _range(from_, to, zone)
    params = {
        "org": principal.organisation_id,
        "tz": tz,
        "start": datetime.combine(first, time(0), tzinfo=zone),
        "end": datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone),
        "include_late": include_late,
    }
    session = uow.session
    visits = (await session.execute(_VISITS, params)).mappings().all()
    dwell = (await session.execute(_DWELL, params)).mappings().all()
    pushes = (await session.execute(_PUSHES, params)).mappings().all()
    tasks = (await session.execute(_TASKS, params)).mappings().one()
    return {
        "from_": first,
        "to": last,
        "tz": tz,
        "visits_per_place_per_day": [dict(r) for r in visits],
        "median_dwell_s": [dict(r) for r in dwell],
        "pushes": {k: sum(int(r[k]) for r in pushes) for k in ("sent", "opened", "notifications")},
        "pushes_per_day": [dict(r) for r in pushes],
        "tasks": dict(tasks),
    }

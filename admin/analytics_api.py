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

from geofences.activity import ActivityRepository
from infra.deps import PrincipalDep, UowDep
from infra.http import IsoDate
from kernel.errors import Problem, ValidationFailed
from kernel.timezones import UnknownTimeZone, time_zone
from notifications import repository
from services.activity import EARLIEST, LATEST

router = APIRouter(prefix="/admin/v1", tags=["admin: analytics"])

DEFAULT_DAYS = 30
MAX_DAYS = 366


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
    organisation_id = principal.organisation_id
    start = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
    activity = ActivityRepository(uow.session)
    visits = await activity.visits_per_day(organisation_id, tz=tz, start=start, end=end, include_late=include_late)
    dwell = await activity.median_dwell(organisation_id, start=start, end=end, include_late=include_late)
    pushes = await repository.pushes_per_day(uow.session, organisation_id, tz=tz, start=start, end=end)
    tasks = await repository.task_times(uow.session, organisation_id, start=start, end=end)
    return {
        "from_": first,
        "to": last,
        "tz": tz,
        "visits_per_place_per_day": visits,
        "median_dwell_s": dwell,
        "pushes": {k: sum(int(r[k]) for r in pushes) for k in ("sent", "opened", "notifications")},
        "pushes_per_day": pushes,
        "tasks": tasks,
    }

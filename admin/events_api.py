"""Admin REST API: the events and visits the geofence engine recorded, filtered and paged, as JSON or CSV.

Newest first, by id (the order the server recorded them; `occurred_at` is the device's time and can be earlier
for a fix that arrived late). `cursor` is an id: pass the previous page's `next_cursor` (or the last id you saw)
to go on below it. `from` (inclusive) and `to` (exclusive) bound `occurred_at` of events and `started_at` of
visits; they need a time zone and lie between 2000 and 2100.

With `Accept: text/csv` (preferred at least as much as JSON) the same query answers CSV (header row, the same
columns): every matching row from `cursor` on, streamed in chunks of `page_size_max` rows, each chunk its own
short read, so memory stays bounded however long the download; `limit`, if given, caps the rows (continue with
`cursor` = the last row's id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from geofences.activity import EVENT_COLUMNS, VISIT_COLUMNS, EventFilter, VisitFilter
from infra.deps import MAX_ID, PrincipalDep, SettingsDep, UowDep, resources_of
from infra.http import IsoDateTime
from infra.settings import Settings
from kernel.errors import Problem, ValidationFailed
from services import activity
from services.models import Role

router = APIRouter(prefix="/admin/v1", tags=["admin: activity"])

DEFAULT_LIMIT = 100

Id = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Cursor = Annotated[int | None, Query(ge=1, le=MAX_ID, description="next_cursor of the previous page (an id)")]
Limit = Annotated[
    int | None,
    Query(ge=1, description=f"rows per page, at most page_size_max; default {DEFAULT_LIMIT} (CSV: all rows)"),
]
From = Annotated[IsoDateTime | None, Query(alias="from", description="ISO 8601 with a time zone; inclusive")]
To = Annotated[IsoDateTime | None, Query(description="ISO 8601 with a time zone; exclusive")]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON page, or CSV with `Accept: text/csv`"}
}


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
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


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: int | None


class VisitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    place_id: int
    place_name: str
    device_id: int
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    checked_in: bool
    detected: bool


class VisitPage(BaseModel):
    items: list[VisitOut]
    next_cursor: int | None


def wants_csv(request: Request) -> bool:
    """Whether the Accept header asks for text/csv (q > 0) at least as much as for JSON."""
    weights: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[media] = max(q, weights.get(media, 0.0))
    csv_q = weights.get("text/csv", 0.0)
    return csv_q > 0 and csv_q >= weights.get("application/json", 0.0)


def _limit(limit: int | None, settings: Settings) -> int | None:
    if limit is not None and limit > settings.page_size_max:
        raise ValidationFailed("limit too large", [Problem("limit", f"at most {settings.page_size_max}", "too_large")])
    return limit


def _csv(name: str, first: str, rest: AsyncIterator[str]) -> Response:
    async def body() -> AsyncIterator[str]:
        yield first
        async for piece in rest:
            yield piece

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


@router.get("/events", response_model=EventPage, responses=CSV_RESPONSE)
async def list_events(
    request: Request,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    place_id: Id = None,
    device_id: Id = None,
    kind: Annotated[
        list[str] | None, Query(description="enter, exit, dwell, checkin, checkout; repeat or comma-separate")
    ] = None,
    zone: Annotated[Literal["building", "approach"] | None, Query()] = None,
    late: Annotated[bool | None, Query(description="only events from fixes that arrived late (or only not)")] = None,
    from_: From = None,
    to: To = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Response | EventPage:
    """What the geofence engine decided, newest first; another organisation's ids match nothing."""
    principal.require(Role.viewer)
    start, end = activity.check_range(from_, to)
    where = EventFilter(
        organisation_id=principal.organisation_id,
        place_id=place_id,
        device_id=device_id,
        kinds=activity.parse_kinds(kind),
        zone=zone,
        late=late,
        start=start,
        end=end,
    )
    size = _limit(limit, settings)
    if wants_csv(request):
        chunks = activity.event_chunks(
            resources_of(request).session_factory, where, cursor=cursor, limit=size, chunk=settings.page_size_max
        )
        pieces = activity.csv_chunks(chunks, EVENT_COLUMNS)
        return _csv("events", await anext(pieces), pieces)  # the first read fails as a proper error
    rows, next_cursor = await activity.event_page(uow, where, cursor=cursor, limit=size or DEFAULT_LIMIT)
    return EventPage(items=[EventOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/visits", response_model=VisitPage, responses=CSV_RESPONSE)
async def list_visits(
    request: Request,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    place_id: Id = None,
    device_id: Id = None,
    open_: Annotated[bool | None, Query(alias="open", description="true: not ended yet; false: ended")] = None,
    from_: From = None,
    to: To = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Response | VisitPage:
    """Stays of devices at places, newest first; `from`/`to` bound `started_at`."""
    principal.require(Role.viewer)
    start, end = activity.check_range(from_, to)
    where = VisitFilter(
        organisation_id=principal.organisation_id,
        place_id=place_id,
        device_id=device_id,
        start=start,
        end=end,
        open=open_,
    )
    size = _limit(limit, settings)
    if wants_csv(request):
        chunks = activity.visit_chunks(
            resources_of(request).session_factory, where, cursor=cursor, limit=size, chunk=settings.page_size_max
        )
        pieces = activity.csv_chunks(chunks, VISIT_COLUMNS)
        return _csv("visits", await anext(pieces), pieces)
    rows, next_cursor = await activity.visit_page(uow, where, cursor=cursor, limit=size or DEFAULT_LIMIT)
    return VisitPage(items=[VisitOut.model_validate(r) for r in rows], next_cursor=next_cursor)

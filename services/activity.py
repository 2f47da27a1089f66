"""Reading what the geofence engine decided, for operators: one page of events or visits (the admin API), every
page in short chunks (CSV downloads, `placecast events`), and CSV that is safe to open in a spreadsheet.

Read-only: nothing here writes or commits. Order and cursor are the repository's (`geofences/activity.py`):
newest first by id, the cursor being the last id seen.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from geofences.activity import (
    EVENT_KINDS,
    ActivityRepository,
    EventFilter,
    EventRow,
    VisitFilter,
    VisitRow,
)
from kernel.errors import Problem, ValidationFailed
from kernel.uow import UnitOfWork

# No fix is accepted from before 2000 (mobile_api/schemas.py); nothing this service records is after 2100.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

Row = TypeVar("Row", EventRow, VisitRow)
SessionFactory = async_sessionmaker[AsyncSession]


# ---- input checks ----


def check_time(value: datetime | None, field: str) -> datetime | None:
    """A time bound as UTC, or a 422: it must carry a time zone and lie between 2000 and 2100."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationFailed(
            "a time needs a time zone",
            [Problem(field, "give a time zone, e.g. 2025-03-10T08:00:00Z or 2025-03-10T10:00:00+02:00", "timezone")],
        )
    out_of_range = ValidationFailed(
        "time out of range",
        [Problem(field, f"must lie between {EARLIEST.date()} and {LATEST.date()}", "out_of_range")],
    )
    # Checked on the year first: converting year 1 or 9999 with an offset to UTC would overflow.
    if not EARLIEST.year - 1 <= value.year <= LATEST.year:
        raise out_of_range
    value = value.astimezone(UTC)
    if not EARLIEST <= value <= LATEST:
        raise out_of_range
    return value


def check_range(
    start: datetime | None, end: datetime | None, *, start_field: str = "from", end_field: str = "to"
) -> tuple[datetime | None, datetime | None]:
    start, end = check_time(start, start_field), check_time(end, end_field)
    if start is not None and end is not None and start > end:
        raise ValidationFailed("bad time range", [Problem(start_field, f"must not be after '{end_field}'", "range")])
    return start, end


def parse_kinds(values: Iterable[str] | None, field: str = "kind") -> tuple[str, ...]:
    """Event kinds from repeated parameters and/or comma lists (`kind=enter&kind=exit`, `kind=enter,exit`)."""
    kinds: list[str] = []
    for value in values or ():
        for part in value.split(","):
            kind = part.strip().lower()
            if not kind:
                continue
            if kind not in EVENT_KINDS:
                raise ValidationFailed(
                    "unknown event kind",
                    [Problem(field, f"unknown kind {kind[:40]!r}; expected any of {', '.join(EVENT_KINDS)}", "enum")],
                )
            if kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


_AGO = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None, field: str = "since") -> datetime:
    """A time `text` before now ("90m", "2h", "1d", "1w") or an ISO 8601 time or date (no zone: UTC), as UTC."""
    now = now or datetime.now(UTC)
    ago = _AGO.match(text)
    if ago:
        try:
            value = now - timedelta(seconds=int(ago.group(1)) * _UNIT_S[ago.group(2).lower()])
        except OverflowError:  # thousands of years ago
            value = datetime.min.replace(tzinfo=UTC)
    else:
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError as error:
            raise ValidationFailed(
                "bad time", [Problem(field, "expected e.g. 30m, 2h, 1d, 1w or an ISO 8601 time", "format")]
            ) from error
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    checked = check_time(value, field)
    assert checked is not None
    return checked


# ---- one page (the API) ----


async def _page(
    fetch: Callable[[int | None, int], Awaitable[list[Row]]], cursor: int | None, limit: int
) -> tuple[list[Row], int | None]:
    rows = await fetch(cursor, limit + 1)
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


async def event_page(
    uow: UnitOfWork, where: EventFilter, *, cursor: int | None, limit: int
) -> tuple[list[EventRow], int | None]:
    """Up to `limit` events below `cursor`, newest first, and the cursor of the next page (None: the last)."""
    repository = ActivityRepository(uow.session)
    return await _page(lambda before, size: repository.events(where, before_id=before, limit=size), cursor, limit)


async def visit_page(
    uow: UnitOfWork, where: VisitFilter, *, cursor: int | None, limit: int
) -> tuple[list[VisitRow], int | None]:
    repository = ActivityRepository(uow.session)
    return await _page(lambda before, size: repository.visits(where, before_id=before, limit=size), cursor, limit)


# ---- every page, in chunks (CSV, CLI) ----


async def _chunks(
    factory: SessionFactory,
    fetch: Callable[[ActivityRepository, int | None, int], Awaitable[list[Row]]],
    cursor: int | None,
    limit: int | None,
    chunk: int,
) -> AsyncIterator[list[Row]]:
    """Each chunk is one short read in its own session (rolled back, never committed), so a long download holds
    no transaction open and at most `chunk` rows in memory. Paging on the id skips nothing and repeats nothing."""
    remaining = limit
    while remaining is None or remaining > 0:
        size = chunk if remaining is None else min(chunk, remaining)
        async with factory() as session:
            rows = await fetch(ActivityRepository(session), cursor, size)
        if rows:
            yield rows
        if len(rows) < size:
            return
        cursor = rows[-1].id
        if remaining is not None:
            remaining -= len(rows)


def event_chunks(
    factory: SessionFactory, where: EventFilter, *, cursor: int | None = None, limit: int | None = None, chunk: int
) -> AsyncIterator[list[EventRow]]:
    """Every matching event below `cursor` (at most `limit` if given), newest first, `chunk` rows at a time."""
    return _chunks(
        factory, lambda repo, before, size: repo.events(where, before_id=before, limit=size), cursor, limit, chunk
    )


def visit_chunks(
    factory: SessionFactory, where: VisitFilter, *, cursor: int | None = None, limit: int | None = None, chunk: int
) -> AsyncIterator[list[VisitRow]]:
    return _chunks(
        factory, lambda repo, before, size: repo.visits(where, before_id=before, limit=size), cursor, limit, chunk
    )


# ---- CSV ----

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """One CSV cell: empty for None, true/false, times in UTC ISO 8601; text that a spreadsheet would run as a
    formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text(rows: Iterable[EventRow | VisitRow], columns: Sequence[str], *, header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF line ends, fields with commas, quotes or newlines quoted
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(getattr(row, column)) for column in columns])
    return out.getvalue()


async def csv_chunks(chunks: AsyncIterator[list[Row]], columns: Sequence[str]) -> AsyncIterator[str]:
    """The header row with the first chunk, then one piece of CSV text per chunk (a header alone if none)."""
    header = True
    async for rows in chunks:
        yield csv_text(rows, columns, header=header)
        header = False
    if header:
        yield csv_text((), columns, header=True)

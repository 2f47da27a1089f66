"""Raw fixes are kept for a configurable window, then purged; events and visits stay.

Fixes live in daily partitions, so purging is `DROP TABLE` of whole days (no vacuum debt); only
stray rows in the DEFAULT partition are deleted row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class PurgeResult:
    dropped_partitions: list[str]
    deleted_rows: int


async def purge_old_fixes(session: AsyncSession, retention_days: int, today: date | None = None) -> PurgeResult:
    today = today or datetime.now(UTC).date()
    cutoff = today - timedelta(days=retention_days)
    partitions = (
        await session.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'fixes'"
            )
        )
    ).scalars()
    dropped = []
    for name in partitions:
        suffix = name.removeprefix("fixes_")
        if not (suffix.isdigit() and len(suffix) == 8):
            continue  # the DEFAULT partition
        day = date(int(suffix[:4]), int(suffix[4:6]), int(suffix[6:]))
        if day < cutoff:
            await session.execute(text(f'DROP TABLE "{name}"'))
            dropped.append(name)
    deleted = await session.execute(
        text("DELETE FROM fixes_default WHERE received_at < :cutoff"),
        {"cutoff": datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)},
    )
    return PurgeResult(sorted(dropped), int(deleted.rowcount or 0))  # type: ignore[attr-defined]


async def ensure_partitions(session: AsyncSession, days_ahead: int = 7) -> None:
    await session.execute(text("SELECT placecast_ensure_fix_partitions(0, :ahead)"), {"ahead": days_ahead})

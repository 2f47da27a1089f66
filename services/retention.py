"""Raw fixes are kept for a configurable window, then purged; events and visits stay.

Fixes live in daily partitions, so purging is `DROP TABLE` of whole days (no vacuum debt); only
stray rows in the DEFAULT partition are deleted row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services import tracking_repository as repository


@dataclass(frozen=True, slots=True)
class PurgeResult:
    dropped_partitions: list[str]
    deleted_rows: int


async def purge_old_fixes(session: AsyncSession, retention_days: int, today: date | None = None) -> PurgeResult:
    today = today or datetime.now(UTC).date()
    cutoff = today - timedelta(days=retention_days)
    dropped = []
    for name in await repository.fix_partitions(session):
        suffix = name.removeprefix("fixes_")
        if not (suffix.isdigit() and len(suffix) == 8):
            continue  # the DEFAULT partition
        day = date(int(suffix[:4]), int(suffix[4:6]), int(suffix[6:]))
        if day < cutoff:
            await repository.drop_fix_partition(session, name)
            dropped.append(name)
    deleted = await repository.delete_default_fixes(
        session, datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    )
    return PurgeResult(sorted(dropped), deleted)


async def ensure_partitions(session: AsyncSession, days_ahead: int = 7) -> None:
    await repository.ensure_fix_partitions(session, days_ahead)

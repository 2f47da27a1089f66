"""All SQL of the field workers' side of staff tasks (`staff_tasks.py`); the admin side's is
`notifications/content_repository.py`, escalation's `notifications/repository.py`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncSession

FIELDS = (
    "id, place_id, place_kind, team, title, body, status, ack_within_s, assigned_device_id, notified_at,"
    " acknowledged_at, done_at, escalated_at, note, created_at"
)


async def tasks_assigned_to(session: AsyncSession, organisation_id: int, device_id: int) -> list[RowMapping]:
    """The device's tasks (`FIELDS`), newest first, 200 at most."""
    rows = await session.execute(
        text(
            f"SELECT {FIELDS} FROM staff_tasks WHERE organisation_id = :o AND assigned_device_id = :d"
            " ORDER BY id DESC LIMIT 200"
        ),
        {"o": organisation_id, "d": device_id},
    )
    return list(rows.mappings())


async def task_for_update(session: AsyncSession, organisation_id: int, task_id: int) -> RowMapping | None:
    """The organisation's task (`FIELDS`), its row locked until the transaction ends."""
    found = await session.execute(
        text(f"SELECT {FIELDS} FROM staff_tasks WHERE id = :t AND organisation_id = :o FOR UPDATE"),
        {"t": task_id, "o": organisation_id},
    )
    return found.mappings().first()


async def mark_acknowledged(session: AsyncSession, task_id: int, at: datetime) -> None:
    await session.execute(
        text(
            "UPDATE staff_tasks SET status = 'acknowledged', acknowledged_at = :now, updated_at = now() WHERE id = :t"
        ),
        {"now": at, "t": task_id},
    )


async def mark_done(session: AsyncSession, task_id: int, at: datetime, acknowledged_at: Any, note: str | None) -> None:
    await session.execute(
        text(
            "UPDATE staff_tasks SET status = 'done', done_at = :now, acknowledged_at = :ack, note = :note,"
            " updated_at = now() WHERE id = :t"
        ),
        {"now": at, "ack": acknowledged_at, "note": note, "t": task_id},
    )

"""All SQL of the notification pipeline: facts for the rules, notifications, deliveries, tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from notifications.models import ContentItem
from notifications.rules import ContentRule, DeviceFacts, EventFacts


async def claim_outbox(session: AsyncSession, event_ids: Sequence[int] | None, limit: int = 500) -> list[int]:
    """Lock unprocessed outbox rows; another job holding them is skipped, never waited for."""
    where = "processed_at IS NULL" + (" AND event_id = ANY(CAST(:ids AS bigint[]))" if event_ids is not None else "")
    rows = await session.execute(
        text(f"SELECT event_id FROM outbox WHERE {where} ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"),
        {"ids": list(event_ids or []), "limit": limit},
    )
    return [int(r) for r in rows.scalars()]


async def mark_processed(session: AsyncSession, event_ids: Sequence[int]) -> None:
    await session.execute(
        text(
            "UPDATE outbox SET processed_at = now(), attempts = attempts + 1"
            " WHERE event_id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"ids": list(event_ids)},
    )


async def stale_outbox(session: AsyncSession, older_than_s: float, limit: int = 2000) -> list[int]:
    rows = await session.execute(
        text(
            "SELECT event_id FROM outbox WHERE processed_at IS NULL"
            " AND created_at < now() - make_interval(secs => :age) ORDER BY id LIMIT :limit"
        ),
        {"age": older_than_s, "limit": limit},
    )
    return [int(r) for r in rows.scalars()]


async def event_facts(session: AsyncSession, event_ids: Sequence[int]) -> list[tuple[EventFacts, int, int]]:
    """(facts, device_id, organisation_id) per event, in id order."""
    rows = await session.execute(
        text(
            "SELECT e.id, e.kind, e.zone, e.place_id, e.device_id, e.organisation_id, e.occurred_at,"
            " p.kind AS place_kind, p.timezone, p.opening_hours"
            " FROM events e JOIN places p ON p.id = e.place_id"
            " WHERE e.id = ANY(CAST(:ids AS bigint[])) ORDER BY e.id"
        ),
        {"ids": list(event_ids)},
    )
    return [
        (
            EventFacts(r.id, r.kind, r.zone, r.place_id, r.place_kind, r.timezone, r.opening_hours, r.occurred_at),
            r.device_id,
            r.organisation_id,
        )
        for r in rows
    ]


async def device_facts(session: AsyncSession, device_ids: Sequence[int]) -> dict[int, tuple[DeviceFacts, Any]]:
    rows = await session.execute(
        text(
            "SELECT id, role, tags, consents, timezone, fcm_token, fcm_token_active, team, locale"
            " FROM devices WHERE id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"ids": list(device_ids)},
    )
    return {
        r.id: (
            DeviceFacts(
                r.id,
                "staff" if str(r.role) == "staff" else "visitor",
                frozenset(r.tags or ()),
                dict(r.consents or {}),
                r.timezone,
                bool(r.fcm_token and r.fcm_token_active),
            ),
            r,
        )
        for r in rows
    }


async def content_rules(
    session: AsyncSession, organisation_id: int, place_id: int, place_kind: str
) -> tuple[list[ContentRule], dict[int, Any]]:
    rows = await session.execute(
        text(
            "SELECT * FROM content_items WHERE organisation_id = :o AND active AND (place_id = :p OR place_kind = :k)"
        ),
        {"o": organisation_id, "p": place_id, "k": place_kind},
    )
    rules, items = [], {}
    columns = {c.key for c in ContentItem.__table__.columns}
    for row in rows.mappings():
        values = {k: v for k, v in row.items() if k in columns}
        try:
            rules.append(ContentRule.from_model_values(**values))
        except ValueError:
            continue  # a broken row must not stop the others; the admin UI validates on save
        items[row["id"]] = row
    return rules, items


async def send_history(
    session: AsyncSession, device_id: int, place_id: int, since: datetime
) -> tuple[dict[int, datetime], int]:
    last = await session.execute(
        text(
            "SELECT content_id, max(created_at) FROM notifications WHERE device_id = :d AND place_id = :p"
            " AND content_id IS NOT NULL GROUP BY content_id"
        ),
        {"d": device_id, "p": place_id},
    )
    today = await session.execute(
        text(
            "SELECT count(*) FROM notifications WHERE device_id = :d AND content_id IS NOT NULL"
            " AND created_at >= :since"
        ),
        {"d": device_id, "since": since},
    )
    return {int(r[0]): r[1] for r in last}, int(today.scalar_one())


async def insert_notification(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """None when this event already produced this content or task: a retried job sends nothing twice."""
    target = (
        "(event_id, content_id) WHERE content_id IS NOT NULL"
        if values.get("content_id")
        else ("(event_id, task_id) WHERE task_id IS NOT NULL")
    )
    row = await session.execute(
        text(
            "INSERT INTO notifications (organisation_id, device_id, event_id, content_id, task_id, place_id,"
            " title, body, data, created_at) VALUES (:organisation_id, :device_id, :event_id, :content_id,"
            " :task_id, :place_id, :title, :body, CAST(:data AS jsonb), :created_at)"
            f" ON CONFLICT {target} DO NOTHING RETURNING id"
        ),
        values,
    )
    return row.scalar_one_or_none()


async def add_delivery(session: AsyncSession, notification_id: int, channel: str, status: str = "pending") -> None:
    await session.execute(
        text(
            "INSERT INTO deliveries (notification_id, channel, status, sent_at)"
            " VALUES (:n, :c, CAST(:s AS text), CASE WHEN CAST(:s AS text) = 'sent' THEN now() END)"
            " ON CONFLICT DO NOTHING"
        ),
        {"n": notification_id, "c": channel, "s": status},
    )


async def open_tasks_for(
    session: AsyncSession, organisation_id: int, place_id: int, place_kind: str, team: str | None
) -> list[Any]:
    rows = await session.execute(
        text(
            "SELECT * FROM staff_tasks WHERE organisation_id = :o AND status IN ('open', 'notified')"
            " AND (place_id = :p OR place_kind = :k) AND (team IS NULL OR team = :t) ORDER BY id FOR UPDATE"
        ),
        {"o": organisation_id, "p": place_id, "k": place_kind, "t": team},
    )
    return list(rows.mappings())


async def mark_task_notified(session: AsyncSession, task_id: int, device_id: int, at: datetime) -> None:
    await session.execute(
        text(
            "UPDATE staff_tasks SET status = 'notified', assigned_device_id = :d, notified_at = :at,"
            " updated_at = now() WHERE id = :t AND status = 'open'"
        ),
        {"t": task_id, "d": device_id, "at": at},
    )

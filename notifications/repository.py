"""All SQL of the notification pipeline: facts for the rules, notifications, deliveries, tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from notifications.models import ContentItem
from notifications.rules import ContentRule, DeviceFacts, EventFacts

# Whether a device can be pushed to: through the channel it registered last, with that channel's target active.
PUSH_READY = (
    "CASE WHEN push_channel = 'webpush' THEN webpush_endpoint IS NOT NULL AND webpush_active"
    " ELSE fcm_token IS NOT NULL AND fcm_token_active END"
)


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
            "SELECT e.id, e.kind, e.zone, e.place_id, e.device_id, e.organisation_id, e.occurred_at, e.late,"
            " p.kind AS place_kind, p.timezone, p.opening_hours"
            " FROM events e JOIN places p ON p.id = e.place_id"
            " WHERE e.id = ANY(CAST(:ids AS bigint[])) ORDER BY e.id"
        ),
        {"ids": list(event_ids)},
    )
    return [
        (
            EventFacts(
                r.id, r.kind, r.zone, r.place_id, r.place_kind, r.timezone, r.opening_hours, r.occurred_at, r.late
            ),
            r.device_id,
            r.organisation_id,
        )
        for r in rows
    ]


async def device_facts(session: AsyncSession, device_ids: Sequence[int]) -> dict[int, tuple[DeviceFacts, Any]]:
    rows = await session.execute(
        text(
            f"SELECT id, role, tags, consents, timezone, {PUSH_READY} AS push_ready, team, locale"
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
                bool(r.push_ready),
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


async def inbox_page(
    session: AsyncSession, device_id: int, *, after: int = 0, before: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """A device's notifications with ids above `after` (and below `before` when given), newest first."""
    older = " AND id < :before" if before else ""
    rows = await session.execute(
        text(
            "SELECT id, title, body, data, place_id, content_id, task_id, created_at, opened_at FROM notifications"
            f" WHERE device_id = :d AND id > :after{older} ORDER BY id DESC LIMIT :limit"
        ),
        {"d": device_id, "after": after, "before": before, "limit": limit},
    )
    return [dict(row) for row in rows.mappings()]


async def mark_opened(session: AsyncSession, device_id: int, notification_id: int) -> datetime | None:
    """When the device first opened the notification (now, if this is the first time); None if not its own."""
    row = await session.execute(
        text(
            "UPDATE notifications SET opened_at = COALESCE(opened_at, now()) WHERE id = :n AND device_id = :d"
            " RETURNING opened_at"
        ),
        {"n": notification_id, "d": device_id},
    )
    opened_at: datetime | None = row.scalar_one_or_none()
    return opened_at


# A push counts as sent once FCM accepted it; an inbox-only notification is not a push but can still be opened.
_PUSHES_PER_DAY = text(
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
_TASK_TIMES = text(
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


async def pushes_per_day(
    session: AsyncSession, organisation_id: int, *, tz: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Notifications made in [start, end) per calendar day in `tz`: day, notifications, sent (pushes FCM
    accepted), opened."""
    rows = await session.execute(_PUSHES_PER_DAY, {"org": organisation_id, "tz": tz, "start": start, "end": end})
    return [dict(row) for row in rows.mappings()]


async def task_times(session: AsyncSession, organisation_id: int, *, start: datetime, end: datetime) -> dict[str, Any]:
    """The organisation's staff tasks: median_ack_s and median_done_s of those acknowledged / done in
    [start, end), how many were done then, and how many are open now."""
    rows = await session.execute(_TASK_TIMES, {"org": organisation_id, "start": start, "end": end})
    return dict(rows.mappings().one())


# The first key of the two-key advisory locks that serialise push decisions per device (any constant no other
# lock in this database uses; the second key is the device id, folded into int4).
_DECISION_LOCK = 0x50C0


async def lock_push_decisions(session: AsyncSession, device_ids: Sequence[int]) -> None:
    """Hold every device's decision lock until this transaction ends; taken before its history is read.

    Cap and cooldown are decided from the history in the database plus what this job adds: two jobs (the
    overlapping batches of one job, two workers) deciding for one device at once would each see the other's
    pushes missing. The second waits here until the first commits, then reads its pushes. Taken in device order,
    so two jobs never wait for each other; advisory, so fixes and token updates of the device never wait.
    """
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(:ns, k) FROM (SELECT DISTINCT CAST(id % 2147483647 AS int) AS k"
            " FROM unnest(CAST(:ids AS bigint[])) AS id ORDER BY k) AS keys"
        ),
        {"ns": _DECISION_LOCK, "ids": sorted(set(device_ids))},
    )


async def batch_history(
    session: AsyncSession, day_starts: dict[int, datetime]
) -> tuple[dict[tuple[int, int], dict[int, datetime]], dict[int, int]]:
    """For every device: last notification per (place, content), pushed or inbox only, which the cooldown keeps
    from repeating; and content pushes since its local midnight, which the daily cap counts (inbox-only
    notifications never buzzed, so they use no slot)."""
    ids = list(day_starts)
    last_rows = await session.execute(
        text(
            "SELECT device_id, place_id, content_id, max(created_at) FROM notifications"
            " WHERE device_id = ANY(CAST(:ids AS bigint[])) AND content_id IS NOT NULL"
            " GROUP BY device_id, place_id, content_id"
        ),
        {"ids": ids},
    )
    last: dict[tuple[int, int], dict[int, datetime]] = {}
    for device_id, place_id, content_id, at in last_rows:
        last.setdefault((device_id, place_id), {})[content_id] = at
    counts = await session.execute(
        text(
            "SELECT d.id, count(n.id) FROM unnest(CAST(:ids AS bigint[]), CAST(:since AS timestamptz[]))"
            " AS d(id, since) LEFT JOIN notifications n ON n.device_id = d.id AND n.content_id IS NOT NULL"
            " AND n.created_at >= d.since AND EXISTS (SELECT 1 FROM deliveries x"
            " WHERE x.notification_id = n.id AND x.channel = 'fcm') GROUP BY d.id"
        ),
        {"ids": ids, "since": [day_starts[i] for i in ids]},
    )
    return last, {int(d): int(c) for d, c in counts}


async def insert_notifications(session: AsyncSession, rows: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """Content notifications in one statement; those already made for (event, content) are skipped.
    Returns (notification id, event id, content id) of the new ones."""
    result = await session.execute(
        text(
            "INSERT INTO notifications (organisation_id, device_id, event_id, content_id, place_id, title, body,"
            " data, created_at) SELECT * FROM unnest(CAST(:org AS bigint[]), CAST(:dev AS bigint[]),"
            " CAST(:ev AS bigint[]), CAST(:content AS bigint[]), CAST(:place AS bigint[]), CAST(:title AS text[]),"
            " CAST(:body AS text[]), CAST(:data AS jsonb[]), CAST(:at AS timestamptz[]))"
            " ON CONFLICT (event_id, content_id) WHERE content_id IS NOT NULL DO NOTHING"
            " RETURNING id, event_id, content_id"
        ),
        {
            "org": [r["organisation_id"] for r in rows],
            "dev": [r["device_id"] for r in rows],
            "ev": [r["event_id"] for r in rows],
            "content": [r["content_id"] for r in rows],
            "place": [r["place_id"] for r in rows],
            "title": [r["title"] for r in rows],
            "body": [r["body"] for r in rows],
            "data": [r["data"] for r in rows],
            "at": [r["created_at"] for r in rows],
        },
    )
    return [(int(n), int(e), int(c)) for n, e, c in result]


async def add_deliveries(
    session: AsyncSession, notification_ids: list[int], channel: str, status: str = "pending"
) -> None:
    if notification_ids:
        await session.execute(
            text(
                "INSERT INTO deliveries (notification_id, channel, status, sent_at)"
                " SELECT unnest(CAST(:ids AS bigint[])), :c, CAST(:s AS text),"
                " CASE WHEN CAST(:s AS text) = 'sent' THEN now() END ON CONFLICT DO NOTHING"
            ),
            {"ids": notification_ids, "c": channel, "s": status},
        )


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


@dataclass(frozen=True, slots=True)
class LiveNotification:
    """What the admin UI's live feed shows of one notification: its push's status, its place's name."""

    id: int
    organisation_id: int
    device_id: int
    place_id: int | None
    place_name: str | None
    title: str
    task_id: int | None
    push_status: str | None  # None: no push (inbox only, or a task)


async def live_notifications(session: AsyncSession, notification_ids: Sequence[int]) -> list[LiveNotification]:
    rows = await session.execute(
        text(
            "SELECT n.id, n.organisation_id, n.device_id, n.place_id, p.name AS place_name, n.title, n.task_id,"
            " d.status AS push_status"
            " FROM notifications n LEFT JOIN deliveries d ON d.notification_id = n.id AND d.channel = 'fcm'"
            " LEFT JOIN places p ON p.id = n.place_id WHERE n.id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"ids": list(notification_ids)},
    )
    return [LiveNotification(**row) for row in rows.mappings()]


async def overdue_tasks(session: AsyncSession, now: datetime) -> list[Any]:
    """Tasks notified but not acknowledged within their deadline and not escalated yet, locked; a task another
    job holds is skipped."""
    rows = await session.execute(
        text(
            "SELECT * FROM staff_tasks WHERE status = 'notified' AND escalated_at IS NULL"
            " AND notified_at + make_interval(secs => ack_within_s) <= :now ORDER BY id FOR UPDATE SKIP LOCKED"
        ),
        {"now": now},
    )
    return list(rows.mappings())


async def supervisors(session: AsyncSession, organisation_id: int, team: str | None) -> list[Any]:
    """The organisation's supervisor devices (of `team`, or all when the task has none) that are not revoked."""
    rows = await session.execute(
        text(
            f"SELECT id, {PUSH_READY} AS push_ready FROM devices WHERE organisation_id = :o AND is_supervisor"
            " AND (CAST(:t AS text) IS NULL OR team = :t) AND revoked_at IS NULL"
        ),
        {"o": organisation_id, "t": team},
    )
    return list(rows)


async def mark_escalated(session: AsyncSession, task_id: int, at: datetime) -> None:
    await session.execute(text("UPDATE staff_tasks SET escalated_at = :now WHERE id = :t"), {"now": at, "t": task_id})

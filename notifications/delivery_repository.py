"""The SQL of push deliveries (`notifications/delivery.py`): claim with a lease, settle with the push service's
answer (FCM or Web Push: the delivery's channel stays `fcm`, meaning "pushed"; the device's `push_channel` says
which service)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_CLAIM = """
UPDATE deliveries d SET status = 'sending', attempts = d.attempts + 1,
       next_attempt_at = now() + make_interval(secs => :lease)
FROM notifications n JOIN devices dv ON dv.id = n.device_id LEFT JOIN content_items c ON c.id = n.content_id
WHERE d.notification_id = n.id AND d.id IN (
    SELECT id FROM deliveries
    WHERE channel = 'fcm' AND {which}
    ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.notification_id, d.attempts, n.title, n.body, n.data, dv.id AS device_id,
          dv.fcm_token, dv.fcm_token_active, dv.push_target_kind, COALESCE(c.silent, false) AS silent,
          dv.push_channel, dv.webpush_endpoint, dv.webpush_p256dh, dv.webpush_auth, dv.webpush_active
"""
_WHICH = {
    "fresh": "status = 'pending' AND notification_id = ANY(CAST(:ids AS bigint[]))",
    "due": "(status = 'pending' OR status IN ('retry', 'sending')) AND COALESCE(next_attempt_at, now()) <= now()",
}


async def claim(
    session: AsyncSession, which: Literal["fresh", "due"], ids: Sequence[int], limit: int, lease_s: float
) -> list[Any]:
    """Marks deliveries `sending` with a lease and returns what their pushes need: the fresh ones of these
    notifications, or every one due (pending, retry time reached, or lease expired)."""
    rows = await session.execute(
        text(_CLAIM.format(which=_WHICH[which])), {"ids": list(ids), "limit": limit, "lease": lease_s}
    )
    return list(rows)


async def mark_sent(session: AsyncSession, sent: Sequence[tuple[int, str | None]]) -> None:
    """(delivery id, FCM message id) pairs, settled in one statement: the common case."""
    await session.execute(
        text(
            "UPDATE deliveries d SET status = 'sent', provider_id = s.provider_id, last_error = NULL,"
            " next_attempt_at = NULL, sent_at = now()"
            " FROM unnest(CAST(:ids AS bigint[]), CAST(:providers AS text[])) AS s(id, provider_id)"
            " WHERE d.id = s.id"
        ),
        {"ids": [i for i, _ in sent], "providers": [p for _, p in sent]},
    )


async def deactivate_token(session: AsyncSession, device_id: int, token: str) -> int:
    """Switches off this device's token if it is still this one; returns 1 if it was, else 0."""
    result = await session.execute(
        text("UPDATE devices SET fcm_token_active = false WHERE id = :d AND fcm_token = :t"),
        {"d": device_id, "t": token},
    )
    return int(getattr(result, "rowcount", 0))


async def deactivate_subscription(session: AsyncSession, device_id: int, endpoint: str) -> int:
    """Switches off this device's Web Push subscription if it is still the one at `endpoint`; returns 1 if so."""
    result = await session.execute(
        text("UPDATE devices SET webpush_active = false WHERE id = :d AND webpush_endpoint = :e"),
        {"d": device_id, "e": endpoint},
    )
    return int(getattr(result, "rowcount", 0))


async def schedule_retry(session: AsyncSession, delivery_id: int, error: str, delay_s: float) -> None:
    await session.execute(
        text(
            "UPDATE deliveries SET status = 'retry', last_error = :e,"
            " next_attempt_at = now() + make_interval(secs => :s) WHERE id = :id"
        ),
        {"id": delivery_id, "e": error[:500], "s": delay_s},
    )


async def settle(
    session: AsyncSession, delivery_id: int, status: str, *, provider_id: str | None = None, error: str | None = None
) -> None:
    await session.execute(
        text(
            "UPDATE deliveries SET status = CAST(:s AS text), provider_id = :p, last_error = :e,"
            " next_attempt_at = NULL,"
            " sent_at = CASE WHEN CAST(:s AS text) = 'sent' THEN now() ELSE sent_at END WHERE id = :id"
        ),
        {"s": status, "p": provider_id, "e": (error or None) and error[:500], "id": delivery_id},
    )

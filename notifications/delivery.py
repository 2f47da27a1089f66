"""Push deliveries: claim with a lease, send through a `PushSender`, record what FCM answered.

A delivery is claimed (`sending`, lease in `next_attempt_at`) in its own committed transaction before
the send, and settled after it. A worker told to stop (SIGTERM) finishes what it started, so nothing goes
twice. Only a worker killed (SIGKILL, power loss) while pushes are on the wire leaves pushes whose fate is
unknown: FCM v1 has no idempotency key, so they are sent again after the lease. They are at most the sender's
in-flight bound (`fcm_in_flight`), and the collapse key (the notification id) makes the phone show each once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.uow import unit_of_work
from notifications.push import PushMessage, PushOutcome, PushSender

LEASE_S = 60
MAX_ATTEMPTS = 6

CLAIM = """
UPDATE deliveries d SET status = 'sending', attempts = d.attempts + 1,
       next_attempt_at = now() + make_interval(secs => :lease)
FROM notifications n JOIN devices dv ON dv.id = n.device_id LEFT JOIN content_items c ON c.id = n.content_id
WHERE d.notification_id = n.id AND d.id IN (
    SELECT id FROM deliveries
    WHERE channel = 'fcm' AND {which}
    ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.notification_id, d.attempts, n.title, n.body, n.data, dv.id AS device_id,
          dv.fcm_token, dv.fcm_token_active, dv.push_target_kind, COALESCE(c.silent, false) AS silent
"""
FRESH = "status = 'pending' AND notification_id = ANY(CAST(:ids AS bigint[]))"
DUE = "(status = 'pending' OR status IN ('retry', 'sending')) AND COALESCE(next_attempt_at, now()) <= now()"


@dataclass
class SendReport:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    deactivated: int = 0
    outcomes: list[PushOutcome] = field(default_factory=list)


def backoff_s(attempt: int) -> float:
    return float(min(3600, 2**attempt * 2) * (0.75 + random.random() / 2))


async def _claim(
    factory: async_sessionmaker[AsyncSession], which: str, ids: Sequence[int], limit: int, lease_s: float
) -> list[Any]:
    async with unit_of_work(factory) as uow:
        rows = await uow.session.execute(
            text(CLAIM.format(which=which)), {"ids": list(ids), "limit": limit, "lease": lease_s}
        )
        return list(rows)


def _message(row: Any) -> PushMessage:
    data = {str(k): str(v) for k, v in (row.data or {}).items()}
    return PushMessage(
        notification_id=row.notification_id,
        token=row.fcm_token,
        title=row.title,
        body=row.body,
        data=data,
        deep_link=data.get("deep_link"),
        collapse_key=f"n{row.notification_id}",
        target_kind=row.push_target_kind,
        silent=row.silent,
    )


async def send_deliveries(
    factory: async_sessionmaker[AsyncSession],
    sender: PushSender,
    notification_ids: Sequence[int] | None = None,
    limit: int = 2000,
    chunk: int = 50,
    lease_s: float = LEASE_S,
) -> SendReport:
    """Send the fresh deliveries of these notifications, or (ids None) every due retry and expired lease.

    Every chunk's outcomes are committed as soon as FCM has answered all of it.
    """
    rows = await _claim(factory, FRESH if notification_ids is not None else DUE, notification_ids or [], limit, lease_s)
    report = SendReport()
    # All chunks at once: the sender bounds how many pushes are in flight, and each chunk settles on its own.
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
    await asyncio.gather(*(_send_chunk(factory, sender, part, report) for part in chunks))
    return report


async def _send_chunk(
    factory: async_sessionmaker[AsyncSession], sender: PushSender, rows: list[Any], report: SendReport
) -> None:
    sendable = [r for r in rows if r.fcm_token and r.fcm_token_active]
    outcomes = await sender.send([_message(r) for r in sendable]) if sendable else []
    by_notification = {o.notification_id: o for o in outcomes}
    async with unit_of_work(factory) as uow:
        sent: list[tuple[int, str | None]] = []
        for row in rows:
            outcome = by_notification.get(row.notification_id)
            if outcome is None:
                await _settle(uow.session, row.id, "failed", error="no active push token")
                report.failed += 1
                continue
            report.outcomes.append(outcome)
            if outcome.status == "sent":
                sent.append((row.id, outcome.provider_id))
            else:
                await _apply(uow.session, row, outcome, report)
        if sent:  # the common case, settled in one statement
            await uow.session.execute(
                text(
                    "UPDATE deliveries d SET status = 'sent', provider_id = s.provider_id, last_error = NULL,"
                    " next_attempt_at = NULL, sent_at = now()"
                    " FROM unnest(CAST(:ids AS bigint[]), CAST(:providers AS text[])) AS s(id, provider_id)"
                    " WHERE d.id = s.id"
                ),
                {"ids": [i for i, _ in sent], "providers": [p for _, p in sent]},
            )
            report.sent += len(sent)


async def _apply(session: AsyncSession, row: Any, outcome: PushOutcome, report: SendReport) -> None:
    if outcome.status in ("unregistered", "invalid"):
        # The token this push went to is dead: stop using it until the app registers a new one. Only that token:
        # the app may have registered its next one while this push was on the wire, and FCM's answer about the
        # old one must not switch the new one off.
        dead = await session.execute(
            text("UPDATE devices SET fcm_token_active = false WHERE id = :d AND fcm_token = :t"),
            {"d": row.device_id, "t": row.fcm_token},
        )
        await _settle(session, row.id, "failed", error=f"{outcome.error_code}: {outcome.reason}")
        report.deactivated += getattr(dead, "rowcount", 0)
    elif outcome.status == "retry" and row.attempts < MAX_ATTEMPTS:
        delay = max(outcome.retry_after_s or 0.0, backoff_s(row.attempts))
        await session.execute(
            text(
                "UPDATE deliveries SET status = 'retry', last_error = :e,"
                " next_attempt_at = now() + make_interval(secs => :s) WHERE id = :id"
            ),
            {"id": row.id, "e": f"{outcome.error_code}: {outcome.reason}"[:500], "s": delay},
        )
        report.retry += 1
    else:
        await _settle(session, row.id, "failed", error=f"{outcome.error_code}: {outcome.reason}")
        report.failed += 1


async def _settle(
    session: AsyncSession,
    delivery_id: int,
    status: str,
    *,
    provider_id: str | None = None,
    error: str | None = None,
) -> None:
    await session.execute(
        text(
            "UPDATE deliveries SET status = CAST(:s AS text), provider_id = :p, last_error = :e,"
            " next_attempt_at = NULL,"
            " sent_at = CASE WHEN CAST(:s AS text) = 'sent' THEN now() ELSE sent_at END WHERE id = :id"
        ),
        {"s": status, "p": provider_id, "e": (error or None) and error[:500], "id": delivery_id},
    )

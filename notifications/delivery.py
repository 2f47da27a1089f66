"""Push deliveries: claim with a lease, send through a `PushSender`, record what FCM or the Web Push service answered.

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
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.uow import unit_of_work
from notifications import delivery_repository as repo
from notifications.push import PushMessage, PushOutcome, PushSender

LEASE_S = 60
MAX_ATTEMPTS = 6


@dataclass
class SendReport:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    deactivated: int = 0
    outcomes: list[PushOutcome] = field(default_factory=list)


def backoff_s(attempt: int) -> float:
    return float(min(3600, 2**attempt * 2) * (0.75 + random.random() / 2))


def _webpush(row: Any) -> bool:
    return bool(row.push_channel == "webpush")


def _target(row: Any) -> str | None:
    """Where this delivery's push goes: the device's Web Push endpoint or FCM target, whichever its channel says."""
    target = row.webpush_endpoint if _webpush(row) else row.fcm_token
    return str(target) if target else None


def _sendable(row: Any) -> bool:
    return bool(_target(row) and (row.webpush_active if _webpush(row) else row.fcm_token_active))


def _message(row: Any) -> PushMessage:
    data = {str(k): str(v) for k, v in (row.data or {}).items()}
    webpush = _webpush(row)
    return PushMessage(
        notification_id=row.notification_id,
        token=_target(row) or "",
        title=row.title,
        body=row.body,
        data=data,
        deep_link=data.get("deep_link"),
        collapse_key=f"n{row.notification_id}",
        target_kind=row.push_target_kind,
        silent=row.silent,
        channel="webpush" if webpush else "fcm",
        p256dh=row.webpush_p256dh if webpush else None,
        auth=row.webpush_auth if webpush else None,
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
    which: Literal["fresh", "due"] = "fresh" if notification_ids is not None else "due"
    async with unit_of_work(factory) as uow:  # committed before the send: the lease holds off other workers
        rows = await repo.claim(uow.session, which, notification_ids or [], limit, lease_s)
    report = SendReport()
    # All chunks at once: the sender bounds how many pushes are in flight, and each chunk settles on its own.
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
    await asyncio.gather(*(_send_chunk(factory, sender, part, report) for part in chunks))
    return report


async def _send_chunk(
    factory: async_sessionmaker[AsyncSession], sender: PushSender, rows: list[Any], report: SendReport
) -> None:
    sendable = [r for r in rows if _sendable(r)]
    outcomes = await sender.send([_message(r) for r in sendable]) if sendable else []
    by_notification = {o.notification_id: o for o in outcomes}
    async with unit_of_work(factory) as uow:
        sent: list[tuple[int, str | None]] = []
        for row in rows:
            outcome = by_notification.get(row.notification_id)
            if outcome is None:
                await repo.settle(uow.session, row.id, "failed", error="no active push token")
                report.failed += 1
                continue
            report.outcomes.append(outcome)
            if outcome.status == "sent":
                sent.append((row.id, outcome.provider_id))
            else:
                await _apply(uow.session, row, outcome, report)
        if sent:  # the common case, settled in one statement
            await repo.mark_sent(uow.session, sent)
            report.sent += len(sent)


async def _apply(session: AsyncSession, row: Any, outcome: PushOutcome, report: SendReport) -> None:
    if outcome.status in ("unregistered", "invalid"):
        # The token this push went to is dead: stop using it until the app registers a new one. Only that token:
        # the app may have registered its next one while this push was on the wire, and FCM's answer about the
        # old one must not switch the new one off. A Web Push subscription likewise, by its endpoint.
        if _webpush(row):
            report.deactivated += await repo.deactivate_subscription(session, row.device_id, row.webpush_endpoint)
        else:
            report.deactivated += await repo.deactivate_token(session, row.device_id, row.fcm_token)
        await repo.settle(session, row.id, "failed", error=f"{outcome.error_code}: {outcome.reason}")
    elif outcome.status == "retry" and row.attempts < MAX_ATTEMPTS:
        delay = max(outcome.retry_after_s or 0.0, backoff_s(row.attempts))
        await repo.schedule_retry(session, row.id, f"{outcome.error_code}: {outcome.reason}", delay)
        report.retry += 1
    else:
        await repo.settle(session, row.id, "failed", error=f"{outcome.error_code}: {outcome.reason}")
        report.failed += 1

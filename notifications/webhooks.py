"""Outgoing webhooks: each event POSTed, signed, to the subscribers of its organisation.

Delivery is at least once. A delivery row is written in the notification job's transaction, claimed with
a lease in its own committed transaction, sent, then settled; a worker dying between a subscriber's
answer and the settle makes the same delivery go again after the lease. Receivers therefore dedupe on
`delivery_id` (in the signed body and in `X-Placecast-Delivery`).

Signature (the scheme Stripe popularised, so receivers know it): `X-Placecast-Signature: t=<unix s>,v1=<hex>`
where hex = HMAC-SHA256(secret, f"{t}." + raw body). The timestamp is inside the MAC so a captured request
cannot be replayed later than the receiver's tolerance.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import httpx
import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.audit import record_audit
from kernel.errors import Conflict, NotFound
from kernel.sealing import Sealer, SealError
from kernel.uow import UnitOfWork, unit_of_work
from notifications.rules import EventKind
from notifications.webhook_repository import (
    DeliveryRecord,
    DueDelivery,
    Settlement,
    SubscriptionRecord,
    WebhookRepository,
)

log = structlog.get_logger(__name__)

EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
SIGNATURE_HEADER = "X-Placecast-Signature"
EVENT_HEADER = "X-Placecast-Event"
DELIVERY_HEADER = "X-Placecast-Delivery"
USER_AGENT = "Placecast-Webhooks/1"

# 5 s x 2^n capped at an hour: twelve attempts span roughly 2-3.5 hours (jitter), long enough to ride out
# a receiver's deploy or short outage before the delivery is parked in the dead-letter list.
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 3600.0
MAX_ATTEMPTS = 12
REQUEST_TIMEOUT_S = 10.0
CONCURRENCY = 20
# Longer than a full batch takes at worst (200 rows / 20 at a time x 10 s), so a live worker's lease never
# runs out under it and the same delivery is not sent twice in parallel.
LEASE_S = 300.0
ERROR_CHARS = 200
_PEEK_BYTES = 4 * ERROR_CHARS  # enough bytes for ERROR_CHARS characters of UTF-8


# --- signing ------------------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300, now: float | None = None) -> bool:
    """For receivers: is `header` a valid signature of the raw `body`, made within `tolerance_s` of `now`?

    Several `v1=` entries are accepted (any may match) so a sender can sign with an old and a new secret
    while a receiver rotates.
    """
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, separator, value = part.strip().partition("=")
        if not separator:
            continue
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value.encode())
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def backoff_s(attempt: int) -> float:
    """Wait after failed attempt number `attempt` (1-based).

    Equal jitter: at least half the exponential step, so a receiver that was down for everyone is not hit
    by every organisation's retries in the same second, yet never retried sooner than half the step.
    """
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * float(2 ** min(max(attempt, 0), 32)))
    return ceiling * (0.5 + random.random() / 2)


# --- enqueue and send ---------------------------------------------------------------------------------


async def enqueue_for_events(session: AsyncSession, organisation_id: int, event_ids: list[int]) -> int:
    """One pending delivery per (matching active subscription, event); returns how many are new.

    Runs in the caller's transaction so deliveries exist exactly when the events' processing commits;
    a replayed job inserts nothing twice.
    """
    if not event_ids:
        return 0
    return await WebhookRepository(session).enqueue(organisation_id, event_ids)


def payload(delivery: DueDelivery) -> dict[str, Any]:
    return {
        "delivery_id": delivery.id,
        "event_id": delivery.event_id,
        "kind": delivery.kind,
        "zone": delivery.zone,
        "occurred_at": delivery.occurred_at,
        "organisation_id": delivery.organisation_id,
        "place": {"id": delivery.place_id, "name": delivery.place_name},
        "device_id": delivery.device_id,
        # The fix behind the event arrived later than the organisation's limit (an offline upload): it was not
        # pushed to the device; receivers that act on arrivals in real time should skip it.
        "late": delivery.late,
    }


async def _peek(response: httpx.Response) -> str:
    """The start of the answer for last_error; a subscriber streaming megabytes is not read to the end."""
    taken = bytearray()
    async for chunk in response.aiter_bytes():
        taken += chunk
        if len(taken) >= _PEEK_BYTES:
            break
    return taken.decode("utf-8", errors="replace")[:ERROR_CHARS]


async def _post(http: httpx.AsyncClient, delivery: DueDelivery, secret: str) -> str | None:
    """POST one delivery; None when the subscriber took it, else why not. Never raises for the subscriber."""
    body = orjson.dumps(payload(delivery), option=orjson.OPT_UTC_Z)
    # Wall clock, not the scheduling `now`: receivers check it against their own clock.
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature_header(secret, timestamp, body),
        EVENT_HEADER: delivery.kind,
        DELIVERY_HEADER: str(delivery.id),
    }
    try:
        # httpx's timeout is per read; the outer one bounds a subscriber that trickles its answer.
        async with (
            asyncio.timeout(REQUEST_TIMEOUT_S),
            http.stream(
                "POST",
                delivery.url,
                content=body,
                headers=headers,
                timeout=REQUEST_TIMEOUT_S,
                follow_redirects=False,  # a redirect would resend the signed body to a URL nobody approved
            ) as response,
        ):
            if response.is_success:
                return None
            return f"HTTP {response.status_code}: {await _peek(response)}"
    except TimeoutError:
        return f"TimeoutError: no answer within {REQUEST_TIMEOUT_S:g} s"
    except Exception as error:  # one subscriber's broken URL, DNS or TLS must not stop the batch
        return f"{type(error).__name__}: {str(error)[:ERROR_CHARS]}"


def _settlement(delivery: DueDelivery, error: str | None, settled_at: datetime) -> Settlement:
    if error is None:
        return Settlement(delivery.id, "sent", None, None)
    attempts = delivery.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        return Settlement(delivery.id, "dead", error, None)
    return Settlement(delivery.id, "pending", error, settled_at + timedelta(seconds=backoff_s(attempts)))


async def send_due(
    session_factory: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    now: datetime | None = None,
    limit: int = 200,
    *,
    sealer: Sealer,
) -> dict[str, int]:
    """Send up to `limit` due deliveries; returns {"claimed", "sent", "retry", "dead"}.

    `now` drives the schedule (what is due, when the next attempt is); tests move it instead of sleeping.
    `sealer` opens the stored secrets (the composition root's, made from the process's secret key).
    """
    claimed_at = now if now is not None else datetime.now(UTC)
    lease_until = claimed_at + timedelta(seconds=LEASE_S)
    async with unit_of_work(session_factory) as uow:
        due = await WebhookRepository(uow.session).claim_due(claimed_at, lease_until, limit)
    counts = {"claimed": len(due), "sent": 0, "retry": 0, "dead": 0}
    if not due:
        return counts
    gate = asyncio.Semaphore(CONCURRENCY)

    async def attempt(delivery: DueDelivery) -> str | None:
        try:
            secret = sealer.open(delivery.secret)
        except SealError as error:
            return str(error)
        async with gate:
            return await _post(http, delivery, secret)

    errors = await asyncio.gather(*(attempt(d) for d in due))
    settled_at = now if now is not None else datetime.now(UTC)
    settlements = [_settlement(d, e, settled_at) for d, e in zip(due, errors, strict=True)]
    for settlement in settlements:
        counts["retry" if settlement.status == "pending" else settlement.status] += 1
    async with unit_of_work(session_factory) as uow:
        await WebhookRepository(uow.session).settle(settlements, lease_until)
    for delivery, settlement in zip(due, settlements, strict=True):
        if settlement.status == "dead":
            # Not the URL: subscribers often put a token in it.
            log.warning("webhook_dead", delivery_id=delivery.id, error=settlement.error)
    log.info("webhooks_sent", **counts)
    return counts


# --- admin use cases ----------------------------------------------------------------------------------


def _canonical_kinds(event_types: Sequence[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EVENT_KINDS))
    if unknown:  # the API refuses these first; this guards other callers
        raise ValueError(f"unknown event types {unknown}")
    return [kind for kind in EVENT_KINDS if kind in event_types]


async def create_subscription(
    uow: UnitOfWork, *, organisation_id: int, actor: str, url: str, event_types: Sequence[str], sealer: Sealer
) -> tuple[SubscriptionRecord, str]:
    """Returns the subscription and its secret; the caller shows the secret once, it is stored sealed and it is
    never listed."""
    secret = new_secret()
    record = await WebhookRepository(uow.session).add_subscription(
        organisation_id, url, sealer.seal(secret), _canonical_kinds(event_types)
    )
    await record_audit(
        uow.session,
        organisation_id=organisation_id,
        actor=actor,
        action="create",
        entity="webhook_subscription",
        entity_id=record.id,
        details={"url": url, "event_types": record.event_types},
    )
    return record, secret


async def list_subscriptions(uow: UnitOfWork, *, organisation_id: int) -> list[SubscriptionRecord]:
    return await WebhookRepository(uow.session).subscriptions(organisation_id)


async def delete_subscription(uow: UnitOfWork, *, organisation_id: int, actor: str, subscription_id: int) -> None:
    if not await WebhookRepository(uow.session).delete_subscription(organisation_id, subscription_id):
        raise NotFound(f"webhook {subscription_id} not found")
    await record_audit(
        uow.session,
        organisation_id=organisation_id,
        actor=actor,
        action="delete",
        entity="webhook_subscription",
        entity_id=subscription_id,
    )


async def list_deliveries(
    uow: UnitOfWork,
    *,
    organisation_id: int,
    subscription_id: int,
    status: str | None,
    after_id: int | None,
    limit: int,
) -> tuple[list[DeliveryRecord], int | None]:
    """A page of deliveries and the cursor of the next page (None when this is the last)."""
    repository = WebhookRepository(uow.session)
    if not await repository.has_subscription(organisation_id, subscription_id):
        raise NotFound(f"webhook {subscription_id} not found")
    records = await repository.deliveries(subscription_id, status, after_id, limit + 1)
    if len(records) > limit:
        return records[:limit], records[limit - 1].id
    return records, None


async def retry_delivery(uow: UnitOfWork, *, organisation_id: int, actor: str, delivery_id: int) -> DeliveryRecord:
    """Dead → pending with a fresh attempt budget; the next `send_due` sends it."""
    repository = WebhookRepository(uow.session)
    record = await repository.requeue_dead(organisation_id, delivery_id)
    if record is None:
        status = await repository.delivery_status(organisation_id, delivery_id)
        if status is None:
            raise NotFound(f"webhook delivery {delivery_id} not found")
        raise Conflict(f"webhook delivery {delivery_id} is {status}; only dead deliveries can be retried")
    await record_audit(
        uow.session,
        organisation_id=organisation_id,
        actor=actor,
        action="retry",
        entity="webhook_delivery",
        entity_id=delivery_id,
    )
    return record

"""All SQL for webhook subscriptions and their deliveries. Every admin query is scoped to one organisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from notifications.models import WebhookDelivery, WebhookSubscription


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """A subscription as admins see it: never the secret."""

    id: int
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    subscription_id: int
    event_id: int
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery with everything needed to sign and send it."""

    id: int
    attempts: int
    url: str
    secret: str
    event_id: int
    kind: str
    zone: str
    occurred_at: datetime
    organisation_id: int
    place_id: int
    place_name: str
    device_id: int
    late: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    delivery_id: int
    status: str  # pending (retry later) | sent | dead
    error: str | None
    next_attempt_at: datetime | None


_SUBSCRIPTION = (
    WebhookSubscription.id,
    WebhookSubscription.url,
    WebhookSubscription.event_types,
    WebhookSubscription.active,
    WebhookSubscription.created_at,
)
_DELIVERY = (
    WebhookDelivery.id,
    WebhookDelivery.subscription_id,
    WebhookDelivery.event_id,
    WebhookDelivery.status,
    WebhookDelivery.attempts,
    WebhookDelivery.last_error,
    WebhookDelivery.next_attempt_at,
    WebhookDelivery.created_at,
)

# Empty event_types means every kind. Events of another organisation never match, whatever ids are passed.
ENQUEUE = """
INSERT INTO webhook_deliveries (subscription_id, event_id)
SELECT s.id, e.id
FROM events e
JOIN webhook_subscriptions s
  ON s.organisation_id = e.organisation_id AND s.active
 AND (cardinality(s.event_types) = 0 OR e.kind = ANY(s.event_types))
WHERE e.id = ANY(CAST(:ids AS bigint[])) AND e.organisation_id = :organisation_id
ON CONFLICT (subscription_id, event_id) DO NOTHING
"""

# The lease (next_attempt_at pushed forward) is committed before anything is sent, so another worker
# neither waits for these rows nor picks them up again unless this worker dies and the lease runs out.
CLAIM = """
WITH due AS (
    SELECT d.id
    FROM webhook_deliveries d
    JOIN webhook_subscriptions s ON s.id = d.subscription_id
    WHERE d.status = 'pending' AND s.active
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= :now)
    ORDER BY d.next_attempt_at NULLS FIRST, d.id
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d SET next_attempt_at = :lease_until
FROM due, webhook_subscriptions s, events e, places p
WHERE d.id = due.id AND s.id = d.subscription_id AND e.id = d.event_id AND p.id = e.place_id
RETURNING d.id, d.attempts, s.url, s.secret, e.id AS event_id, e.kind, e.zone, e.occurred_at,
          e.organisation_id, e.place_id, p.name AS place_name, e.device_id, e.late
"""

# Matching the lease makes the lease a fencing token: if it ran out and another worker claimed the row,
# this worker's late answer is dropped instead of overwriting the newer attempt.
SETTLE = """
UPDATE webhook_deliveries
SET status = :status, attempts = attempts + 1, last_error = COALESCE(:error, last_error),
    next_attempt_at = :next_attempt_at
WHERE id = :id AND status = 'pending' AND next_attempt_at = :lease_until
"""

REQUEUE_DEAD = """
UPDATE webhook_deliveries d SET status = 'pending', attempts = 0, next_attempt_at = NULL
FROM webhook_subscriptions s
WHERE d.id = :id AND d.status = 'dead' AND s.id = d.subscription_id AND s.organisation_id = :organisation_id
RETURNING d.id, d.subscription_id, d.event_id, d.status, d.attempts, d.last_error, d.next_attempt_at,
          d.created_at
"""


def _subscription(row: Any) -> SubscriptionRecord:
    return SubscriptionRecord(row.id, row.url, list(row.event_types), row.active, row.created_at)


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        row.id,
        row.subscription_id,
        row.event_id,
        row.status,
        row.attempts,
        row.last_error,
        row.next_attempt_at,
        row.created_at,
    )


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_subscription(
        self, organisation_id: int, url: str, secret: str, event_types: Sequence[str]
    ) -> SubscriptionRecord:
        row = (
            await self.session.execute(
                insert(WebhookSubscription)
                .values(organisation_id=organisation_id, url=url, secret=secret, event_types=list(event_types))
                .returning(*_SUBSCRIPTION)
            )
        ).one()
        return _subscription(row)

    async def subscriptions(self, organisation_id: int) -> list[SubscriptionRecord]:
        rows = await self.session.execute(
            select(*_SUBSCRIPTION)
            .where(WebhookSubscription.organisation_id == organisation_id)
            .order_by(WebhookSubscription.id)
        )
        return [_subscription(r) for r in rows]

    async def has_subscription(self, organisation_id: int, subscription_id: int) -> bool:
        found = await self.session.execute(
            select(WebhookSubscription.id).where(
                WebhookSubscription.id == subscription_id,
                WebhookSubscription.organisation_id == organisation_id,
            )
        )
        return found.first() is not None

    async def delete_subscription(self, organisation_id: int, subscription_id: int) -> bool:
        """Its deliveries go with it (ON DELETE CASCADE), so nothing more is sent to that URL."""
        deleted = await self.session.execute(
            delete(WebhookSubscription)
            .where(
                WebhookSubscription.id == subscription_id,
                WebhookSubscription.organisation_id == organisation_id,
            )
            .returning(WebhookSubscription.id)
        )
        return deleted.first() is not None

    async def deliveries(
        self, subscription_id: int, status: str | None, after_id: int | None, limit: int
    ) -> list[DeliveryRecord]:
        """Callers check the subscription belongs to the organisation first."""
        query = select(*_DELIVERY).where(WebhookDelivery.subscription_id == subscription_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        if after_id is not None:
            query = query.where(WebhookDelivery.id > after_id)
        rows = await self.session.execute(query.order_by(WebhookDelivery.id).limit(limit))
        return [_delivery(r) for r in rows]

    async def delivery_status(self, organisation_id: int, delivery_id: int) -> str | None:
        found = await self.session.execute(
            select(WebhookDelivery.status)
            .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
            .where(WebhookDelivery.id == delivery_id, WebhookSubscription.organisation_id == organisation_id)
        )
        status: str | None = found.scalar_one_or_none()
        return status

    async def requeue_dead(self, organisation_id: int, delivery_id: int) -> DeliveryRecord | None:
        row = (
            await self.session.execute(text(REQUEUE_DEAD), {"id": delivery_id, "organisation_id": organisation_id})
        ).first()
        return _delivery(row) if row is not None else None

    async def enqueue(self, organisation_id: int, event_ids: Sequence[int]) -> int:
        result = await self.session.execute(text(ENQUEUE), {"ids": list(event_ids), "organisation_id": organisation_id})
        inserted: int = result.rowcount  # type: ignore[attr-defined]
        return inserted

    async def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[DueDelivery]:
        rows = await self.session.execute(text(CLAIM), {"now": now, "lease_until": lease_until, "limit": limit})
        return [
            DueDelivery(
                r.id,
                r.attempts,
                r.url,
                r.secret,
                r.event_id,
                r.kind,
                r.zone,
                r.occurred_at,
                r.organisation_id,
                r.place_id,
                r.place_name,
                r.device_id,
                r.late,
            )
            for r in rows
        ]

    async def settle(self, settlements: Sequence[Settlement], lease_until: datetime) -> None:
        if not settlements:
            return
        await self.session.execute(
            text(SETTLE),
            [
                {
                    "id": s.delivery_id,
                    "status": s.status,
                    "error": s.error,
                    "next_attempt_at": s.next_attempt_at,
                    "lease_until": lease_until,
                }
                for s in settlements
            ],
        )

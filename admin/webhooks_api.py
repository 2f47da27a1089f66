"""Admin REST API for outgoing webhooks: subscriptions, their deliveries, the dead-letter list and retry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from infra.deps import MAX_ID, IdPath, PrincipalDep, ResourcesDep, SettingsDep, UowDep
from kernel.errors import Problem, ValidationFailed
from notifications import webhooks
from notifications.egress import url_problem
from notifications.rules import EventKind
from notifications.webhook_repository import DeliveryRecord, SubscriptionRecord
from services.models import Role

router = APIRouter(prefix="/admin/v1", tags=["admin: webhooks"])

DeliveryStatus = Literal["pending", "sent", "dead"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl = Field(description="http(s) URL that receives a signed POST per event")
    event_types: list[EventKind] = Field(
        default_factory=list, max_length=20, description="event kinds to send; empty means every kind"
    )


class WebhookOut(BaseModel):
    id: int
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime

    @classmethod
    def from_record(cls, record: SubscriptionRecord) -> WebhookOut:
        return cls(
            id=record.id,
            url=record.url,
            event_types=record.event_types,
            active=record.active,
            created_at=record.created_at,
        )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="HMAC-SHA256 key of X-Placecast-Signature; shown only in this answer")


class WebhookList(BaseModel):
    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: int
    subscription_id: int
    event_id: int
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def from_record(cls, record: DeliveryRecord) -> DeliveryOut:
        return cls(
            id=record.id,
            subscription_id=record.subscription_id,
            event_id=record.event_id,
            status=record.status,
            attempts=record.attempts,
            last_error=record.last_error,
            next_attempt_at=record.next_attempt_at,
            created_at=record.created_at,
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: int | None


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated)
async def create_webhook(
    body: WebhookIn, principal: PrincipalDep, uow: UowDep, settings: SettingsDep, resources: ResourcesDep
) -> WebhookCreated:
    principal.require(Role.editor)
    if not settings.webhook_allow_private_networks and (problem := url_problem(str(body.url))):
        raise ValidationFailed("the webhook URL must reach a public address", [Problem("url", problem)])
    record, secret = await webhooks.create_subscription(
        uow,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        url=str(body.url),
        event_types=body.event_types,
        sealer=resources.sealer,
    )
    return WebhookCreated(**WebhookOut.from_record(record).model_dump(), secret=secret)


@router.get("/webhooks", response_model=WebhookList)
async def list_webhooks(principal: PrincipalDep, uow: UowDep) -> WebhookList:
    records = await webhooks.list_subscriptions(uow, organisation_id=principal.organisation_id)
    return WebhookList(items=[WebhookOut.from_record(r) for r in records])


@router.delete("/webhooks/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(subscription_id: IdPath, principal: PrincipalDep, uow: UowDep) -> Response:
    principal.require(Role.editor)
    await webhooks.delete_subscription(
        uow, organisation_id=principal.organisation_id, actor=principal.actor, subscription_id=subscription_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/webhooks/{subscription_id}/deliveries", response_model=DeliveryPage)
async def list_webhook_deliveries(
    subscription_id: IdPath,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    status_: Annotated[DeliveryStatus | None, Query(alias="status", description="dead: the dead-letter list")] = None,
    cursor: Annotated[int | None, Query(ge=0, le=MAX_ID, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryPage:
    records, next_cursor = await webhooks.list_deliveries(
        uow,
        organisation_id=principal.organisation_id,
        subscription_id=subscription_id,
        status=status_,
        after_id=cursor,
        limit=min(limit, settings.page_size_max),
    )
    return DeliveryPage(items=[DeliveryOut.from_record(r) for r in records], next_cursor=next_cursor)


@router.post("/webhook-deliveries/{delivery_id}/retry", response_model=DeliveryOut)
async def retry_webhook_delivery(delivery_id: IdPath, principal: PrincipalDep, uow: UowDep) -> DeliveryOut:
    """Put a dead delivery back in the queue with a fresh attempt budget."""
    principal.require(Role.editor)
    record = await webhooks.retry_delivery(
        uow, organisation_id=principal.organisation_id, actor=principal.actor, delivery_id=delivery_id
    )
    return DeliveryOut.from_record(record)

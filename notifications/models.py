"""Content, staff tasks, notifications and their deliveries, webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base, IdMixin, TimestampMixin

TARGET = "(place_id IS NOT NULL) <> (place_kind IS NOT NULL)"


class ContentItem(IdMixin, TimestampMixin, Base):
    """An offer, event or message attached to one place or to every place of a kind."""

    __tablename__ = "content_items"
    __table_args__ = (CheckConstraint(TARGET, name="one_target"), Index("ix_content_org", "organisation_id"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    place_id: Mapped[int | None] = mapped_column(ForeignKey("places.id", ondelete="CASCADE"), index=True)
    place_kind: Mapped[str | None] = mapped_column(String(80))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    deep_link: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, str]] = mapped_column(JSONB, server_default="{}")
    image_url: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(16), server_default="enter")
    zone: Mapped[str] = mapped_column(String(16), server_default="building")
    audience_role: Mapped[str | None] = mapped_column(String(16))
    audience_tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    # {"valid_from", "valid_to", "days": [0..6], "hours": ["09:00", "17:00"], "only_when_open": bool}
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    cooldown_s: Mapped[int] = mapped_column(Integer, server_default="86400")
    daily_cap: Mapped[int | None] = mapped_column(Integer)
    quiet_hours: Mapped[list[str] | None] = mapped_column(ARRAY(String(5)))
    consent_purpose: Mapped[str] = mapped_column(String(32), server_default="offers")
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    # Pushed as data only (no notification shown; the app is woken in the background); still an inbox entry.
    silent: Mapped[bool] = mapped_column(Boolean, server_default="false")


class StaffTask(IdMixin, TimestampMixin, Base):
    """Work at a building for a team; open -> notified -> acknowledged -> done."""

    __tablename__ = "staff_tasks"
    __table_args__ = (
        CheckConstraint(TARGET, name="one_target"),
        Index("ix_tasks_org_status", "organisation_id", "status"),
    )
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    place_id: Mapped[int | None] = mapped_column(ForeignKey("places.id", ondelete="CASCADE"), index=True)
    place_kind: Mapped[str | None] = mapped_column(String(80))
    team: Mapped[str | None] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, server_default="")
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    ack_within_s: Mapped[int] = mapped_column(Integer, server_default="1800")
    assigned_device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    notified_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)


class Notification(IdMixin, Base):
    """What one device was told; also its inbox entry. Unique per event and content (or task)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index(
            "uq_notifications_event_content",
            "event_id",
            "content_id",
            unique=True,
            postgresql_where="content_id IS NOT NULL",
        ),
        Index(
            "uq_notifications_event_task",
            "event_id",
            "task_id",
            unique=True,
            postgresql_where="task_id IS NOT NULL",
        ),
        Index("ix_notifications_device_created", "device_id", "created_at"),
    )
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    content_id: Mapped[int | None] = mapped_column(ForeignKey("content_items.id", ondelete="SET NULL"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("staff_tasks.id", ondelete="SET NULL"))
    place_id: Mapped[int | None] = mapped_column(ForeignKey("places.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, str]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    opened_at: Mapped[datetime | None]


class Delivery(IdMixin, Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        Index("uq_deliveries_notification_channel", "notification_id", "channel", unique=True),
        Index("ix_deliveries_due", "next_attempt_at", postgresql_where="status IN ('pending', 'retry', 'sending')"),
    )
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))  # fcm | inbox
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    provider_id: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]


class WebhookSubscription(IdMixin, TimestampMixin, Base):
    __tablename__ = "webhook_subscriptions"
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)  # sealed (services/sealing.py)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(16)), server_default="{}")
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")


class WebhookDelivery(IdMixin, Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("uq_webhook_delivery", "subscription_id", "event_id", unique=True),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where="status = 'pending'"),
    )
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")  # pending|sent|dead
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

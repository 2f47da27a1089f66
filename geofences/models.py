"""Places, fences and what devices did near them (fixes, per-device state, events, visits, outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base, IdMixin, TimestampMixin


class Place(IdMixin, TimestampMixin, Base):
    __tablename__ = "places"
    __table_args__ = (
        UniqueConstraint("organisation_id", "external_ref"),
        Index("ix_places_org_kind", "organisation_id", "kind"),
    )
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(80))
    address: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(String(64), server_default="Europe/Helsinki")
    opening_hours: Mapped[str | None] = mapped_column(Text)
    # "osm:way/123" etc.; imports are idempotent on it.
    external_ref: Mapped[str | None] = mapped_column(String(200))
    # Footprint widened by this many metres forms the place's approach zone.
    approach_m: Mapped[float | None] = mapped_column(Double)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # Overrides of the transition model's parameters for this building (geofences/transitions.py).
    gps_tuning: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")


class Geofence(IdMixin, TimestampMixin, Base):
    __tablename__ = "geofences"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'circle' AND radius_m > 0 AND ST_GeometryType(geom) = 'ST_Point')"
            " OR (kind = 'polygon' AND radius_m IS NULL"
            " AND ST_GeometryType(geom) IN ('ST_Polygon', 'ST_MultiPolygon'))",
            name="shape",
        ),
        Index("ix_geofences_org", "organisation_id"),
    )
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    place_id: Mapped[int] = mapped_column(ForeignKey("places.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # Polygon/MultiPolygon footprint, or the centre of a circle; GeoAlchemy2 adds the GiST index.
    geom: Mapped[Any] = mapped_column(Geometry(geometry_type="GEOMETRY", srid=4326, spatial_index=True))
    radius_m: Mapped[float | None] = mapped_column(Double)


class Fix(Base):
    """Raw location fixes, range-partitioned by day of arrival so retention drops whole partitions."""

    __tablename__ = "fixes"
    __table_args__ = (
        Index("ix_fixes_device_received", "device_id", "received_at"),
        {"postgresql_partition_by": "RANGE (received_at)"},
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=func.now())
    organisation_id: Mapped[int] = mapped_column(BigInteger)
    device_id: Mapped[int] = mapped_column(BigInteger)
    device_ts: Mapped[datetime]
    lon: Mapped[float] = mapped_column(Double)
    lat: Mapped[float] = mapped_column(Double)
    accuracy_m: Mapped[float | None] = mapped_column(Double)
    speed_mps: Mapped[float | None] = mapped_column(Double)
    batch_id: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(16), server_default="native")


class FixBatch(Base):
    """A client batch id seen once; a replay answers the first result and stores nothing new."""

    __tablename__ = "fix_batches"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    fix_count: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class DeviceState(Base):
    """Per-device transition state (last fix, per-fence inside/dwell); locked FOR UPDATE while stepping."""

    __tablename__ = "device_states"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Visit(IdMixin, Base):
    """One stay of a device at a place: a check-in and a detected enter of the same stay are one visit."""

    __tablename__ = "visits"
    __table_args__ = (
        Index("ix_visits_place_started", "place_id", "started_at"),
        Index("ix_visits_open", "device_id", "place_id", postgresql_where="ended_at IS NULL", unique=True),
        Index("ix_visits_org_id", "organisation_id", "id"),
    )
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    place_id: Mapped[int] = mapped_column(ForeignKey("places.id", ondelete="CASCADE"))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    checked_in: Mapped[bool] = mapped_column(server_default="false")
    detected: Mapped[bool] = mapped_column(server_default="false")


class Event(IdMixin, Base):
    """A transition: enter, exit, dwell, checkin, checkout. Kept after raw fixes are purged."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_org_at", "organisation_id", "occurred_at"),
        Index("ix_events_device_at", "device_id", "occurred_at"),
        Index("ix_events_org_id", "organisation_id", "id"),
    )
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    place_id: Mapped[int] = mapped_column(ForeignKey("places.id", ondelete="CASCADE"))
    fence_id: Mapped[int | None] = mapped_column(ForeignKey("geofences.id", ondelete="SET NULL"))
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visits.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    zone: Mapped[str] = mapped_column(String(16), server_default="building")
    occurred_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # The fix behind it arrived later than the organisation's limit: recorded, never pushed.
    late: Mapped[bool] = mapped_column(Boolean, server_default="false")


class Outbox(IdMixin, Base):
    """Events waiting for the notification pipeline; written in the same transaction as the event."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "id", postgresql_where="processed_at IS NULL"),)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    enqueued_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")

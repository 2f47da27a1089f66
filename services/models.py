"""Organisations, people, credentials, devices and the audit log."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base, IdMixin, TimestampMixin


class Role(enum.StrEnum):
    owner = "owner"
    editor = "editor"
    viewer = "viewer"


class DeviceRole(enum.StrEnum):
    visitor = "visitor"
    staff = "staff"


class Platform(enum.StrEnum):
    android = "android"
    ios = "ios"
    web = "web"


class Organisation(IdMixin, TimestampMixin, Base):
    __tablename__ = "organisations"
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    # Bumped in the transaction of every fence change: API processes poll it (geofences/registry.py).
    fence_version: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Fixes older than this at arrival make `late` events (NULL: the service's setting).
    late_fix_after_s: Mapped[int | None] = mapped_column(Integer)
    # The QR check-in signing key, sealed (services/sealing.py); NULL until first needed. Rotating it
    # invalidates every printed code of the organisation.
    qr_key: Mapped[str | None] = mapped_column(Text)
    qr_key_rotated_at: Mapped[datetime | None]


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default="true")


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[Role] = mapped_column(Enum(Role, name="member_role"))


class ApiKey(IdMixin, Base):
    """An organisation-scoped admin credential; only its SHA-256 is stored."""

    __tablename__ = "api_keys"
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(Enum(Role, name="member_role"), server_default=Role.editor.value)
    # "admin" keys drive the admin API; "enrolment" keys ship inside an app and can only register devices.
    purpose: Mapped[str] = mapped_column(String(16), server_default="admin")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]


class Device(IdMixin, TimestampMixin, Base):
    """A pseudonymous phone. The credential is stored hashed; external ids map client protocols."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("organisation_id", "external_id"),)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    platform: Mapped[Platform] = mapped_column(Enum(Platform, name="device_platform"))
    role: Mapped[DeviceRole] = mapped_column(Enum(DeviceRole, name="device_role"))
    # Id a client protocol knows the device by (OwnTracks "user/device", Traccar "id").
    external_id: Mapped[str | None] = mapped_column(String(200))
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    fcm_token: Mapped[str | None] = mapped_column(Text)
    fcm_token_active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    # What fcm_token holds: an FCM registration token ("token") or a Firebase installation ID ("fid").
    push_target_kind: Mapped[str] = mapped_column(String(8), server_default="token")
    # Which sender the device's pushes go through: "fcm" (fcm_token) or "webpush" (the subscription below). The
    # last target the device registered decides.
    push_channel: Mapped[str] = mapped_column(String(8), server_default="fcm")
    # A browser's Web Push subscription (PushSubscription.toJSON()): the push service's endpoint URL and the keys
    # its payloads are encrypted for; switched off when the push service answers 404/410.
    webpush_endpoint: Mapped[str | None] = mapped_column(Text)
    webpush_p256dh: Mapped[str | None] = mapped_column(String(100))
    webpush_auth: Mapped[str | None] = mapped_column(String(50))
    webpush_active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    locale: Mapped[str] = mapped_column(String(35), server_default="en")
    timezone: Mapped[str] = mapped_column(String(64), server_default="Europe/Helsinki")
    consents: Mapped[dict[str, bool]] = mapped_column(JSONB, server_default="{}")
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    team: Mapped[str | None] = mapped_column(String(100))
    is_supervisor: Mapped[bool] = mapped_column(Boolean, server_default="false")
    last_seen_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ImportUpload(Base):
    """An uploaded import's file while it waits for a worker and while one imports it (services/imports.py): any
    worker on any machine reads it here. Its bytes are the rows of `import_upload_chunks`; the row is deleted when
    the import ends, and swept when a worker holding it stopped renewing its lease (bench/uploads.py measured why
    1 MiB bytea rows and not one value or a large object)."""

    __tablename__ = "import_uploads"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the import's id (services.imports.IMPORT_ID)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    size: Mapped[int] = mapped_column(BigInteger, server_default="0")
    chunks: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set when a worker takes the import, renewed while it works; NULL while queued.
    lease_until: Mapped[datetime | None] = mapped_column(index=True)


class ImportUploadChunk(Base):
    __tablename__ = "import_upload_chunks"
    upload_id: Mapped[str] = mapped_column(ForeignKey("import_uploads.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)

"""Device registration, credentials, consents, export and erase."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from geofences.models import DeviceState, Event, Fix, Visit
from notifications.models import Notification
from services.errors import Conflict, Unauthorized
from services.models import Device
from services.orgs import hash_secret


@dataclass(frozen=True, slots=True)
class DeviceAuth:
    device_id: int
    organisation_id: int
    role: str


def new_credential() -> str:
    return "pcd_" + secrets.token_urlsafe(32)


class CredentialCache:
    """Fix ingest authenticates every request: remember credential → device briefly.

    A revoked or rotated credential is dropped here at once in this process; other replicas stop
    accepting it within `ttl_s`.
    """

    def __init__(self, ttl_s: float = 5.0, max_size: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._entries: dict[str, tuple[float, DeviceAuth]] = {}

    def get(self, credential_hash: str) -> DeviceAuth | None:
        entry = self._entries.get(credential_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, credential_hash: str, auth: DeviceAuth) -> None:
        if len(self._entries) >= self.max_size:
            self._entries.clear()
        self._entries[credential_hash] = (time.monotonic() + self.ttl_s, auth)

    def forget_device(self, device_id: int) -> None:
        for key in [k for k, (_, auth) in self._entries.items() if auth.device_id == device_id]:
            del self._entries[key]


async def register_device(session: AsyncSession, *, organisation_id: int, fields: dict[str, Any]) -> tuple[int, str]:
    """Returns the device id and its credential, which is shown once and stored hashed."""
    credential = new_credential()
    if fields.get("external_id"):
        taken = await session.execute(
            select(Device.id).where(
                Device.organisation_id == organisation_id, Device.external_id == fields["external_id"]
            )
        )
        if taken.first():
            raise Conflict(f"a device with external_id {fields['external_id']!r} is already registered")
    device_id = (
        await session.execute(
            insert(Device)
            .values(organisation_id=organisation_id, credential_hash=hash_secret(credential), **fields)
            .returning(Device.id)
        )
    ).scalar_one()
    await session.execute(insert(DeviceState).values(device_id=device_id, state={}))
    return int(device_id), credential


async def authenticate_device(
    session: AsyncSession, credential: str, cache: CredentialCache | None = None
) -> DeviceAuth:
    credential_hash = hash_secret(credential)
    if cache is not None and (hit := cache.get(credential_hash)) is not None:
        return hit
    row = (
        await session.execute(
            select(Device.id, Device.organisation_id, Device.role).where(
                Device.credential_hash == credential_hash, Device.revoked_at.is_(None)
            )
        )
    ).first()
    if row is None:
        raise Unauthorized("unknown or revoked device credential")
    auth = DeviceAuth(device_id=row.id, organisation_id=row.organisation_id, role=str(row.role))
    if cache is not None:
        cache.put(credential_hash, auth)
    return auth


async def device_by_external_id(session: AsyncSession, organisation_id: int, external_id: str) -> DeviceAuth | None:
    row = (
        await session.execute(
            select(Device.id, Device.organisation_id, Device.role).where(
                Device.organisation_id == organisation_id,
                Device.external_id == external_id,
                Device.revoked_at.is_(None),
            )
        )
    ).first()
    return None if row is None else DeviceAuth(row.id, row.organisation_id, str(row.role))


async def rotate_credential(session: AsyncSession, device_id: int) -> str:
    credential = new_credential()
    await session.execute(
        update(Device)
        .where(Device.id == device_id)
        .values(credential_hash=hash_secret(credential), updated_at=func.now())
    )
    return credential


async def update_device(session: AsyncSession, device_id: int, values: dict[str, Any]) -> None:
    if "fcm_token" in values:
        values = {**values, "fcm_token_active": values["fcm_token"] is not None}
    await session.execute(update(Device).where(Device.id == device_id).values(**values, updated_at=func.now()))


async def set_consents(session: AsyncSession, device_id: int, consents: dict[str, bool]) -> dict[str, bool]:
    current = (await session.execute(select(Device.consents).where(Device.id == device_id))).scalar_one()
    merged = {**current, **consents}
    await session.execute(update(Device).where(Device.id == device_id).values(consents=merged, updated_at=func.now()))
    return merged


def _row(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for column in obj.__table__.columns:
        if column.key in skip:
            continue
        value = getattr(obj, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


async def export_device(session: AsyncSession, device_id: int, include_history: bool = True) -> dict[str, Any]:
    """Everything stored about one device, as the person behind it may ask to see it."""
    device = (await session.execute(select(Device).where(Device.id == device_id))).scalar_one()
    if not include_history:
        return {"device": _row(device, skip=("credential_hash",))}
    fixes = (await session.execute(select(Fix).where(Fix.device_id == device_id).order_by(Fix.device_ts))).scalars()
    events = (await session.execute(select(Event).where(Event.device_id == device_id).order_by(Event.id))).scalars()
    visits = (await session.execute(select(Visit).where(Visit.device_id == device_id).order_by(Visit.id))).scalars()
    notes = (
        await session.execute(select(Notification).where(Notification.device_id == device_id).order_by(Notification.id))
    ).scalars()
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "device": _row(device, skip=("credential_hash",)),
        "fixes": [_row(f) for f in fixes],
        "events": [_row(e) for e in events],
        "visits": [_row(v) for v in visits],
        "notifications": [_row(n) for n in notes],
    }


async def erase_device(session: AsyncSession, device_id: int) -> None:
    """Forget the device: fixes (not foreign-keyed, partitioned) explicitly, the rest by cascade."""
    await session.execute(delete(Fix).where(Fix.device_id == device_id))
    await session.execute(delete(Device).where(Device.id == device_id))

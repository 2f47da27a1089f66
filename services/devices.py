"""Device registration, credentials, consents, export and erase."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from geofences.models import DeviceState, Event, Fix, Visit
from kernel.errors import Conflict, Unauthorized
from notifications.models import Notification
from services.models import Device
from services.orgs import hash_secret


@dataclass(frozen=True, slots=True)
class DeviceAuth:
    device_id: int
    organisation_id: int
    role: str


def new_credential() -> str:
    return "pcd_" + secrets.token_urlsafe(32)


async def register_device(session: AsyncSession, *, organisation_id: int, fields: dict[str, Any]) -> tuple[int, str]:
    """Returns the device id and its credential, which is shown once and stored hashed. Only ever a new device:
    an `external_id` already registered in the organisation is a Conflict (also when two enrol it at once)."""
    credential = new_credential()
    device_id = (
        await session.execute(
            insert(Device)
            .values(organisation_id=organisation_id, credential_hash=hash_secret(credential), **fields)
            .on_conflict_do_nothing(index_elements=[Device.organisation_id, Device.external_id])
            .returning(Device.id)
        )
    ).scalar_one_or_none()
    if device_id is None:
        raise Conflict(f"a device with external_id {fields['external_id']!r} is already registered")
    await session.execute(insert(DeviceState).values(device_id=device_id, state={}))
    return int(device_id), credential


async def authenticate_device(
    session: AsyncSession, credential: str, *, lock: Literal["key share", "update"] | None = "key share"
) -> DeviceAuth:
    """The device whose credential this is, looked up in PostgreSQL on every request (no cache: a rotated or
    erased credential fails on every API process the moment the change commits).

    With `lock`, the device's row stays locked until the request's transaction ends. `key share` (requests of one
    device still run side by side) conflicts with rotating the credential and with erasing, so those wait for
    requests already authenticated, and a request arriving meanwhile re-reads the row once they commit and is
    refused: no fix is stored for an erased device, no request runs on with a rotated credential. `update` (rotate,
    erase) takes the row at once: two such requests then queue instead of deadlocking on upgrading shared locks.
    None (reads): a row lock gives the transaction an id, and so a WAL flush at commit that a read need not pay.
    """
    statement = select(Device.id, Device.organisation_id, Device.role).where(
        Device.credential_hash == hash_secret(credential), Device.revoked_at.is_(None)
    )
    if lock is not None:
        statement = statement.with_for_update(key_share=lock == "key share")
    row = (await session.execute(statement)).first()
    if row is None:
        raise Unauthorized("unknown or revoked device credential")
    return DeviceAuth(device_id=row.id, organisation_id=row.organisation_id, role=str(row.role))


async def credential_valid(session: AsyncSession, device_id: int, credential: str) -> bool:
    """Whether this credential still opens this device (open streams re-check it; no lock)."""
    found = await session.execute(
        select(Device.id).where(
            Device.id == device_id, Device.credential_hash == hash_secret(credential), Device.revoked_at.is_(None)
        )
    )
    return found.first() is not None


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
    device = (await session.execute(select(Device).where(Device.id == device_id))).scalar_one_or_none()
    if device is None:  # erased by a request that committed after this one authenticated
        raise Unauthorized("this device was erased")
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
    """Forget the device: fixes (not foreign-keyed, partitioned) explicitly, the rest by cascade.

    The device's row is locked first (the caller's authentication normally holds it already), so no request of
    this device is between authenticating and committing while its fixes are deleted: none can leave fixes behind.
    """
    await session.execute(select(Device.id).where(Device.id == device_id).with_for_update())
    await session.execute(delete(Fix).where(Fix.device_id == device_id))
    await session.execute(delete(Device).where(Device.id == device_id))

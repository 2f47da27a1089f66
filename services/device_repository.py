"""All SQL of devices' own use cases (`devices.py`): their rows, credentials, consents, export and erase.

The admin API's device queries are `device_queries.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from geofences.models import DeviceState, Event, Fix, Visit
from notifications.models import Notification
from services.models import Device


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device_id: int
    organisation_id: int
    role: str


@dataclass(frozen=True, slots=True)
class DeviceHistory:
    """Everything stored about one device, as ORM objects in the order they are exported."""

    device: Device
    fixes: list[Fix]
    events: list[Event]
    visits: list[Visit]
    notifications: list[Notification]


async def insert_device(
    session: AsyncSession, organisation_id: int, credential_hash: str, fields: dict[str, Any]
) -> int | None:
    """A new device with an empty state; None when its `external_id` is taken in the organisation."""
    device_id = (
        await session.execute(
            insert(Device)
            .values(organisation_id=organisation_id, credential_hash=credential_hash, **fields)
            .on_conflict_do_nothing(index_elements=[Device.organisation_id, Device.external_id])
            .returning(Device.id)
        )
    ).scalar_one_or_none()
    if device_id is None:
        return None
    await session.execute(insert(DeviceState).values(device_id=device_id, state={}))
    return int(device_id)


async def device_by_credential(
    session: AsyncSession, credential_hash: str, lock: Literal["key share", "update"] | None
) -> DeviceRow | None:
    """The unrevoked device with this credential; with `lock`, its row locked so until the transaction ends."""
    statement = select(Device.id, Device.organisation_id, Device.role).where(
        Device.credential_hash == credential_hash, Device.revoked_at.is_(None)
    )
    if lock is not None:
        statement = statement.with_for_update(key_share=lock == "key share")
    row = (await session.execute(statement)).first()
    return None if row is None else DeviceRow(row.id, row.organisation_id, str(row.role))


async def has_credential(session: AsyncSession, device_id: int, credential_hash: str) -> bool:
    found = await session.execute(
        select(Device.id).where(
            Device.id == device_id, Device.credential_hash == credential_hash, Device.revoked_at.is_(None)
        )
    )
    return found.first() is not None


async def device_by_external_id(session: AsyncSession, organisation_id: int, external_id: str) -> DeviceRow | None:
    row = (
        await session.execute(
            select(Device.id, Device.organisation_id, Device.role).where(
                Device.organisation_id == organisation_id,
                Device.external_id == external_id,
                Device.revoked_at.is_(None),
            )
        )
    ).first()
    return None if row is None else DeviceRow(row.id, row.organisation_id, str(row.role))


async def update_device(session: AsyncSession, device_id: int, values: dict[str, Any]) -> None:
    """Sets the columns in `values` (and `updated_at`)."""
    await session.execute(update(Device).where(Device.id == device_id).values(**values, updated_at=func.now()))


async def consents(session: AsyncSession, device_id: int) -> dict[str, bool]:
    current: dict[str, bool] = (
        await session.execute(select(Device.consents).where(Device.id == device_id))
    ).scalar_one()
    return current


async def load_device(session: AsyncSession, device_id: int) -> Device | None:
    found: Device | None = (await session.execute(select(Device).where(Device.id == device_id))).scalar_one_or_none()
    return found


async def history(session: AsyncSession, device: Device) -> DeviceHistory:
    device_id = device.id
    fixes = (await session.execute(select(Fix).where(Fix.device_id == device_id).order_by(Fix.device_ts))).scalars()
    events = (await session.execute(select(Event).where(Event.device_id == device_id).order_by(Event.id))).scalars()
    visits = (await session.execute(select(Visit).where(Visit.device_id == device_id).order_by(Visit.id))).scalars()
    notes = (
        await session.execute(select(Notification).where(Notification.device_id == device_id).order_by(Notification.id))
    ).scalars()
    return DeviceHistory(device, list(fixes), list(events), list(visits), list(notes))


async def delete_device(session: AsyncSession, device_id: int) -> None:
    """The row locked first, then its fixes (not foreign-keyed, partitioned) and the device (the rest cascades)."""
    await session.execute(select(Device.id).where(Device.id == device_id).with_for_update())
    await session.execute(delete(Fix).where(Fix.device_id == device_id))
    await session.execute(delete(Device).where(Device.id == device_id))

"""SQL the admin API runs on an organisation's devices (the devices' own use cases are in `devices.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.models import Device


@dataclass(frozen=True, slots=True)
class StaffFields:
    device_id: int
    team: str | None
    is_supervisor: bool


async def set_staff_fields(
    session: AsyncSession, organisation_id: int, device_id: int, values: dict[str, Any]
) -> StaffFields | None:
    """Set a device's team and/or supervisor flag; None when the organisation has no such device."""
    row = (
        await session.execute(
            update(Device)
            .where(Device.id == device_id, Device.organisation_id == organisation_id)
            .values(**values)
            .returning(Device.id, Device.team, Device.is_supervisor)
        )
    ).first()
    return None if row is None else StaffFields(row.id, row.team, row.is_supervisor)

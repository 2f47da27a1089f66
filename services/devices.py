"""Device registration, credentials, consents, export and erase."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from kernel.errors import Conflict, Unauthorized
from services import device_repository as repository
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
    device_id = await repository.insert_device(session, organisation_id, hash_secret(credential), fields)
    if device_id is None:
        raise Conflict(f"a device with external_id {fields['external_id']!r} is already registered")
    return device_id, credential


def _auth(row: repository.DeviceRow) -> DeviceAuth:
    return DeviceAuth(device_id=row.device_id, organisation_id=row.organisation_id, role=row.role)


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
    row = await repository.device_by_credential(session, hash_secret(credential), lock)
    if row is None:
        raise Unauthorized("unknown or revoked device credential")
    return _auth(row)


async def credential_valid(session: AsyncSession, device_id: int, credential: str) -> bool:
    """Whether this credential still opens this device (open streams re-check it; no lock)."""
    return await repository.has_credential(session, device_id, hash_secret(credential))


async def device_by_external_id(session: AsyncSession, organisation_id: int, external_id: str) -> DeviceAuth | None:
    row = await repository.device_by_external_id(session, organisation_id, external_id)
    return None if row is None else _auth(row)


async def rotate_credential(session: AsyncSession, device_id: int) -> str:
    credential = new_credential()
    await repository.update_device(session, device_id, {"credential_hash": hash_secret(credential)})
    return credential


async def update_device(session: AsyncSession, device_id: int, values: dict[str, Any]) -> None:
    if "fcm_token" in values:
        values = {**values, "fcm_token_active": values["fcm_token"] is not None}
    if "webpush_endpoint" in values:
        values = {**values, "webpush_active": values["webpush_endpoint"] is not None}
    await repository.update_device(session, device_id, values)


async def set_consents(session: AsyncSession, device_id: int, consents: dict[str, bool]) -> dict[str, bool]:
    merged = {**await repository.consents(session, device_id), **consents}
    await repository.update_device(session, device_id, {"consents": merged})
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
    device = await repository.load_device(session, device_id)
    if device is None:  # erased by a request that committed after this one authenticated
        raise Unauthorized("this device was erased")
    if not include_history:
        return {"device": _row(device, skip=("credential_hash",))}
    stored = await repository.history(session, device)
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "device": _row(device, skip=("credential_hash",)),
        "fixes": [_row(f) for f in stored.fixes],
        "events": [_row(e) for e in stored.events],
        "visits": [_row(v) for v in stored.visits],
        "notifications": [_row(n) for n in stored.notifications],
    }


async def erase_device(session: AsyncSession, device_id: int) -> None:
    """Forget the device: fixes (not foreign-keyed, partitioned) explicitly, the rest by cascade.

    The device's row is locked first (the caller's authentication normally holds it already), so no request of
    this device is between authenticating and committing while its fixes are deleted: none can leave fixes behind.
    """
    await repository.delete_device(session, device_id)

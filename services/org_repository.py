"""All SQL of organisations (`orgs.py`): their rows, admin and enrolment API keys, settings and QR keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.models import ApiKey, Organisation, Role


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: int
    organisation_id: int
    role: Role
    name: str


@dataclass(frozen=True, slots=True)
class SettingsRow:
    late_fix_after_s: int | None


@dataclass(frozen=True, slots=True)
class QrKeyRow:
    qr_key: str | None  # sealed; None until the first code is printed
    rotated_at: datetime | None


async def organisation_by_slug(session: AsyncSession, slug: str) -> int | None:
    found: int | None = (
        await session.execute(select(Organisation.id).where(Organisation.slug == slug))
    ).scalar_one_or_none()
    return found


async def insert_organisation(session: AsyncSession, name: str, slug: str) -> int:
    result = await session.execute(insert(Organisation).values(name=name, slug=slug).returning(Organisation.id))
    return int(result.scalar_one())


async def insert_api_key(
    session: AsyncSession, *, organisation_id: int, name: str, role: Role, purpose: str, key_hash: str
) -> None:
    await session.execute(
        insert(ApiKey).values(organisation_id=organisation_id, name=name, role=role, purpose=purpose, key_hash=key_hash)
    )


async def api_key_by_hash(session: AsyncSession, key_hash: str, purpose: str) -> ApiKeyRow | None:
    """The unrevoked key of this purpose with this hash."""
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.organisation_id, ApiKey.role, ApiKey.name).where(
                ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None), ApiKey.purpose == purpose
            )
        )
    ).first()
    return None if row is None else ApiKeyRow(row.id, row.organisation_id, Role(row.role), row.name)


async def settings(session: AsyncSession, organisation_id: int, *, for_update: bool = False) -> SettingsRow | None:
    """The organisation's own settings, or None when there is no such organisation; `for_update` locks its row."""
    statement = select(Organisation.late_fix_after_s).where(Organisation.id == organisation_id)
    if for_update:
        statement = statement.with_for_update()
    row = (await session.execute(statement)).first()
    return None if row is None else SettingsRow(row.late_fix_after_s)


async def set_late_fix_after_s(session: AsyncSession, organisation_id: int, late_fix_after_s: int | None) -> None:
    await session.execute(
        update(Organisation).where(Organisation.id == organisation_id).values(late_fix_after_s=late_fix_after_s)
    )


async def set_qr_key_if_none(session: AsyncSession, organisation_id: int, sealed: str) -> str | None:
    """Stores `sealed` unless the organisation has a key already; the key it has then (one of two racing first
    needs wins, and both read the winner's)."""
    await session.execute(
        update(Organisation)
        .where(Organisation.id == organisation_id, Organisation.qr_key.is_(None))
        .values(qr_key=sealed)
    )
    stored: str | None = (
        await session.execute(select(Organisation.qr_key).where(Organisation.id == organisation_id))
    ).scalar_one()
    return stored


async def qr_key(session: AsyncSession, organisation_id: int) -> QrKeyRow | None:
    """The organisation's sealed QR key and when it was last rotated; None when there is no such organisation."""
    row = (
        await session.execute(
            select(Organisation.qr_key, Organisation.qr_key_rotated_at).where(Organisation.id == organisation_id)
        )
    ).first()
    return None if row is None else QrKeyRow(row.qr_key, row.qr_key_rotated_at)


async def replace_qr_key(session: AsyncSession, organisation_id: int, sealed: str) -> datetime | None:
    """Stores a new sealed key; when it was rotated, or None when there is no such organisation."""
    found = await session.execute(
        update(Organisation)
        .where(Organisation.id == organisation_id)
        .values(qr_key=sealed, qr_key_rotated_at=func.now())
        .returning(Organisation.qr_key_rotated_at)
    )
    rotated_at: datetime | None = found.scalar_one_or_none()
    return rotated_at

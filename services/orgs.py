"""Organisations and their admin API keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.errors import Conflict, Forbidden, Unauthorized
from services.models import ApiKey, Organisation, Role

ROLE_RANK = {Role.viewer: 0, Role.editor: 1, Role.owner: 2}


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    organisation_id: int
    role: Role
    actor: str

    def require(self, role: Role) -> None:
        if ROLE_RANK[self.role] < ROLE_RANK[role]:
            raise Forbidden(f"this needs the {role.value} role; you are {self.role.value}")


async def create_organisation(session: AsyncSession, *, name: str, slug: str) -> int:
    if (await session.execute(select(Organisation.id).where(Organisation.slug == slug))).first():
        raise Conflict(f"organisation {slug!r} exists")
    result = await session.execute(insert(Organisation).values(name=name, slug=slug).returning(Organisation.id))
    return int(result.scalar_one())


async def get_or_create_organisation(session: AsyncSession, *, name: str, slug: str) -> int:
    found = (await session.execute(select(Organisation.id).where(Organisation.slug == slug))).scalar_one_or_none()
    return found if found is not None else await create_organisation(session, name=name, slug=slug)


async def create_api_key(
    session: AsyncSession,
    *,
    organisation_id: int,
    name: str,
    role: Role = Role.editor,
    purpose: str = "admin",
) -> str:
    key = ("pce_" if purpose == "enrolment" else "pck_") + secrets.token_urlsafe(32)
    await session.execute(
        insert(ApiKey).values(
            organisation_id=organisation_id, name=name, role=role, purpose=purpose, key_hash=hash_secret(key)
        )
    )
    return key


async def authenticate_api_key(session: AsyncSession, key: str, purpose: str = "admin") -> Principal:
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.organisation_id, ApiKey.role, ApiKey.name).where(
                ApiKey.key_hash == hash_secret(key), ApiKey.revoked_at.is_(None), ApiKey.purpose == purpose
            )
        )
    ).first()
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return Principal(organisation_id=row.organisation_id, role=Role(row.role), actor=f"api-key:{row.id}:{row.name}")

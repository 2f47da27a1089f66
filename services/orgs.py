"""Organisations, their admin API keys and their own settings (the late-fix limit)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit import record_audit
from services.errors import Conflict, Forbidden, NotFound, Problem, Unauthorized, ValidationFailed
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


# ---- the organisation's own settings ----

# The late limit an organisation may choose: a minute at least (device clocks and uploads jitter by seconds), a
# week at most (older fixes are refused anyway: mobile_api.schemas.MAX_FIX_AGE).
LATE_FIX_AFTER_S_MIN = 60
LATE_FIX_AFTER_S_MAX = 7 * 86400


@dataclass(frozen=True, slots=True)
class OrganisationSettings:
    late_fix_after_s: int | None  # None: the service's setting applies


async def organisation_settings(session: AsyncSession, organisation_id: int) -> OrganisationSettings:
    row = (
        await session.execute(select(Organisation.late_fix_after_s).where(Organisation.id == organisation_id))
    ).first()
    if row is None:
        raise NotFound(f"organisation {organisation_id} not found")
    return OrganisationSettings(late_fix_after_s=row.late_fix_after_s)


async def set_late_fix_after_s(
    session: AsyncSession, *, organisation_id: int, actor: str, late_fix_after_s: int | None
) -> OrganisationSettings:
    """Set (or, with None, clear) the organisation's late limit; fixes arriving after it read the new value.

    The bounds are checked here too (the API checks them at the edge): a value outside them is a 422.
    """
    if late_fix_after_s is not None and not LATE_FIX_AFTER_S_MIN <= late_fix_after_s <= LATE_FIX_AFTER_S_MAX:
        raise ValidationFailed(
            "late_fix_after_s out of range",
            [
                Problem(
                    "late_fix_after_s",
                    f"seconds between {LATE_FIX_AFTER_S_MIN} and {LATE_FIX_AFTER_S_MAX} (7 days), or null",
                )
            ],
        )
    before = (
        await session.execute(
            select(Organisation.late_fix_after_s).where(Organisation.id == organisation_id).with_for_update()
        )
    ).first()
    if before is None:
        raise NotFound(f"organisation {organisation_id} not found")
    await session.execute(
        update(Organisation).where(Organisation.id == organisation_id).values(late_fix_after_s=late_fix_after_s)
    )
    await record_audit(
        session,
        organisation_id=organisation_id,
        actor=actor,
        action="update",
        entity="organisation",
        entity_id=organisation_id,
        details={"late_fix_after_s": {"from": before.late_fix_after_s, "to": late_fix_after_s}},
    )
    return OrganisationSettings(late_fix_after_s=late_fix_after_s)

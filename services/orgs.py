"""Organisations, their admin API keys, their own settings (the late-fix limit) and their QR signing keys."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from kernel.audit import record_audit
from kernel.errors import Conflict, Forbidden, NotFound, Problem, Unauthorized, ValidationFailed
from kernel.sealing import Sealer, SealError
from services import org_repository as repository
from services.models import Role

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
    if await repository.organisation_by_slug(session, slug) is not None:
        raise Conflict(f"organisation {slug!r} exists")
    return await repository.insert_organisation(session, name, slug)


async def get_or_create_organisation(session: AsyncSession, *, name: str, slug: str) -> int:
    found = await repository.organisation_by_slug(session, slug)
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
    await repository.insert_api_key(
        session, organisation_id=organisation_id, name=name, role=role, purpose=purpose, key_hash=hash_secret(key)
    )
    return key


async def authenticate_api_key(session: AsyncSession, key: str, purpose: str = "admin") -> Principal:
    row = await repository.api_key_by_hash(session, hash_secret(key), purpose)
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return Principal(organisation_id=row.organisation_id, role=row.role, actor=f"api-key:{row.id}:{row.name}")


# ---- the organisation's own settings ----

# Older fixes (offline queues) are accepted for as long as raw fixes are kept (fix_retention_days' default):
# a week-old upload still counts for analytics and visits (as `late` events, never pushed); older is a 422
# (mobile_api.schemas checks it; the organisation's settings show it).
MAX_FIX_AGE = timedelta(days=7)
# The late limit an organisation may choose: a minute at least (device clocks and uploads jitter by seconds), a
# week at most (older fixes are refused anyway: MAX_FIX_AGE).
LATE_FIX_AFTER_S_MIN = 60
LATE_FIX_AFTER_S_MAX = 7 * 86400


@dataclass(frozen=True, slots=True)
class OrganisationSettings:
    late_fix_after_s: int | None  # None: the service's setting applies


async def organisation_settings(session: AsyncSession, organisation_id: int) -> OrganisationSettings:
    row = await repository.settings(session, organisation_id)
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
    before = await repository.settings(session, organisation_id, for_update=True)
    if before is None:
        raise NotFound(f"organisation {organisation_id} not found")
    await repository.set_late_fix_after_s(session, organisation_id, late_fix_after_s)
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


# ---- the organisation's QR signing key ----

# Its own HKDF purpose: the sealing key of QR keys is not the one of webhook secrets.
QR_KEY_PURPOSE = b"placecast organisation qr keys"
QR_KEY_BYTES = 32
ROTATION_WARNING = (
    "every QR code printed for this organisation stops working at once; print and put up new codes after rotating"
)


def qr_key_sealer(secret_key: str) -> Sealer:
    """Seals and opens organisations' QR keys under the service's PLACECAST_SECRET_KEY."""
    return Sealer(secret_key, purpose=QR_KEY_PURPOSE)


def _new_sealed_qr_key(sealer: Sealer) -> str:
    return sealer.seal(base64.urlsafe_b64encode(secrets.token_bytes(QR_KEY_BYTES)).decode())


def _open_qr_key(sealer: Sealer, stored: str) -> bytes:
    if not Sealer.is_sealed(stored):
        raise Conflict("the organisation's QR key is stored unsealed; an owner must rotate it")
    try:
        return base64.urlsafe_b64decode(sealer.open(stored))
    except SealError as error:
        raise Conflict(
            "the organisation's QR key cannot be opened (PLACECAST_SECRET_KEY changed?); an owner must rotate it,"
            " which invalidates its printed codes"
        ) from error


async def qr_key(session: AsyncSession, *, sealer: Sealer, organisation_id: int, create: bool) -> bytes | None:
    """The organisation's QR signing key (32 random bytes). Made on first need when `create`; without, None while
    the organisation has none (no token of it can be valid). Two first needs at once agree on one key: only the
    first UPDATE finds the column empty, the second reads what it wrote."""
    row = await repository.qr_key(session, organisation_id)
    if row is None:
        raise NotFound(f"organisation {organisation_id} not found")
    stored: str | None = row.qr_key
    if stored is None:
        if not create:
            return None
        stored = await repository.set_qr_key_if_none(session, organisation_id, _new_sealed_qr_key(sealer))
    assert stored is not None
    return _open_qr_key(sealer, stored)


@dataclass(frozen=True, slots=True)
class QrKeyState:
    exists: bool  # False until the first code is printed
    rotated_at: datetime | None  # codes printed before this no longer verify


async def qr_key_state(session: AsyncSession, organisation_id: int) -> QrKeyState:
    row = await repository.qr_key(session, organisation_id)
    if row is None:
        raise NotFound(f"organisation {organisation_id} not found")
    return QrKeyState(exists=row.qr_key is not None, rotated_at=row.rotated_at)


async def rotate_qr_key(session: AsyncSession, *, sealer: Sealer, organisation_id: int, actor: str) -> QrKeyState:
    """A new random QR key: every code printed before stops verifying (see ROTATION_WARNING). Audited."""
    rotated_at = await repository.replace_qr_key(session, organisation_id, _new_sealed_qr_key(sealer))
    if rotated_at is None:
        raise NotFound(f"organisation {organisation_id} not found")
    await record_audit(
        session,
        organisation_id=organisation_id,
        actor=actor,
        action="rotate",
        entity="qr_key",
        entity_id=organisation_id,
        details={"printed_codes": "invalidated"},
    )
    return QrKeyState(exists=True, rotated_at=rotated_at)

"""Admin API for the organisation's own settings: the late-fix limit and the QR signing key.

`GET /admin/v1/organisation/settings` (any role) shows the organisation's value, the one in force and the oldest
fix accepted at all; `PATCH` (owners) sets it, or with null hands it back to the service's setting. A fix that
reaches the server later than the limit after it was measured makes `late` events: recorded, sent to webhooks
with the flag, never pushed (services/tracking.py); a fix older than `max_fix_age_s` is refused with a 422.

`GET /admin/v1/organisation/qr-key` (any role) says whether the organisation has a QR key and when it was last
rotated; `POST .../qr-key/rotate` (owners, with `{"confirm": true}`) replaces it: every printed code stops working.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from infra.deps import PrincipalDep, SettingsDep, UowDep
from infra.settings import Settings
from kernel.errors import Problem, ValidationFailed
from services import orgs
from services.models import Role

router = APIRouter(prefix="/admin/v1", tags=["admin: organisation"])

LateFixAfter = Annotated[
    int,
    Field(
        strict=True,  # 600, not "600", 600.0 or true
        ge=orgs.LATE_FIX_AFTER_S_MIN,
        le=orgs.LATE_FIX_AFTER_S_MAX,
        description="seconds: a fix arriving later than this after it was measured makes late events",
    ),
]


class SettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    late_fix_after_s: LateFixAfter | None = Field(
        default=None, description="60 s to 7 days; null: the service's setting (PLACECAST_LATE_FIX_AFTER_S)"
    )


class OrganisationSettingsOut(BaseModel):
    late_fix_after_s: int | None = Field(description="the organisation's own limit; null: the service's applies")
    effective_late_fix_after_s: int = Field(description="the limit in force")
    max_fix_age_s: int = Field(description="fixes older than this are refused (422), late or not")


def _out(settings: Settings, found: orgs.OrganisationSettings) -> OrganisationSettingsOut:
    own = found.late_fix_after_s
    return OrganisationSettingsOut(
        late_fix_after_s=own,
        effective_late_fix_after_s=settings.late_fix_after_s if own is None else own,
        max_fix_age_s=int(orgs.MAX_FIX_AGE.total_seconds()),
    )


@router.get("/organisation/settings", response_model=OrganisationSettingsOut)
async def get_organisation_settings(
    principal: PrincipalDep, uow: UowDep, settings: SettingsDep
) -> OrganisationSettingsOut:
    return _out(settings, await orgs.organisation_settings(uow.session, principal.organisation_id))


@router.patch("/organisation/settings", response_model=OrganisationSettingsOut)
async def update_organisation_settings(
    body: SettingsPatch, principal: PrincipalDep, uow: UowDep, settings: SettingsDep
) -> OrganisationSettingsOut:
    """Owners only. Takes effect with the next fix received."""
    principal.require(Role.owner)
    if "late_fix_after_s" not in body.model_fields_set:
        raise ValidationFailed("nothing to change", [Problem("late_fix_after_s", "give a number of seconds or null")])
    found = await orgs.set_late_fix_after_s(
        uow.session,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        late_fix_after_s=body.late_fix_after_s,
    )
    return _out(settings, found)


class QrKeyOut(BaseModel):
    exists: bool = Field(description="false until the first QR code is made")
    rotated_at: datetime | None = Field(description="codes printed before this no longer verify")
    warning: str = Field(default=orgs.ROTATION_WARNING, description="what rotating does")


class QrKeyRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: bool = Field(strict=True, description="true: yes, every printed QR code of the organisation stops working")


def _qr_out(state: orgs.QrKeyState) -> QrKeyOut:
    return QrKeyOut(exists=state.exists, rotated_at=state.rotated_at)


@router.get("/organisation/qr-key", response_model=QrKeyOut)
async def get_qr_key(principal: PrincipalDep, uow: UowDep) -> QrKeyOut:
    return _qr_out(await orgs.qr_key_state(uow.session, principal.organisation_id))


@router.post("/organisation/qr-key/rotate", response_model=QrKeyOut)
async def rotate_qr_key(body: QrKeyRotation, principal: PrincipalDep, uow: UowDep, settings: SettingsDep) -> QrKeyOut:
    """Owners only. A new QR signing key: every code printed before stops working at once (audited)."""
    principal.require(Role.owner)
    if not body.confirm:
        raise ValidationFailed("rotation not confirmed", [Problem("confirm", f"send true: {orgs.ROTATION_WARNING}")])
    state = await orgs.rotate_qr_key(
        uow.session,
        sealer=orgs.qr_key_sealer(settings.secret_key.get_secret_value()),
        organisation_id=principal.organisation_id,
        actor=principal.actor,
    )
    return _qr_out(state)

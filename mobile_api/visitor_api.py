"""`/v1` for the visitor web app (`/app`): enrolment by the printed QR code, and a place's public page.

`POST /v1/devices/enrol-by-qr` needs no enrolment key: a browser cannot keep a secret, and the key must never be in
a URL. The QR token is the proof instead (see `services/visitor.py`). It is limited like enrolment with a key: per
client address (counted before the token is checked, so guessing tokens is limited too) and per token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from infra.deps import IdPath, SettingsDep, UowDep
from kernel.timezones import time_zone
from mobile_api.deps import DeviceDep, limit_enrolment_by_address, limit_enrolment_by_key
from mobile_api.schemas import Purpose
from services import visitor

router = APIRouter(prefix="/v1", tags=["mobile: visitor app"])


class QrEnrolmentIn(BaseModel):
    """Nothing identifying: the code scanned, the language and time zone the browser reports, and consents."""

    model_config = ConfigDict(extra="forbid", strict=True)
    qr_token: str = Field(min_length=5, max_length=500, description="The token of the place's printed QR code")
    locale: str = Field(default="en", min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
    timezone: str = Field(default="Europe/Helsinki", max_length=64)
    consents: dict[Purpose, StrictBool] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        time_zone(value)
        return value


class QrEnrolled(BaseModel):
    device_id: int
    place_id: int = Field(description="The place whose code was scanned")
    credential: str = Field(description="Shown once; send as 'Authorization: Bearer <credential>'")


@router.post(
    "/devices/enrol-by-qr",
    status_code=status.HTTP_201_CREATED,
    response_model=QrEnrolled,
    responses={403: {"description": "Not a valid QR token of any place"}},
)
async def enrol_by_qr(body: QrEnrolmentIn, uow: UowDep, request: Request, settings: SettingsDep) -> QrEnrolled:
    """Enrol a new anonymous visitor device with the token of a place's printed QR code (the web app's first use).
    Only ever creates a new device; limited per client address and per token (429 + Retry-After)."""
    await limit_enrolment_by_address(request)
    await limit_enrolment_by_key(request, body.qr_token)
    fields = {"locale": body.locale, "timezone": body.timezone, "consents": dict(body.consents)}
    enrolled = await visitor.enrol_by_qr(
        uow, secret=settings.secret_key.get_secret_value(), token=body.qr_token, fields=fields
    )
    return QrEnrolled(device_id=enrolled.device_id, place_id=enrolled.place_id, credential=enrolled.credential)


@router.get("/places/{place_id}/public")
async def place_public(place_id: IdPath, device: DeviceDep, uow: UowDep) -> dict[str, Any]:
    """A place of the device's organisation as its visitors see it: name, address, opening hours (and whether it is
    open now) and the content on show now."""
    return await visitor.place_page(uow, device=device, place_id=place_id, now=datetime.now(UTC))

"""Printable QR codes for check-in at a place's door: an SVG holding a place-bound token signed with the
organisation's own QR key (rotated at POST /admin/v1/organisation/qr-key/rotate, which voids printed codes).

The code is the URL of the visitor web app, `<public base URL>/app/c/<token>`: any phone's camera opens it, and
the app enrols, checks in and shows the place. A native app reads the token from the URL's last segment (or asks
for the raw token: POST /admin/v1/places/{id}/qr-token)."""

from __future__ import annotations

import io
from urllib.parse import quote

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response

from infra.deps import IdPath, PrincipalDep, SettingsDep, UowDep
from infra.proxy import is_https
from infra.settings import Settings
from kernel.uow import UnitOfWork
from services import places as place_service
from services.checkins import issue_qr_token
from services.models import Role

router = APIRouter(prefix="/admin/v1", tags=["admin: places"])


def public_base_url(settings: Settings, request: Request) -> str:
    """Where visitors reach this service: the setting, else the address (and scheme) the admin reached it at."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    scheme = "https" if is_https(request) else "http"
    return f"{scheme}://{request.url.netloc}"


def visitor_app_url(base_url: str, token: str) -> str:
    """What a printed code holds: the visitor app's check-in page for the token."""
    return f"{base_url}/app/c/{quote(token, safe='')}"


async def place_token(uow: UnitOfWork, settings: Settings, organisation_id: int, place_id: int) -> tuple[str, int]:
    """The token printed for a place, signed with the organisation's QR key (made on first need), and its
    lifetime in seconds."""
    ttl_s = settings.qr_token_ttl_days * 86400
    secret = settings.secret_key.get_secret_value()
    token = await issue_qr_token(uow, secret=secret, organisation_id=organisation_id, place_id=place_id, ttl_s=ttl_s)
    return token, ttl_s


@router.get("/places/{place_id}/qr.svg", response_class=Response)
async def place_qr_svg(
    place_id: IdPath, principal: PrincipalDep, uow: UowDep, settings: SettingsDep, request: Request
) -> Response:
    """An SVG QR code to print at the door, holding the visitor app's URL `<public base URL>/app/c/<token>`:
    scanning it opens the app, which checks in with it (no location needed). Valid qr_token_ttl_days."""
    # The code is a credential for checking in, so the same role as POST .../qr-token issues it.
    principal.require(Role.editor)
    place = await place_service.get_place(uow, organisation_id=principal.organisation_id, place_id=place_id)
    token, _ = await place_token(uow, settings, principal.organisation_id, place_id)
    uri = visitor_app_url(public_base_url(settings, request), token)
    out = io.BytesIO()
    # A white background: the print must scan on any paper and any page colour; <desc> repeats the payload.
    segno.make(uri, error="m").save(out, kind="svg", scale=8, border=4, light="#fff", title=place.spec.name, desc=uri)
    return Response(
        out.getvalue(),
        media_type="image/svg+xml",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": f'inline; filename="place-{place_id}-checkin-qr.svg"',
        },
    )

"""QR check-in tokens signed with the organisation's own key: forged ones refused, rotation voids printed codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import pytest
from sqlalchemy import text

from admin import register_admin_routers
from kernel.sealing import Sealer, SealError
from kernel.uow import unit_of_work
from services import orgs
from services.checkins import sign_qr_token
from services.models import Role
from services.orgs import create_api_key, create_organisation
from tests.api.test_accounts import browser, log_in, make_user
from tests.world import World, register

# What every instance signed with until now: anyone with the source could print a valid code for any place.
OLD_PUBLIC_KEY = "dev-secret" + "-change-me"


@pytest.fixture(scope="module", autouse=True)
def _admin_routes(app) -> None:
    register_admin_routers(app)


def _signed_as_before(secret: bytes, organisation_id: int, place_id: int, expires: int) -> str:
    digest = hmac.new(secret, f"{organisation_id}:{place_id}:{expires}".encode(), hashlib.sha256).digest()[:18]
    return f"{place_id}.{expires}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


async def _owner(app, world: World) -> dict[str, str]:
    async with unit_of_work(app.state.resources.session_factory) as uow:
        key = await create_api_key(uow.session, organisation_id=world.organisation_id, name="owner", role=Role.owner)
    return {"X-API-Key": key}


async def _rotations(app, world: World) -> list[Any]:
    async with app.state.resources.session_factory() as session:
        found = await session.execute(
            text("SELECT actor, action, entity FROM audit_log WHERE organisation_id = :o AND entity = 'qr_key'"),
            {"o": world.organisation_id},
        )
        return list(found.all())


async def _check_in(client, device: dict[str, str], place_id: int, token: str):
    return await client.post("/v1/checkins", json={"place_id": place_id, "qr_token": token}, headers=device)


async def _printed(client, world: World) -> str:
    answer = await client.post(f"/admin/v1/places/{world.place_id}/qr-token", headers=world.admin)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["token"]
    return token


async def test_a_token_forged_with_the_old_public_key_is_refused(client, world: World) -> None:
    device = await register(client, world)
    await _printed(client, world)  # the organisation has a key of its own
    forged = _signed_as_before(OLD_PUBLIC_KEY.encode(), world.organisation_id, world.place_id, int(time.time()) + 3600)
    answer = await _check_in(client, device, world.place_id, forged)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "forbidden"


async def test_before_any_code_is_printed_no_token_is_valid_and_none_makes_a_key(app, client, world: World) -> None:
    device = await register(client, world)
    forged = _signed_as_before(OLD_PUBLIC_KEY.encode(), world.organisation_id, world.place_id, int(time.time()) + 3600)
    assert (await _check_in(client, device, world.place_id, forged)).status_code == 403
    async with app.state.resources.session_factory() as session:
        stored = await session.scalar(
            text("SELECT qr_key FROM organisations WHERE id = :o"), {"o": world.organisation_id}
        )
    assert stored is None


async def test_a_token_signed_with_another_organisations_key_is_refused(app, client, world: World, settings) -> None:
    device = await register(client, world)
    mine = await _printed(client, world)
    sealer = orgs.qr_key_sealer(settings.secret_key.get_secret_value())
    async with unit_of_work(app.state.resources.session_factory) as uow:
        slug = "qr-" + secrets.token_hex(4)
        other = await create_organisation(uow.session, name=slug, slug=slug)
        other_key = await orgs.qr_key(uow.session, sealer=sealer, organisation_id=other, create=True)
        own_key = await orgs.qr_key(uow.session, sealer=sealer, organisation_id=world.organisation_id, create=False)
    assert other_key is not None and own_key is not None and other_key != own_key and len(own_key) == 32
    # Everything right (this organisation, this place, a future expiry) but the key.
    forged = sign_qr_token(other_key, world.organisation_id, world.place_id, 3600)
    assert (await _check_in(client, device, world.place_id, forged)).status_code == 403
    assert (await _check_in(client, device, world.place_id, mine)).status_code == 201


@pytest.mark.parametrize(
    "token",
    [
        "",
        "....",
        "1.2",
        "x.y.z",
        "{place}.{future}.é",  # compare_digest raises TypeError on non-ASCII text
        "{place}.{future}.\u0000",
        "{place}.9" + "9" * 300 + ".abc",
        "{place}.-1.abc",
        "{place}.{future}." + "A" * 400,
        "{place}.１２.abc",  # noqa: RUF001 (full-width digits: int() reads them)
    ],
)
async def test_malformed_tokens_are_403_never_500(client, world: World, token: str) -> None:
    device = await register(client, world)
    await _printed(client, world)
    token = token.replace("{place}", str(world.place_id)).replace("{future}", str(int(time.time()) + 3600))
    answer = await _check_in(client, device, world.place_id, token)
    assert answer.status_code == 403, answer.text


async def test_rotation_voids_printed_codes_and_is_audited(app, client, world: World, settings) -> None:
    device = await register(client, world)
    owner = await _owner(app, world)
    before = await _printed(client, world)
    svg_uri_before = (await client.get(f"/admin/v1/places/{world.place_id}/qr.svg", headers=world.admin)).text
    assert (await _check_in(client, device, world.place_id, before)).status_code == 201
    state = await client.get("/admin/v1/organisation/qr-key", headers=world.admin)
    assert state.status_code == 200 and state.json()["exists"] is True and state.json()["rotated_at"] is None
    assert "stops working" in state.json()["warning"]

    unconfirmed = await client.post("/admin/v1/organisation/qr-key/rotate", json={}, headers=owner)
    assert unconfirmed.status_code == 422
    for bad in ({"confirm": False}, {"confirm": "true"}, {"confirm": 1}, {"confirm": True, "extra": 1}):
        answer = await client.post("/admin/v1/organisation/qr-key/rotate", json=bad, headers=owner)
        assert answer.status_code == 422, (bad, answer.text)

    rotated = await client.post("/admin/v1/organisation/qr-key/rotate", json={"confirm": True}, headers=owner)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["exists"] is True and rotated.json()["rotated_at"] is not None
    assert "stops working" in rotated.json()["warning"]

    refused = await _check_in(client, device, world.place_id, before)
    assert refused.status_code == 403 and "rotation" in refused.json()["message"]
    token_in_svg = svg_uri_before.split("/app/c/")[1].split("<")[0]
    assert (await _check_in(client, device, world.place_id, token_in_svg)).status_code == 403
    after = await _printed(client, world)
    assert (await _check_in(client, device, world.place_id, after)).status_code == 201

    audit = await _rotations(app, world)
    async with app.state.resources.session_factory() as session:
        stored = await session.scalar(
            text("SELECT qr_key FROM organisations WHERE id = :o"), {"o": world.organisation_id}
        )
    assert [(a.action, a.entity) for a in audit] == [("rotate", "qr_key")] and audit[0].actor.startswith("api-key:")
    # Stored sealed, under a purpose of its own: the webhook secrets' sealing key does not open it.
    assert stored.startswith("fernet:")
    with pytest.raises(SealError):
        Sealer(settings.secret_key.get_secret_value()).open(stored)
    assert len(base64.urlsafe_b64decode(orgs.qr_key_sealer(settings.secret_key.get_secret_value()).open(stored))) == 32


async def test_only_owners_rotate_and_a_browser_session_needs_the_csrf_token(app, client, world: World) -> None:
    confirm = {"confirm": True}
    assert (
        await client.post("/admin/v1/organisation/qr-key/rotate", json=confirm, headers=world.admin)
    ).status_code == 403
    async with unit_of_work(app.state.resources.session_factory) as uow:
        viewer_key = await create_api_key(
            uow.session, organisation_id=world.organisation_id, name="viewer", role=Role.viewer
        )
    viewer = {"X-API-Key": viewer_key}
    assert (await client.post("/admin/v1/organisation/qr-key/rotate", json=confirm, headers=viewer)).status_code == 403
    assert (await client.get("/admin/v1/organisation/qr-key", headers=viewer)).status_code == 200
    assert (await client.post("/admin/v1/organisation/qr-key/rotate", json=confirm)).status_code == 401

    _, viewer_email = await make_user(app, world.organisation_id, "viewer")
    async with browser(app) as http:
        csrf = (await log_in(http, viewer_email))["csrf_token"]
        answer = await http.post("/admin/v1/organisation/qr-key/rotate", json=confirm, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 403
    _, owner_email = await make_user(app, world.organisation_id, "owner")
    async with browser(app) as http:
        csrf = (await log_in(http, owner_email))["csrf_token"]
        assert (await http.post("/admin/v1/organisation/qr-key/rotate", json=confirm)).status_code == 403
        answer = await http.post("/admin/v1/organisation/qr-key/rotate", json=confirm, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 200, answer.text
    actors = [row.actor for row in await _rotations(app, world)]
    assert len(actors) == 1  # only the owner's rotation happened

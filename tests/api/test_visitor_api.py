"""The visitor web app's API: enrolment by a printed QR code (only ever a new anonymous visitor device of that
place's organisation, limited per address), a place's public page scoped to the device's organisation, and the
QR code holding the app's URL."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_device_identity import random_address
from tests.world import World, register


async def _token(client: Any, world: World) -> dict[str, Any]:
    answer = await client.post(f"/admin/v1/places/{world.place_id}/qr-token", headers=world.admin)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_qr_token_enrols_a_new_visitor_of_that_organisation_each_time(client, world: World) -> None:
    issued = await _token(client, world)
    assert issued["url"] == f"http://test/app/c/{issued['token']}"
    body = {"qr_token": issued["token"], "locale": "fi-FI", "timezone": "Europe/Helsinki", "consents": {"offers": True}}
    first = await client.post("/v1/devices/enrol-by-qr", json=body)
    assert first.status_code == 201, first.text
    second = await client.post("/v1/devices/enrol-by-qr", json=body)
    assert second.status_code == 201 and second.json()["device_id"] != first.json()["device_id"]
    assert first.json()["place_id"] == world.place_id
    device = {"Authorization": f"Bearer {first.json()['credential']}"}
    me = (await client.get("/v1/devices/me", headers=device)).json()
    assert (me["organisation_id"], me["role"], me["platform"], me["external_id"]) == (
        world.organisation_id,
        "visitor",
        "web",
        None,
    )
    assert me["consents"] == {"offers": True} and me["locale"] == "fi-FI"
    checked = await client.post(
        "/v1/checkins", json={"place_id": world.place_id, "qr_token": issued["token"]}, headers=device
    )
    assert checked.status_code == 201, checked.text


async def test_forged_unknown_and_malformed_tokens_are_403_and_identifying_fields_are_refused(
    client, world: World
) -> None:
    token = (await _token(client, world))["token"]
    place, expires, signature = token.split(".")
    for bad in (
        f"{place}.{expires}.{'A' * len(signature)}",  # forged
        f"999999999.{expires}.{signature}",  # no such place: the same answer
        f"{int(place) + 1}.{expires}.{signature}",
        "not-a-token",
        f"{2**70}.1.x",
    ):
        answer = await client.post("/v1/devices/enrol-by-qr", json={"qr_token": bad})
        assert answer.status_code == 403, (bad, answer.text)
    for extra in ({"external_id": "user/phone"}, {"role": "staff"}, {"tags": ["vip"]}, {"name": "Ann"}):
        answer = await client.post("/v1/devices/enrol-by-qr", json={"qr_token": token, **extra})
        assert answer.status_code == 422, (extra, answer.text)


async def test_enrolment_by_qr_is_limited_per_address(app, client, world: World, settings) -> None:
    """Counted before the token is checked: forged tokens from one address use up its allowance too."""
    token = (await _token(client, world))["token"]
    saved = settings.enrolments_per_address
    settings.enrolments_per_address = 2
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(random_address(), 5000)), base_url="http://test"
        ) as http:
            codes = [
                (await http.post("/v1/devices/enrol-by-qr", json={"qr_token": value})).status_code
                for value in ("1.1.forged", token, token)
            ]
    finally:
        settings.enrolments_per_address = saved
    assert codes == [403, 201, 429], codes


async def test_the_public_page_shows_content_on_show_and_only_to_its_organisation(client, world: World, org) -> None:
    await client.patch(
        f"/admin/v1/places/{world.place_id}",
        json={"opening_hours": "24/7", "address": "Töölönlahdenkatu 4"},
        headers=world.admin,
    )
    shown = {"place_id": world.place_id, "title": "Reading hour", "body": "Stories at 15:00"}
    for values in (
        shown,
        {"place_id": world.place_id, "title": "Inactive", "body": "x", "active": False},
        {"place_id": world.place_id, "title": "Silent", "body": "x", "silent": True},
        {"place_id": world.place_id, "title": "Staff", "body": "x", "audience_role": "staff"},
        {"place_id": world.place_id, "title": "Tagged", "body": "x", "audience_tags": ["members"]},
        {"place_id": world.place_id, "title": "Expired", "body": "x", "schedule": {"valid_to": "2001-01-01"}},
        {"place_kind": "library", "title": "All libraries", "body": "Late opening"},
    ):
        made = await client.post("/admin/v1/content", json=values, headers=world.admin)
        assert made.status_code == 201, made.text
    token = (await _token(client, world))["token"]
    enrolled = (await client.post("/v1/devices/enrol-by-qr", json={"qr_token": token})).json()
    device = {"Authorization": f"Bearer {enrolled['credential']}"}
    page = await client.get(f"/v1/places/{world.place_id}/public", headers=device)
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["name"], body["opening_hours"], body["open_now"]) == ("Oodi", "24/7", "open")
    assert sorted(item["title"] for item in body["content"]) == ["All libraries", "Reading hour"]
    assert "fences" not in body and "properties" not in body
    assert (await client.get(f"/v1/places/{world.place_id}/public")).status_code == 401

    _, other_admin = org
    other_place = await client.post(
        "/admin/v1/places",
        json={
            "name": "Elsewhere",
            "kind": "library",
            "fences": [{"geometry": {"type": "Point", "coordinates": [25, 60]}, "radius_m": 50}],
        },
        headers=other_admin,
    )
    assert other_place.status_code == 201, other_place.text
    stranger = await client.get(f"/v1/places/{other_place.json()['id']}/public", headers=device)
    assert stranger.status_code == 404
    native = await register(client, world)
    assert (await client.get(f"/v1/places/{world.place_id}/public", headers=native)).status_code == 200


async def test_the_demo_prints_oodis_visitor_link_and_it_checks_a_visitor_in(client, settings) -> None:
    import asyncio
    from urllib.parse import unquote

    from typer.testing import CliRunner

    from infra.cli import app as cli

    result = await asyncio.to_thread(CliRunner().invoke, cli, ["seed-demo"])  # the CLI runs its own event loop
    assert result.exit_code == 0, result.output
    link = (settings.var_dir / "demo-visitor-link").read_text().strip()
    assert "/app/c/" in link
    token = unquote(link.rsplit("/app/c/", 1)[1])
    enrolled = await client.post("/v1/devices/enrol-by-qr", json={"qr_token": token})
    assert enrolled.status_code == 201, enrolled.text
    device = {"Authorization": f"Bearer {enrolled.json()['credential']}"}
    place = await client.get(f"/v1/places/{enrolled.json()['place_id']}/public", headers=device)
    assert place.status_code == 200 and place.json()["name"] == "Helsingin keskustakirjasto Oodi"

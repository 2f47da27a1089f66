"""Mobile API over HTTP: registration, fixes and transitions, batches, check-ins, privacy, bad input."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.api.conftest import BLOCK, FAR_OUTSIDE, INSIDE, fix, register


async def count(app, sql: str, **params) -> int:
    async with app.state.resources.session_factory() as session:
        return int((await session.execute(text(sql), params)).scalar_one())


async def test_registration_needs_the_enrolment_key(client, world) -> None:
    body = {"platform": "ios"}
    assert (await client.post("/v1/devices", json=body)).status_code == 401
    assert (await client.post("/v1/devices", json=body, headers={"X-Enrolment-Key": "pce_x"})).status_code == 401
    # An admin key is not an enrolment key.
    admin_as_enrolment = {"X-Enrolment-Key": world.admin["X-API-Key"]}
    assert (await client.post("/v1/devices", json=body, headers=admin_as_enrolment)).status_code == 401
    ok = await client.post(
        "/v1/devices",
        json={**body, "timezone": "Europe/Helsinki", "consents": {"offers": True}},
        headers=world.enrolment,
    )
    assert ok.status_code == 201 and ok.json()["credential"].startswith("pcd_")


@pytest.mark.parametrize(
    "body",
    [
        {"platform": "symbian"},
        {"platform": "ios", "role": "admin"},
        {"platform": "ios", "timezone": "Moon/Base"},
        {"platform": "ios", "consents": {"marketing": True}},
        {"platform": "ios", "locale": "not a locale!"},
    ],
)
async def test_bad_registration_is_422(client, world, body) -> None:
    assert (await client.post("/v1/devices", json=body, headers=world.enrolment)).status_code == 422


async def test_walk_in_and_out_gives_one_enter_and_one_exit(client, world) -> None:
    device = await register(client, world)
    kinds = []
    for point in [FAR_OUTSIDE, INSIDE, INSIDE, INSIDE, FAR_OUTSIDE, FAR_OUTSIDE]:
        answer = await client.post("/v1/fixes", json=fix(point), headers=device)
        assert answer.status_code == 202
        kinds += [e["kind"] for e in answer.json()["events"]]
    assert kinds == ["enter", "exit"]


async def test_inaccurate_fix_does_not_enter(client, world) -> None:
    device = await register(client, world)
    vague = await client.post("/v1/fixes", json=fix(INSIDE, accuracy=500), headers=device)
    assert vague.json()["events"] == []
    sharp = await client.post("/v1/fixes", json=fix(INSIDE, accuracy=8), headers=device)
    assert [e["kind"] for e in sharp.json()["events"]] == ["enter"]


async def test_stale_fix_is_stored_but_fires_nothing(client, world, app) -> None:
    device = await register(client, world)
    now = datetime.now(UTC)
    outside_now = {"lon": FAR_OUTSIDE[0], "lat": FAR_OUTSIDE[1], "accuracy_m": 5, "ts": now.isoformat()}
    inside_before = {
        "lon": INSIDE[0],
        "lat": INSIDE[1],
        "accuracy_m": 5,
        "ts": (now - timedelta(minutes=5)).isoformat(),
    }
    assert (await client.post("/v1/fixes", json=outside_now, headers=device)).json()["events"] == []
    late = await client.post("/v1/fixes", json=inside_before, headers=device)
    assert late.status_code == 202 and late.json()["events"] == []
    device_id = (await client.get("/v1/devices/me", headers=device)).json()["id"]
    assert await count(app, "SELECT count(*) FROM fixes WHERE device_id = :d", d=device_id) == 2


async def test_batch_is_idempotent_on_batch_id(client, world, app) -> None:
    device = await register(client, world)
    body = {"batch_id": "b-" + secrets.token_hex(4), "fixes": [fix(FAR_OUTSIDE), fix(INSIDE), fix(INSIDE)]}
    first = await client.post("/v1/fixes/batch", json=body, headers=device)
    assert first.status_code == 202 and [e["kind"] for e in first.json()["events"]] == ["enter"]
    replay = await client.post("/v1/fixes/batch", json=body, headers=device)
    assert replay.status_code == 202
    assert replay.json() == {"accepted": 3, "duplicate": True, "events": []}
    device_id = (await client.get("/v1/devices/me", headers=device)).json()["id"]
    assert await count(app, "SELECT count(*) FROM fixes WHERE device_id = :d", d=device_id) == 3
    assert await count(app, "SELECT count(*) FROM events WHERE device_id = :d", d=device_id) == 1


async def test_batch_of_1000_accepted_and_1001_refused(client, world, app) -> None:
    device = await register(client, world)
    fixes = [fix(FAR_OUTSIDE, seconds=1) for _ in range(1001)]
    too_many = await client.post("/v1/fixes/batch", json={"batch_id": "big", "fixes": fixes}, headers=device)
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["field"] == "fixes"
    ok = await client.post("/v1/fixes/batch", json={"batch_id": "big", "fixes": fixes[:1000]}, headers=device)
    assert ok.status_code == 202 and ok.json()["accepted"] == 1000
    device_id = (await client.get("/v1/devices/me", headers=device)).json()["id"]
    assert await count(app, "SELECT count(*) FROM fixes WHERE device_id = :d", d=device_id) == 1000


FUTURE = (datetime.now(UTC) + timedelta(days=2)).isoformat()
RECENT = (datetime.now(UTC) - timedelta(hours=1)).isoformat().encode()
LAST_WEEK = (datetime.now(UTC) - timedelta(days=7, minutes=5)).isoformat()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"lon": NaN, "lat": 60.1, "ts": "' + RECENT + b'"}', "lon"),
        (b'{"lon": 24.9, "lat": Infinity, "ts": "' + RECENT + b'"}', "lat"),
        (b'{"lon": 24.9, "lat": 91, "ts": "' + RECENT + b'"}', "lat"),
        (b'{"lon": -181, "lat": 60, "ts": "' + RECENT + b'"}', "lon"),
        (b'{"lon": 24.9, "lat": 60.1, "accuracy_m": -5, "ts": "' + RECENT + b'"}', "accuracy_m"),
        (b'{"lon": "east", "lat": 60.1, "ts": "' + RECENT + b'"}', "lon"),
        (b'{"lon": 24.9, "lat": 60.1}', "ts"),
        (b'{"lon": 24.9, "lat": 60.1, "ts": "' + FUTURE.encode() + b'"}', "ts"),
        (b'{"lon": 24.9, "lat": 60.1, "ts": "' + LAST_WEEK.encode() + b'"}', "ts"),  # older than 7 days
        (b'{"lon": 24.9, "lat": 60.1, "ts": "yesterday"}', "ts"),
        (b"[1, 2]", "body"),
        (b'{"lon": 24.9,', "body"),
    ],
)
async def test_bad_fixes_are_422_naming_the_field(client, world, raw, field) -> None:
    device = await register(client, world)
    answer = await client.post("/v1/fixes", content=raw, headers={**device, "content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] in (field, "body")
    if field != "body":
        assert answer.json()["detail"][0]["field"] == field


async def test_huge_body_is_413(client, world) -> None:
    device = await register(client, world)
    blob = b'{"batch_id": "x", "fixes": [' + b'{"lon": 1, "lat": 1, "ts": "2026-12-01T00:00:00Z"},' * 60_000 + b"]}"
    answer = await client.post("/v1/fixes/batch", content=blob, headers={**device, "content-type": "application/json"})
    assert answer.status_code == 413


async def test_unknown_rotated_and_erased_credentials_are_401(client, world, app) -> None:
    assert (
        await client.post("/v1/fixes", json=fix(INSIDE), headers={"Authorization": "Bearer pcd_nope"})
    ).status_code == 401
    assert (await client.post("/v1/fixes", json=fix(INSIDE))).status_code == 401
    device = await register(client, world)
    rotated = await client.post("/v1/devices/me/credential", headers=device)
    new = {"Authorization": f"Bearer {rotated.json()['credential']}"}
    assert (await client.post("/v1/fixes", json=fix(INSIDE), headers=device)).status_code == 401
    assert (await client.post("/v1/fixes", json=fix(INSIDE), headers=new)).status_code == 202
    device_id = (await client.get("/v1/devices/me", headers=new)).json()["id"]
    assert (await client.delete("/v1/devices/me", headers=new)).status_code == 204
    assert (await client.post("/v1/fixes", json=fix(INSIDE), headers=new)).status_code == 401
    assert await count(app, "SELECT count(*) FROM fixes WHERE device_id = :d", d=device_id) == 0
    assert await count(app, "SELECT count(*) FROM events WHERE device_id = :d", d=device_id) == 0


async def test_export_holds_the_device_data(client, world) -> None:
    device = await register(client, world)
    await client.post("/v1/fixes", json=fix(INSIDE), headers=device)
    exported = (await client.get("/v1/devices/me/export", headers=device)).json()
    assert len(exported["fixes"]) == 1 and exported["events"][0]["kind"] == "enter"
    assert "credential_hash" not in exported["device"]


async def test_consents_merge(client, world) -> None:
    device = await register(client, world, consents={"offers": True})
    answer = await client.put("/v1/devices/me/consents", json={"consents": {"tasks": True}}, headers=device)
    assert answer.json() == {"offers": True, "tasks": True}
    withdrawn = await client.put("/v1/devices/me/consents", json={"consents": {"offers": False}}, headers=device)
    assert withdrawn.json()["offers"] is False
    bad = await client.put("/v1/devices/me/consents", json={"consents": {"selling": True}}, headers=device)
    assert bad.status_code == 422


async def test_fcm_token_update(client, world) -> None:
    device = await register(client, world)
    assert (
        await client.put("/v1/devices/me/fcm-token", json={"fcm_token": "new-token"}, headers=device)
    ).status_code == 204
    assert (await client.get("/v1/devices/me", headers=device)).json()["fcm_token"] == "new-token"


async def test_rate_limit_answers_429_with_retry_after(client, world, app) -> None:
    device = await register(client, world)
    settings = app.state.settings
    old = settings.device_requests_per_window
    settings.device_requests_per_window = 3
    try:
        codes = [(await client.post("/v1/fixes", json=fix(FAR_OUTSIDE), headers=device)) for _ in range(5)]
    finally:
        settings.device_requests_per_window = old
    assert [c.status_code for c in codes[:3]] == [202, 202, 202]
    assert codes[3].status_code == 429 and int(codes[3].headers["Retry-After"]) >= 1


async def test_concurrent_requests_give_one_enter(client, world, app) -> None:
    device = await register(client, world)
    start = datetime.now(UTC) - timedelta(minutes=30)
    bodies = [
        {
            "lon": INSIDE[0],
            "lat": INSIDE[1],
            "accuracy_m": 5,
            "ts": (start + timedelta(seconds=i)).isoformat(),
        }
        for i in range(20)
    ]
    answers = await asyncio.gather(*(client.post("/v1/fixes", json=b, headers=device) for b in bodies))
    assert all(a.status_code == 202 for a in answers)
    enters = sum(1 for a in answers for e in a.json()["events"] if e["kind"] == "enter")
    assert enters == 1


async def test_new_fence_is_matched_within_a_second(client, world) -> None:
    device = await register(client, world)
    assert (await client.post("/v1/fixes", json=fix((24.95, 60.18)), headers=device)).json()["events"] == []
    square = {
        "type": "Polygon",
        "coordinates": [[[24.949, 60.179], [24.951, 60.179], [24.951, 60.181], [24.949, 60.181], [24.949, 60.179]]],
    }
    created = await client.post(
        "/admin/v1/places",
        json={"name": "New", "kind": "school", "fences": [{"geometry": square}]},
        headers=world.admin,
    )
    assert created.status_code == 201
    await asyncio.sleep(1.0)
    answer = await client.post("/v1/fixes", json=fix((24.95, 60.18)), headers=device)
    assert [(e["kind"], e["place_id"]) for e in answer.json()["events"]] == [("enter", created.json()["id"])]


# ---- check-in / check-out ----


async def test_check_in_by_proximity(client, world) -> None:
    device = await register(client, world)
    far = {"place_id": world.place_id, "lon": FAR_OUTSIDE[0], "lat": FAR_OUTSIDE[1], "accuracy_m": 10}
    refused = await client.post("/v1/checkins", json=far, headers=device)
    assert refused.status_code == 403
    near = {
        "place_id": world.place_id,
        "lon": 24.9388,
        "lat": 60.17465,
        "accuracy_m": 30,
    }  # ~17 m north of it
    ok = await client.post("/v1/checkins", json=near, headers=device)
    assert ok.status_code == 201 and ok.json()["kind"] == "checkin"
    no_proof = await client.post("/v1/checkins", json={"place_id": world.place_id}, headers=device)
    assert no_proof.status_code == 422


async def test_check_in_and_detected_enter_are_one_visit(client, world, app) -> None:
    device = await register(client, world)
    checkin = {"place_id": world.place_id, "lon": INSIDE[0], "lat": INSIDE[1], "accuracy_m": 10}
    visit = (await client.post("/v1/checkins", json=checkin, headers=device)).json()["visit_id"]
    enter = (await client.post("/v1/fixes", json=fix(INSIDE), headers=device)).json()["events"]
    assert [(e["kind"], e["visit_id"]) for e in enter] == [("enter", visit)]
    out = (await client.post("/v1/checkouts", json={"place_id": world.place_id}, headers=device)).json()
    assert out["kind"] == "checkout" and out["visit_id"] == visit
    device_id = (await client.get("/v1/devices/me", headers=device)).json()["id"]
    assert await count(app, "SELECT count(*) FROM visits WHERE device_id = :d", d=device_id) == 1
    again = await client.post("/v1/checkouts", json={"place_id": world.place_id}, headers=device)
    assert again.status_code == 404


async def test_check_in_with_qr_token(client, world) -> None:
    device = await register(client, world)
    token = (await client.post(f"/admin/v1/places/{world.place_id}/qr-token", headers=world.admin)).json()["token"]
    ok = await client.post("/v1/checkins", json={"place_id": world.place_id, "qr_token": token}, headers=device)
    assert ok.status_code == 201
    forged = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    bad = await client.post("/v1/checkins", json={"place_id": world.place_id, "qr_token": forged}, headers=device)
    assert bad.status_code == 403


async def test_other_organisations_place_is_404(client, world, app) -> None:
    from tests.api.conftest import World

    device = await register(client, world)
    other = await client.post(
        "/admin/v1/places",
        json={"name": "x", "kind": "school", "fences": [{"geometry": BLOCK}]},
        headers=world.admin,
    )
    assert other.status_code == 201
    # A place of a *different* organisation:
    from kernel.uow import unit_of_work
    from services.orgs import create_api_key, create_organisation

    async with unit_of_work(app.state.resources.session_factory) as uow:
        org2 = await create_organisation(uow.session, name="o2", slug="o2-" + secrets.token_hex(3))
        key2 = await create_api_key(uow.session, organisation_id=org2, name="a")
    foreign = await client.post(
        "/admin/v1/places",
        json={"name": "y", "kind": "school", "fences": [{"geometry": BLOCK}]},
        headers={"X-API-Key": key2},
    )
    body = {"place_id": foreign.json()["id"], "lon": INSIDE[0], "lat": INSIDE[1], "accuracy_m": 5}
    assert (await client.post("/v1/checkins", json=body, headers=device)).status_code == 404
    assert (
        await client.post("/v1/checkouts", json={"place_id": foreign.json()["id"]}, headers=device)
    ).status_code == 404
    assert isinstance(World, type)

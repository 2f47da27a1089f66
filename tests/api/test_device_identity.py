"""Device identity: the enrolment key only creates new devices, within limits per address and per key; the client
address comes from X-Forwarded-For only through a trusted proxy; login throttling per address across accounts;
bounded inbox cursors; no 5xx around erase."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Iterator
from ipaddress import ip_network

import httpx
import pytest
from sqlalchemy import text

from kernel.uow import unit_of_work
from services.accounts import create_user
from services.models import Role
from tests.world import INSIDE, World, register


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def location(tst: int) -> dict[str, object]:
    return {"_type": "location", "acc": 10, "lat": INSIDE[1], "lon": INSIDE[0], "tid": "sb", "tst": tst}


def random_address() -> str:
    return "10." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))


@pytest.fixture
def limits(settings) -> Iterator[object]:
    """Loopback is a trusted proxy for the test's length, so each test's requests come from addresses of its own
    (X-Forwarded-For); enrolment limits as set by the test, restored after."""
    saved = settings.trusted_proxies, settings.enrolments_per_address, settings.enrolments_per_key
    settings.trusted_proxies = [ip_network("127.0.0.1/32")]
    yield settings
    settings.trusted_proxies, settings.enrolments_per_address, settings.enrolments_per_key = saved


async def fixes_of(app, device_id: int) -> int:
    async with app.state.resources.session_factory() as session:
        found = await session.execute(text("SELECT count(*) FROM fixes WHERE device_id = :d"), {"d": device_id})
        return int(found.scalar_one())


async def test_the_enrolment_key_cannot_post_as_an_existing_device(client, world: World, app) -> None:
    staff = await register(client, world, role="staff", external_id="staffb/phone")
    staff_id = int((await client.get("/v1/devices/me", headers=staff)).json()["id"])
    key = world.enrolment["X-Enrolment-Key"]
    headers = {**basic("staffb", key), "X-Limit-U": "staffb", "X-Limit-D": "phone"}
    answer = await client.post("/v1/owntracks", json=location(int(time.time()) - 60), headers=headers)
    assert answer.status_code == 401, answer.text
    assert "already enrolled" in answer.json()["message"] and "own device credential" in answer.json()["message"]
    assert await fixes_of(app, staff_id) == 0
    # Its own credential still posts.
    own = {**basic("staffb", staff["Authorization"].removeprefix("Bearer ")), "X-Limit-D": "phone"}
    answer = await client.post("/v1/owntracks", json=location(int(time.time()) - 50), headers=own)
    assert answer.status_code == 200 and answer.json() == []
    assert await fixes_of(app, staff_id) == 1


async def test_registering_an_existing_external_id_is_a_conflict(client, world: World) -> None:
    await register(client, world, external_id="anna/phone")
    body = {"platform": "android", "external_id": "anna/phone"}
    answers = await asyncio.gather(*(client.post("/v1/devices", json=body, headers=world.enrolment) for _ in range(4)))
    assert [a.status_code for a in answers] == [409] * 4


async def test_enrolment_is_limited_per_address(client, world: World, limits) -> None:
    limits.enrolments_per_address = 3
    address = random_address()
    headers = {**world.enrolment, "X-Forwarded-For": address}
    codes = []
    for _ in range(5):
        answer = await client.post("/v1/devices", json={"platform": "ios"}, headers=headers)
        codes.append(answer.status_code)
    assert codes[:3] == [201] * 3 and codes[3:] == [429, 429], codes
    assert 0 < int(answer.headers["Retry-After"]) <= limits.enrolment_window_s
    assert "from this address" in answer.json()["message"]
    # OwnTracks enrolment counts against the same limit; another address is not limited.
    tracks = {**basic("u", world.enrolment["X-Enrolment-Key"]), "X-Limit-D": "d", "X-Forwarded-For": address}
    assert (await client.post("/v1/owntracks", json=location(int(time.time())), headers=tracks)).status_code == 429
    other = {**world.enrolment, "X-Forwarded-For": random_address()}
    assert (await client.post("/v1/devices", json={"platform": "ios"}, headers=other)).status_code == 201


async def test_enrolment_is_limited_per_key_across_addresses(client, world: World, limits) -> None:
    limits.enrolments_per_key = 3
    codes = []
    for i in range(5):
        headers = {**basic(f"user{i}", world.enrolment["X-Enrolment-Key"]), "X-Limit-D": "phone"}
        headers["X-Forwarded-For"] = random_address()
        answer = await client.post("/v1/owntracks", json=location(int(time.time()) - 5), headers=headers)
        codes.append(answer.status_code)
    assert codes == [200, 200, 200, 429, 429], codes
    assert int(answer.headers["Retry-After"]) > 0 and "enrolment key" in answer.json()["message"]


async def test_forwarded_for_counts_only_from_a_trusted_proxy(app, world: World, settings) -> None:
    """Untrusted (the default): X-Forwarded-For is ignored, so changing it does not escape the per-address limit."""
    assert settings.trusted_proxies == []
    saved = settings.enrolments_per_address
    settings.enrolments_per_address = 2
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(random_address(), 5000)),
            base_url="http://test",
        ) as http:
            codes = []
            for _ in range(4):
                headers = {**world.enrolment, "X-Forwarded-For": random_address()}
                codes.append((await http.post("/v1/devices", json={"platform": "ios"}, headers=headers)).status_code)
    finally:
        settings.enrolments_per_address = saved
    assert codes == [201, 201, 429, 429], codes


async def test_login_is_throttled_per_address_across_accounts(app, world: World, settings, monkeypatch) -> None:
    """One address trying one password on each of many accounts is stopped (per account it never would be)."""
    monkeypatch.setattr(settings, "login_failures_per_address", 20)  # the default; the suite's is higher
    address = random_address()
    async with unit_of_work(app.state.resources.session_factory) as uow:
        email = f"real-{secrets.token_hex(4)}@example.org"
        await create_user(
            uow.session,
            email=email,
            password="a-good-password",
            organisation_id=world.organisation_id,
            role=Role.viewer,
        )
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        codes = []
        for i in range(25):
            body = {"email": f"someone{i}-{secrets.token_hex(2)}@example.org", "password": "Summer2024!"}
            codes.append((await http.post("/admin/v1/session", json=body)).status_code)
        assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}, codes
        right = await http.post("/admin/v1/session", json={"email": email, "password": "a-good-password"})
        assert right.status_code == 429 and "from this address" in right.json()["message"]
    other = httpx.ASGITransport(app=app, client=(random_address(), 40000))
    async with httpx.AsyncClient(transport=other, base_url="http://test") as http:
        assert (await http.post("/admin/v1/session", json={"email": email, "password": "a-good-password"})).is_success


@pytest.mark.parametrize("query", ["after=9223372036854775808", "after=-1", "after=99999999999999999999"])
async def test_inbox_stream_after_is_bounded(client, world: World, query: str) -> None:
    device = await register(client, world)
    answer = await client.get(f"/v1/inbox/stream?{query}", headers=device)
    assert answer.status_code == 422, answer.text


async def test_inbox_cursor_is_bounded(client, world: World) -> None:
    device = await register(client, world)
    assert (await client.get("/v1/inbox?cursor=9223372036854775808", headers=device)).status_code == 422
    assert (await client.get("/v1/inbox?cursor=9223372036854775807", headers=device)).status_code == 200


async def test_requests_racing_an_erase_get_no_5xx_and_leave_no_fixes(client, world: World, app) -> None:
    device = await register(client, world)
    device_id = int((await client.get("/v1/devices/me", headers=device)).json()["id"])
    now = int(time.time())

    async def fix(i: int) -> int:
        body = {"lon": INSIDE[0], "lat": INSIDE[1], "accuracy_m": 10, "ts": now - 300 + i}
        answer: httpx.Response = await client.post("/v1/fixes", json=body, headers=device)
        return answer.status_code

    async def read(path: str) -> int:
        answer: httpx.Response = await client.get(path, headers=device)
        return answer.status_code

    work = [fix(i) for i in range(20)] + [read("/v1/devices/me") for _ in range(10)]
    work += [read("/v1/devices/me/export") for _ in range(10)]
    work.insert(15, client.delete("/v1/devices/me", headers=device))
    answers = await asyncio.gather(*work)
    codes = [a if isinstance(a, int) else a.status_code for a in answers]
    assert all(code < 500 for code in codes), codes
    assert set(codes) <= {200, 202, 204, 401}, codes
    assert 204 in codes
    assert await fixes_of(app, device_id) == 0  # nothing stored after the erase
    assert (await client.get("/v1/devices/me/export", headers=device)).status_code == 401

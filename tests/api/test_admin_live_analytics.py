"""The live activity feed (SSE over a real socket), analytics over seeded visits/pushes/tasks, printable QR codes."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import orjson
import pytest
import segno
import uvicorn
from sqlalchemy import text

from admin import register_admin_routers
from infra.stack import free_port
from kernel.uow import unit_of_work
from services.accounts import create_user
from services.checkins import verify_qr_token
from services.models import Role
from tests.world import BLOCK, FAR_OUTSIDE, INSIDE, World, fix, register


@pytest.fixture(scope="module", autouse=True)
def _admin_routes(app) -> None:
    register_admin_routers(app)  # a no-op once infra/app.py calls it


@pytest.fixture(scope="module")
async def served(app, _admin_routes) -> AsyncIterator[str]:
    """The test app behind a real uvicorn socket: httpx's ASGI transport buffers whole responses, so no SSE."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning")
    config.timeout_graceful_shutdown = 2
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110  (uvicorn has a flag, not an event)
            await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    await task


class EventStream:
    """Reads `event:`/`data:` messages from an SSE response; comments are kept apart."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def connected(self) -> None:
        async with asyncio.timeout(5):
            while ": connected" not in self.comments:
                await self._message()

    async def next(self) -> tuple[str, dict[str, Any]]:
        async with asyncio.timeout(10):
            while True:
                event, data = await self._message()
                if event:
                    return event, orjson.loads(data)

    async def _message(self) -> tuple[str, str]:
        event = data = ""
        async for line in self.lines:
            if line == "":
                return event, data
            if line.startswith(":"):
                self.comments.append(line)
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        raise EOFError("the stream ended")


@asynccontextmanager
async def sse(http: httpx.AsyncClient, path: str, **kwargs) -> AsyncIterator[EventStream]:
    async with http.stream("GET", path, timeout=httpx.Timeout(20.0), **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)


async def test_live_feed_shows_an_enter_and_never_another_organisations(app, client, world: World, org, served) -> None:
    other_id, other_headers = org
    email = f"watch-{secrets.token_hex(3)}@example.org"
    async with unit_of_work(app.state.resources.session_factory) as uow:
        await create_user(
            uow.session,
            email=email,
            password="a long enough password",
            organisation_id=world.organisation_id,
            role=Role.viewer,
        )
    device = await register(client, world)
    async with httpx.AsyncClient(base_url=served) as browser, httpx.AsyncClient(base_url=served) as other:
        login = await browser.post("/admin/v1/session", json={"email": email, "password": "a long enough password"})
        assert login.status_code == 200
        # A viewer's browser, with the organisation in the query as EventSource cannot send headers.
        async with (
            sse(browser, "/admin/v1/live", params={"organisation": world.organisation_id}) as mine,
            sse(other, "/admin/v1/live", headers=other_headers) as theirs,
        ):
            await mine.connected()
            await theirs.connected()
            assert (await client.post("/v1/fixes", json=fix(FAR_OUTSIDE), headers=device)).json()["events"] == []
            entered = await client.post("/v1/fixes", json=fix(INSIDE), headers=device)
            [event] = entered.json()["events"]

            name, data = await mine.next()
            assert name == "activity"
            assert {k: data[k] for k in ("event_id", "kind", "zone", "place_id", "place_name")} == {
                "event_id": event["id"],
                "kind": "enter",
                "zone": "building",
                "place_id": world.place_id,
                "place_name": "Oodi",
            }
            assert datetime.fromisoformat(data["occurred_at"]) == datetime.fromisoformat(event["occurred_at"])
            lons, lats = zip(*BLOCK["coordinates"][0], strict=True)
            assert min(lons) < data["lon"] < max(lons) and min(lats) < data["lat"] < max(lats)
            assert isinstance(data["device_id"], int)

            # Even an id published on the wrong channel is not shown: the feed loads events of its own
            # organisation only. The marker comes after it on the same connection, so it arrives first only
            # if nothing was sent for the stray id.
            redis = app.state.resources.redis
            await redis.publish(f"placecast:events:{other_id}", str(event["id"]))
            marker = secrets.token_hex(4)
            await redis.publish(f"placecast:live:{other_id}", orjson.dumps({"type": "task", "marker": marker}))
            assert await theirs.next() == ("task", {"type": "task", "marker": marker})
            await redis.publish(f"placecast:live:{world.organisation_id}", b'{"type": "push", "title": "Hi"}')
            assert await mine.next() == ("push", {"type": "push", "title": "Hi"})
    await gone(app, f"placecast:events:{world.organisation_id}", f"placecast:live:{other_id}")


async def gone(app, *channels: str) -> None:
    """The streams closed by the client let go of their Redis subscriptions (no connection leaks per viewer)."""
    async with asyncio.timeout(5):
        while any(count for _, count in await app.state.resources.redis.pubsub_numsub(*channels)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_quiet_feed_sends_keep_alives(world: World, served, monkeypatch) -> None:
    monkeypatch.setattr("admin.live_api.KEEP_ALIVE_S", 0.2)
    async with httpx.AsyncClient(base_url=served) as http, sse(http, "/admin/v1/live", headers=world.admin) as feed:
        await feed.connected()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await feed.next()
        assert feed.comments.count(": keep-alive") >= 2


async def test_live_feed_needs_a_login(client) -> None:
    assert (await client.get("/admin/v1/live")).status_code == 401


D = date(2025, 3, 10)  # before DST: Helsinki is UTC+2


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


async def seed_analytics(app, organisation_id: int) -> int:
    """Five ended visits (10, 20, 30, 50, 10 min), one open; three notifications; four tasks. Returns the place id."""
    async with app.state.resources.session_factory() as session, session.begin():

        async def one(sql: str, **params) -> int:
            return int((await session.execute(text(sql + " RETURNING id"), params)).scalar_one())

        place = await one(
            "INSERT INTO places (organisation_id, name, kind) VALUES (:o, 'Analytics hall', 'library')",
            o=organisation_id,
        )
        device = await one(
            "INSERT INTO devices (organisation_id, platform, role, credential_hash)"
            " VALUES (:o, 'android', 'staff', :h)",
            o=organisation_id,
            h=secrets.token_hex(32),
        )
        next_day = D + timedelta(days=1)
        for start, end in [
            (at(D, 10), at(D, 10, 10)),
            (at(D, 12), at(D, 12, 20)),
            (at(D, 14), None),
            (at(D, 23, 30), at(D, 23, 40)),  # 01:30 the next day in Helsinki
            (at(next_day, 9), at(next_day, 9, 30)),
            (at(next_day, 11), at(next_day, 11, 50)),
        ]:
            await one(
                "INSERT INTO visits (organisation_id, device_id, place_id, started_at, ended_at)"
                " VALUES (:o, :d, :p, :s, :e)",
                o=organisation_id,
                d=device,
                p=place,
                s=start,
                e=end,
            )
        for created, opened, channel, status in [
            (at(D, 10, 5), True, "fcm", "sent"),
            (at(D, 12, 5), False, "fcm", "failed"),
            (at(next_day, 9, 5), True, "inbox", "sent"),
        ]:
            notification = await one(
                "INSERT INTO notifications (organisation_id, device_id, place_id, title, body, created_at, opened_at)"
                " VALUES (:o, :d, :p, 't', 'b', :c, :op)",
                o=organisation_id,
                d=device,
                p=place,
                c=created,
                op=created + timedelta(minutes=1) if opened else None,
            )
            await one(
                "INSERT INTO deliveries (notification_id, channel, status) VALUES (:n, :ch, :s)",
                n=notification,
                ch=channel,
                s=status,
            )
        for status, notified, ack_s, done_s in [
            ("done", at(D, 10), 60, 300),
            ("done", at(D, 11), 180, 1200),
            ("open", None, None, None),
            ("notified", at(D, 12), None, None),
        ]:
            await one(
                "INSERT INTO staff_tasks (organisation_id, place_id, title, status, notified_at, acknowledged_at,"
                " done_at) VALUES (:o, :p, 't', :s, :n, :a, :d)",
                o=organisation_id,
                p=place,
                s=status,
                n=notified,
                a=notified + timedelta(seconds=ack_s) if notified and ack_s else None,
                d=notified + timedelta(seconds=done_s) if notified and done_s else None,
            )
    return place


async def test_analytics_counts_one_organisation(app, client, world: World, org) -> None:
    other_id, other_headers = org
    place = await seed_analytics(app, world.organisation_id)
    await seed_analytics(app, other_id)  # the same again elsewhere: any leak would double the numbers
    second = (D + timedelta(days=1)).isoformat()
    answer = await client.get(f"/admin/v1/analytics?from={D}&to={second}", headers=world.admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["from"], body["to"], body["tz"]) == (D.isoformat(), second, "UTC")
    per_day = [(v["place_id"], v["place_name"], v["day"], v["visits"]) for v in body["visits_per_place_per_day"]]
    assert per_day == [(place, "Analytics hall", D.isoformat(), 4), (place, "Analytics hall", second, 2)]
    # Dwell times 600, 1200, 600, 1800, 3000 s: the median is 1200 (the mean would be 1440).
    assert body["median_dwell_s"] == [
        {"place_id": place, "place_name": "Analytics hall", "median_s": 1200.0, "visits": 5}
    ]
    assert body["pushes"] == {"sent": 1, "opened": 2, "notifications": 3}
    assert body["pushes_per_day"] == [
        {"day": D.isoformat(), "sent": 1, "opened": 1, "notifications": 2},
        {"day": second, "sent": 0, "opened": 1, "notifications": 1},
    ]
    assert body["tasks"] == {"median_ack_s": 120.0, "median_done_s": 750.0, "done": 2, "open": 2}

    helsinki = await client.get(f"/admin/v1/analytics?from={D}&to={second}&tz=Europe/Helsinki", headers=world.admin)
    assert [v["visits"] for v in helsinki.json()["visits_per_place_per_day"]] == [3, 3]
    first_day = (await client.get(f"/admin/v1/analytics?from={D}&to={D}", headers=world.admin)).json()
    assert [v["visits"] for v in first_day["visits_per_place_per_day"]] == [4]
    assert first_day["median_dwell_s"][0]["median_s"] == 600.0  # 600, 1200, 600

    fresh = await client.get("/admin/v1/analytics", headers=other_headers)
    assert fresh.status_code == 200
    today = datetime.now(UTC).date()
    assert (fresh.json()["from"], fresh.json()["to"]) == ((today - timedelta(days=29)).isoformat(), today.isoformat())


@pytest.mark.parametrize(
    "query",
    [
        "from=2025-02-30&to=2025-03-01",  # no such day
        "from=yesterday",
        "from=2025-03-10&to=2025-03-09",  # backwards
        "from=2024-01-01&to=2025-01-02",  # 368 days
        "tz=Mars/Olympus_Mons",
    ],
)
async def test_bad_analytics_ranges_are_422(client, world: World, query: str) -> None:
    answer = await client.get(f"/admin/v1/analytics?{query}", headers=world.admin)
    assert answer.status_code == 422, answer.text


async def test_qr_code_is_a_valid_check_in_for_that_place_only(app, client, world: World, org, settings) -> None:
    answer = await client.get(f"/admin/v1/places/{world.place_id}/qr.svg", headers=world.admin)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/svg+xml"
    svg = answer.text
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<title>Oodi</title>" in svg
    desc = re.search(r"<desc>(.*?)</desc>", svg)
    assert desc is not None
    uri = unescape(desc.group(1))
    # The visitor app's check-in page at the API's own address (no public base URL is set in the tests).
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("http", "test") and parts.path.startswith("/app/c/")
    query = {"qr_token": unquote(parts.path.removeprefix("/app/c/"))}
    assert query["qr_token"].split(".")[0] == str(world.place_id)
    async with unit_of_work(app.state.resources.session_factory) as uow:
        await verify_qr_token(
            uow,
            secret=settings.secret_key.get_secret_value(),
            organisation_id=world.organisation_id,
            place_id=world.place_id,
            token=query["qr_token"],
        )
    # The drawn modules are exactly the QR code of that URI.
    drawn = re.search(r'class="qrline"[^>]* d="([^"]+)"', svg)
    assert drawn is not None and drawn.group(1) in segno.make(uri, error="m").svg_inline(
        scale=8, border=4, light="#fff"
    )

    _, other_headers = org
    assert (await client.get(f"/admin/v1/places/{world.place_id}/qr.svg", headers=other_headers)).status_code == 404
    assert (await client.get("/admin/v1/places/999999999/qr.svg", headers=world.admin)).status_code == 404

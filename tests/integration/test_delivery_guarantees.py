"""What the pipeline promises a device, on real PostGIS, Redis, firebase-admin and the FCM-compatible server:
cap and cooldown decided one job at a time per device, the cap counting pushes only, FCM's refusal of a token
switching off that token and not its successor, visits on one clock, silent pushes, and both kinds of push target
sent through their own field of the message."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from kernel.uow import unit_of_work
from notifications.delivery import send_deliveries
from notifications.pipeline import PipelineResult, process_events
from notifications.push import FcmSender, PushMessage, PushOutcome
from tests.integration.test_delivery import fcm  # noqa: F401  (the FCM-compatible server: a fixture)
from tests.integration.worker_helpers import run_worker
from tests.world import INSIDE, World, register

# What the apps' Firebase SDKs hand out: a registration token is the installation ID, a colon and a long
# APA91b... string; an installation ID is 22 characters of base64url.
REGISTRATION_TOKEN = "cL2Qw7kXR0mI1mZ0b3YwQx:APA91bH" + secrets.token_urlsafe(100)
INSTALLATION_ID = "f" + secrets.token_urlsafe(16)[:21]


async def add_content(client, world: World, **values: Any) -> int:
    body = {"place_id": world.place_id, "title": "Reading hour", "body": "Stories at 15:00", "trigger": "checkin"}
    body |= values
    answer = await client.post("/admin/v1/content", json=body, headers=world.admin)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def check_in(client, world: World, device: dict[str, str], **extra: Any) -> list[int]:
    body = {"place_id": world.place_id, "lon": INSIDE[0], "lat": INSIDE[1], "accuracy_m": 10, **extra}
    answer = await client.post("/v1/checkins", json=body, headers=device)
    assert answer.status_code == 201, answer.text
    return [int(answer.json()["id"])]


async def decide(app, event_ids: Sequence[int]) -> PipelineResult:
    """One pipeline job's transaction for these events, as `deliver_events` runs it."""
    async with unit_of_work(app.state.resources.session_factory) as uow:
        return await process_events(uow, list(event_ids), datetime.now(UTC))


async def device_id_of(client, device: dict[str, str]) -> int:
    return int((await client.get("/v1/devices/me", headers=device)).json()["id"])


async def notifications_of(app, device_id: int) -> list[tuple[str, bool]]:
    """(title, pushed) of the device's content notifications, oldest first."""
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(
            text(
                "SELECT n.title, EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id"
                " AND d.channel = 'fcm') FROM notifications n WHERE n.device_id = :d ORDER BY n.id"
            ),
            {"d": device_id},
        )
        return [(str(title), bool(pushed)) for title, pushed in rows]


async def waits_for_decision_lock(app, job: asyncio.Task[Any]) -> bool:
    """True once `job` waits for the decision lock an open transaction holds; False if it finished instead."""
    async with asyncio.timeout(30):
        while not job.done():
            async with app.state.resources.session_factory() as session:
                waiting = await session.execute(
                    text(
                        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                        " AND datname = current_database()"
                    )
                )
                if waiting.first() is not None:
                    return True
            await asyncio.sleep(0.01)
    return False


@pytest.mark.parametrize(("rule", "limits"), [("daily_cap", {"daily_cap": 1, "cooldown_s": 0}), ("cooldown", {})])
async def test_two_jobs_deciding_for_one_device_at_once_keep_its_cap_and_cooldown(
    client, app, world, rule, limits
) -> None:
    await add_content(client, world, **limits)  # one push a day, or one within the hour
    device = await register(client, world, consents={"offers": True})
    first, second = await check_in(client, world, device), await check_in(client, world, device)

    async with unit_of_work(app.state.resources.session_factory) as uow:
        await process_events(uow, first, datetime.now(UTC))
        # Another job (the next batch of the same window, another worker) decides for the same device before
        # this one commits: it must wait, then count this push.
        other = asyncio.create_task(decide(app, second))
        assert await waits_for_decision_lock(app, other)
    result = await other

    assert await notifications_of(app, await device_id_of(client, device)) == [("Reading hour", True)]
    assert result.decisions == {rule: 1}


async def test_inbox_only_notifications_use_no_slot_of_the_daily_cap(client, app, world) -> None:
    await add_content(client, world, daily_cap=1, cooldown_s=0)
    muted = await register(client, world, consents={"offers": True}, fcm_token=None)
    device_id = await device_id_of(client, muted)

    # No push target yet: two check-ins in one job both reach the inbox, neither counts as a push.
    result = await decide(app, await check_in(client, world, muted) + await check_in(client, world, muted))
    assert result.decisions == {"no_push": 2}
    assert await notifications_of(app, device_id) == [("Reading hour", False)] * 2
    # With a token the next check-in pushes: today's inbox-only notifications left the cap untouched.
    assert (await client.put("/v1/devices/me/fcm-token", json={"fcm_token": "t-1"}, headers=muted)).status_code == 204
    result = await decide(app, await check_in(client, world, muted))
    assert result.decisions == {"sent": 1}
    assert (await notifications_of(app, device_id))[2:] == [("Reading hour", True)]


class NewTokenWhileInFlight:
    """The real sender; the app registers its next token while FCM is answering about the old one."""

    def __init__(self, sender: FcmSender, client, device: dict[str, str], token: str) -> None:
        self.sender, self.client, self.device, self.token = sender, client, device, token

    async def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        outcomes = await self.sender.send(messages)
        answer = await self.client.put("/v1/devices/me/fcm-token", json={"fcm_token": self.token}, headers=self.device)
        assert answer.status_code == 204
        return outcomes


async def test_unregistered_for_an_old_token_leaves_the_new_one_on(client, app, world, fcm) -> None:  # noqa: F811
    fake, account = fcm
    await add_content(client, world)
    device = await register(client, world, consents={"offers": True}, fcm_token="unregistered-" + secrets.token_hex(6))
    result = await decide(app, await check_in(client, world, device))
    sender = FcmSender(account, base_url=fake.base_url)
    try:
        fresh = "fresh-" + secrets.token_hex(6)
        report = await send_deliveries(
            app.state.resources.session_factory,
            NewTokenWhileInFlight(sender, client, device, fresh),
            result.notifications,
        )
    finally:
        await sender.aclose()

    assert [o.status for o in report.outcomes] == ["unregistered"] and report.deactivated == 0
    me = (await client.get("/v1/devices/me", headers=device)).json()
    assert (me["fcm_token"], me["fcm_token_active"]) == (fresh, True)

    # And the dead token itself is switched off.
    stale = await register(client, world, consents={"offers": True}, fcm_token="unregistered-" + secrets.token_hex(6))
    result = await decide(app, await check_in(client, world, stale))
    sender = FcmSender(account, base_url=fake.base_url)
    try:
        report = await send_deliveries(app.state.resources.session_factory, sender, result.notifications)
    finally:
        await sender.aclose()
    assert report.deactivated == 1
    assert (await client.get("/v1/devices/me", headers=stale)).json()["fcm_token_active"] is False


async def visits_of(app, device_id: int) -> list[tuple[datetime, datetime | None]]:
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(
            text("SELECT started_at, ended_at FROM visits WHERE device_id = :d ORDER BY id"), {"d": device_id}
        )
        return [(r[0], r[1]) for r in rows]


async def test_a_visit_is_timed_on_one_clock_and_never_ends_before_it_began(client, app, world) -> None:
    device = await register(client, world)
    device_id = await device_id_of(client, device)
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)  # the phone's clock runs fast

    await check_in(client, world, device, ts=ahead.isoformat())
    out = await client.post("/v1/checkouts", json={"place_id": world.place_id}, headers=device)
    assert out.status_code == 201
    [(started, ended)] = await visits_of(app, device_id)
    assert ended is not None and ended >= started  # no time from the app: the server's, but never negative

    # Check-in and check-out on the device's clock: the visit lasts what the phone measured.
    await check_in(client, world, device, ts=(ahead + timedelta(minutes=1)).isoformat())
    leave = (ahead + timedelta(minutes=4)).isoformat()
    out = await client.post("/v1/checkouts", json={"place_id": world.place_id, "ts": leave}, headers=device)
    assert out.status_code == 201, out.text
    started, ended = (await visits_of(app, device_id))[1]
    assert ended is not None and ended - started == timedelta(minutes=3)
    assert datetime.fromisoformat(out.json()["occurred_at"]) == ended


async def push_pending(settings, account, fake) -> None:
    """The worker runs what the API queued, pushing through firebase-admin to the FCM-compatible server."""
    sender = FcmSender(account, base_url=fake.base_url)
    try:
        await run_worker(settings, sender=sender)
    finally:
        await sender.aclose()


def received(fake, token: str) -> list[dict[str, Any]]:
    with fake.client() as control:
        return [m for m in control.get("/_fake/messages").json() if m["token"] == token]


async def test_token_and_installation_id_go_through_their_own_field(client, world, settings, fcm) -> None:  # noqa: F811
    fake, account = fcm
    await add_content(client, world)
    by_token = await register(client, world, consents={"offers": True}, fcm_token=REGISTRATION_TOKEN)
    by_fid = await register(
        client, world, consents={"offers": True}, fcm_token=None, firebase_installation_id=INSTALLATION_ID
    )
    assert (await client.get("/v1/devices/me", headers=by_fid)).json()["push_target_kind"] == "fid"
    for device in (by_token, by_fid):
        await check_in(client, world, device)
    await push_pending(settings, account, fake)

    assert [m["target"] for m in received(fake, REGISTRATION_TOKEN)] == ["token"]
    assert [m["target"] for m in received(fake, INSTALLATION_ID)] == ["fid"]
    for device in (by_token, by_fid):
        assert (await client.get("/v1/devices/me", headers=device)).json()["fcm_token_active"] is True


async def test_the_push_target_can_change_kind_and_never_holds_two(client, world) -> None:
    both = {"platform": "ios", "fcm_token": REGISTRATION_TOKEN, "firebase_installation_id": INSTALLATION_ID}
    assert (await client.post("/v1/devices", json=both, headers=world.enrolment)).status_code == 422
    device = await register(client, world)  # an older app: fcm_token alone, a registration token
    me = (await client.get("/v1/devices/me", headers=device)).json()
    assert me["push_target_kind"] == "token"

    put = await client.put(
        "/v1/devices/me/fcm-token", json={"firebase_installation_id": INSTALLATION_ID}, headers=device
    )
    assert put.status_code == 204
    me = (await client.get("/v1/devices/me", headers=device)).json()
    assert (me["fcm_token"], me["push_target_kind"], me["fcm_token_active"]) == (INSTALLATION_ID, "fid", True)
    two = {"fcm_token": "a", "firebase_installation_id": INSTALLATION_ID}
    for body in ({}, {"firebase_installation_id": REGISTRATION_TOKEN}, two):
        answer = await client.put("/v1/devices/me/fcm-token", json=body, headers=device)
        assert answer.status_code == 422, body
    assert (await client.put("/v1/devices/me/fcm-token", json={"fcm_token": None}, headers=device)).status_code == 204
    me = (await client.get("/v1/devices/me", headers=device)).json()
    assert (me["fcm_token"], me["fcm_token_active"]) == (None, False)


async def test_silent_content_is_pushed_as_data_only_and_kept_in_the_inbox(client, world, settings, fcm) -> None:  # noqa: F811
    fake, account = fcm
    content_id = await add_content(client, world, title="Sync the map", data={"sync": "map"}, silent=True)
    token = "silent-" + secrets.token_hex(6)
    device = await register(client, world, consents={"offers": True}, fcm_token=token)
    await check_in(client, world, device)
    await push_pending(settings, account, fake)

    [got] = received(fake, token)
    assert got["notification"] is None and "notification" not in got["android"]
    assert got["android"]["priority"] == "normal"
    assert got["apns"]["headers"]["apns-push-type"] == "background"
    assert got["apns"]["headers"]["apns-priority"] == "5"
    assert got["apns"]["payload"]["aps"] == {"content-available": 1}
    assert got["data"]["sync"] == "map" and got["data"]["content_id"] == str(content_id)
    inbox = (await client.get("/v1/inbox", headers=device)).json()["items"]
    assert [i["title"] for i in inbox] == ["Sync the map"]

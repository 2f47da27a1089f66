"""Late fixes through the API: a fix that reaches the server later than the organisation's limit after it was
measured is stored and moves the device, but the events it makes are `late`: recorded with the flag, sent to
webhooks with it, never pushed (content, staff tasks, dwell), and left out of analytics on request.

The suite's service limit is 30 days (tests/conftest.py, because tests/world.py's device clock runs 5 days
behind), so every test here sets its organisation's own limit through `PATCH /admin/v1/organisation/settings`
and stamps its fixes relative to the real clock, not with `tests.world.fix`.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from kernel.uow import unit_of_work
from services.models import Role
from services.orgs import create_api_key
from tests.integration.webhook_helpers import Receiver, subscribe
from tests.integration.worker_helpers import run_worker
from tests.world import FAR_OUTSIDE, INSIDE, World, register

# 15 m north of the block's south wall (tests/world.py BLOCK: 60.1735 .. 60.1745): inside, near the wall.
JUST_INSIDE = (24.9388, 60.1735 + 15 / 111_320)
LIMIT_S = 600  # the default: 10 minutes


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def at(lon_lat: tuple[float, float], ts: datetime, accuracy: float = 10.0) -> dict[str, Any]:
    return {"lon": lon_lat[0], "lat": lon_lat[1], "accuracy_m": accuracy, "ts": ts.isoformat()}


async def owner_of(app, world: World) -> dict[str, str]:
    async with unit_of_work(app.state.resources.session_factory) as uow:
        key = await create_api_key(uow.session, organisation_id=world.organisation_id, name="owner", role=Role.owner)
    return {"X-API-Key": key}


async def set_late_limit(app, client, world: World, seconds: int | None) -> None:
    answer = await client.patch(
        "/admin/v1/organisation/settings", json={"late_fix_after_s": seconds}, headers=await owner_of(app, world)
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["late_fix_after_s"] == seconds


async def add_content(client, world: World, trigger: str, title: str) -> int:
    body = {"place_id": world.place_id, "title": title, "body": "Stories at 15:00", "trigger": trigger}
    answer = await client.post("/admin/v1/content", json=body, headers=world.admin)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def visitor(client, world: World) -> tuple[dict[str, str], int]:
    headers = await register(client, world, consents={"offers": True, "tasks": True})
    return headers, int((await client.get("/v1/devices/me", headers=headers)).json()["id"])


async def post(client, device: dict[str, str], *fixes: dict[str, Any]) -> list[dict[str, Any]]:
    """Each fix on its own request, as a phone online sends them; the events of all of them."""
    events: list[dict[str, Any]] = []
    for one in fixes:
        answer = await client.post("/v1/fixes", json=one, headers=device)
        assert answer.status_code == 202, answer.text
        events += answer.json()["events"]
    return events


async def notifications_of(app, device_id: int) -> list[tuple[str, list[str]]]:
    """(title, delivery channels) of every notification the pipeline made for the device."""
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(
            text(
                "SELECT n.title, array_agg(d.channel ORDER BY d.channel) AS channels FROM notifications n"
                " LEFT JOIN deliveries d ON d.notification_id = n.id WHERE n.device_id = :d GROUP BY n.id ORDER BY n.id"
            ),
            {"d": device_id},
        )
        return [(r.title, list(r.channels)) for r in rows]


async def stored_events(app, device_id: int) -> list[tuple[str, bool]]:
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(
            text("SELECT kind, late FROM events WHERE device_id = :d ORDER BY id"), {"d": device_id}
        )
        return [(r.kind, r.late) for r in rows]


async def test_a_late_enter_moves_the_device_but_never_pushes(app, client, world: World, settings) -> None:
    await set_late_limit(app, client, world, LIMIT_S)
    title = "Reading hour " + secrets.token_hex(3)
    await add_content(client, world, "enter", title)
    late, late_id = await visitor(client, world)
    live, live_id = await visitor(client, world)

    # Measured 20 minutes ago, deep inside: received now, so 10 minutes past the organisation's limit.
    answer = await client.post("/v1/fixes", json=at(INSIDE, ago(minutes=20)), headers=late)
    assert answer.status_code == 202, answer.text
    [event] = answer.json()["events"]
    assert (event["kind"], event["zone"], event["place_id"], event["late"]) == (
        "enter",
        "building",
        world.place_id,
        True,
    )
    assert await stored_events(app, late_id) == [("enter", True)]
    # The state moved: a fresh device's fix this deep enters at once, this one is already inside. (It does make a
    # dwell, counted from the late enter: late too, see test_a_late_enter_does_not_count_toward_a_live_dwell.)
    following = await post(client, late, at(JUST_INSIDE, ago(seconds=0), accuracy=5.0))
    assert "enter" not in [e["kind"] for e in following]
    assert [(e["kind"], e["late"]) for e in following] == [("dwell", True)]
    assert await stored_events(app, late_id) == [("enter", True), ("dwell", True)]

    # The control: the same place, the same content, a fix measured just now.
    [live_event] = await post(client, live, at(INSIDE, ago(seconds=0)))
    assert (live_event["kind"], live_event["late"]) == ("enter", False)

    await run_worker(settings)

    assert await notifications_of(app, late_id) == []
    assert await notifications_of(app, live_id) == [(title, ["fcm", "inbox"])]
    assert (await client.get("/v1/inbox", headers=late)).json()["items"] == []


async def test_a_staff_member_arriving_late_is_not_given_the_task(app, client, world: World, settings) -> None:
    await set_late_limit(app, client, world, LIMIT_S)
    body = {"place_id": world.place_id, "title": "Inspect the fire doors", "team": "facilities"}
    created = await client.post("/admin/v1/tasks", json=body, headers=world.admin)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    staff = {"role": "staff", "team": "facilities", "consents": {"tasks": True}}
    late = await register(client, world, **staff)
    live = await register(client, world, **staff)

    [event] = await post(client, late, at(FAR_OUTSIDE, ago(minutes=31)), at(INSIDE, ago(minutes=30)))
    assert (event["kind"], event["late"]) == ("enter", True)
    await run_worker(settings)
    assert (await client.get("/v1/tasks", headers=late)).json() == []
    assert (await client.get("/v1/inbox", headers=late)).json()["items"] == []
    [task] = (await client.get("/admin/v1/tasks", headers=world.admin)).json()
    assert (task["id"], task["status"], task["assigned_device_id"]) == (task_id, "open", None)

    # The control: a colleague arriving now is given it.
    [event] = await post(client, live, at(FAR_OUTSIDE, ago(seconds=30)), at(INSIDE, ago(seconds=0)))
    assert (event["kind"], event["late"]) == ("enter", False)
    await run_worker(settings)
    assert [(t["id"], t["status"]) for t in (await client.get("/v1/tasks", headers=live)).json()] == [
        (task_id, "notified")
    ]


async def test_a_late_dwell_is_never_pushed(app, client, world: World, settings) -> None:
    await set_late_limit(app, client, world, LIMIT_S)
    title = "Stayed a while " + secrets.token_hex(3)
    await add_content(client, world, "dwell", title)
    late, late_id = await visitor(client, world)
    live, live_id = await visitor(client, world)

    def stay(start: datetime) -> list[dict[str, Any]]:
        """Walk in 30 s after `start`, then a fix a minute for six minutes inside (dwell is after 5)."""
        inside = [at(INSIDE, start + timedelta(seconds=30 + 60 * minute)) for minute in range(7)]
        return [at(FAR_OUTSIDE, start), *inside]

    late_events = await post(client, late, *stay(ago(minutes=45)))
    assert [(e["kind"], e["late"]) for e in late_events] == [("enter", True), ("dwell", True)]
    live_events = await post(client, live, *stay(ago(seconds=390)))
    # Its walk in is 6 minutes old at arrival, inside the 10-minute limit: live.
    assert [(e["kind"], e["late"]) for e in live_events] == [("enter", False), ("dwell", False)]

    await run_worker(settings)

    assert await notifications_of(app, late_id) == []
    assert await notifications_of(app, live_id) == [(title, ["fcm", "inbox"])]


async def test_a_late_enter_does_not_count_toward_a_live_dwell(app, client, world: World, settings) -> None:
    """The issue: late events "never count toward dwell pushes". A phone back online after 20 minutes offline
    inside: its offline enter is late, and its first live fix inside must not push the dwell content at once."""
    await set_late_limit(app, client, world, LIMIT_S)
    title = "Stayed a while " + secrets.token_hex(3)
    await add_content(client, world, "dwell", title)
    device, device_id = await visitor(client, world)
    offline = await post(client, device, at(FAR_OUTSIDE, ago(minutes=21)), at(INSIDE, ago(minutes=20)))
    assert [(e["kind"], e["late"]) for e in offline] == [("enter", True)]
    back_online = await post(client, device, at(INSIDE, ago(seconds=0)))
    await run_worker(settings)
    assert await notifications_of(app, device_id) == [], f"pushed after {back_online}"


async def test_an_offline_batch_is_late_unpushed_and_sent_to_webhooks_flagged(
    app, client, world: World, settings, receiver: Receiver
) -> None:
    await set_late_limit(app, client, world, LIMIT_S)
    await add_content(client, world, "enter", "Welcome")
    await add_content(client, world, "exit", "Goodbye")
    path = receiver.path()
    hook = await subscribe(client, world.admin, receiver.url(path), [])
    try:
        device, device_id = await visitor(client, world)
        # Two hours ago: in for two minutes, out; then the phone stayed outside, reporting now and then.
        start = ago(hours=2)
        walk = [FAR_OUTSIDE, INSIDE, INSIDE, FAR_OUTSIDE, FAR_OUTSIDE]
        fixes = [at(where, start + timedelta(minutes=n)) for n, where in enumerate(walk)]
        fixes += [at(FAR_OUTSIDE, ago(minutes=90)), at(FAR_OUTSIDE, ago(minutes=61))]
        answer = await client.post(
            "/v1/fixes/batch", json={"batch_id": "offline-" + secrets.token_hex(4), "fixes": fixes}, headers=device
        )
        assert answer.status_code == 202, answer.text
        events = answer.json()["events"]
        assert [(e["kind"], e["late"]) for e in events] == [("enter", True), ("exit", True)]
        assert await stored_events(app, device_id) == [("enter", True), ("exit", True)]

        await run_worker(settings)
        await run_worker(settings, jobs=[("send_webhooks", ())])

        assert await notifications_of(app, device_id) == []
        received = sorted((json.loads(r.body) for r in receiver.received(path)), key=lambda b: b["event_id"])
        assert [(b["event_id"], b["kind"], b["late"]) for b in received] == [
            (events[0]["id"], "enter", True),
            (events[1]["id"], "exit", True),
        ]
        assert {b["device_id"] for b in received} == {device_id}
    finally:
        await client.delete(f"/admin/v1/webhooks/{hook['id']}", headers=world.admin)


async def test_analytics_can_leave_out_visits_known_only_from_late_fixes(app, client, world: World) -> None:
    await set_late_limit(app, client, world, LIMIT_S)
    offline, _ = await visitor(client, world)
    online, _ = await visitor(client, world)
    start = ago(minutes=90)
    walk = [FAR_OUTSIDE, INSIDE, INSIDE, FAR_OUTSIDE, FAR_OUTSIDE]  # in for two minutes, a minute a fix
    late_walk = [at(where, start + timedelta(minutes=n)) for n, where in enumerate(walk)]
    answer = await client.post("/v1/fixes/batch", json={"batch_id": "b-1", "fixes": late_walk}, headers=offline)
    assert [(e["kind"], e["late"]) for e in answer.json()["events"]] == [("enter", True), ("exit", True)]
    events = await post(client, online, at(FAR_OUTSIDE, ago(seconds=60)), at(INSIDE, ago(seconds=30)))
    assert [(e["kind"], e["late"]) for e in events] == [("enter", False)]

    async def visits(**params: str) -> int:
        answer = await client.get("/admin/v1/analytics", params=params, headers=world.admin)
        assert answer.status_code == 200, answer.text
        return sum(row["visits"] for row in answer.json()["visits_per_place_per_day"])

    assert await visits() == 2  # include_late defaults to true
    assert await visits(include_late="true") == 2
    assert await visits(include_late="false") == 1


async def test_the_oldest_fix_accepted_is_seven_days(app, client, world: World) -> None:
    await set_late_limit(app, client, world, LIMIT_S)
    device, device_id = await visitor(client, world)

    too_old = await client.post("/v1/fixes", json=at(INSIDE, ago(days=7, minutes=5)), headers=device)
    assert too_old.status_code == 422, too_old.text
    [problem] = too_old.json()["detail"]
    assert problem["field"] == "ts" and "7 days" in problem["reason"]
    in_batch = await client.post(
        "/v1/fixes/batch",
        json={"batch_id": "old", "fixes": [at(FAR_OUTSIDE, ago(days=6)), at(INSIDE, ago(days=8))]},
        headers=device,
    )
    assert in_batch.status_code == 422 and in_batch.json()["detail"][0]["field"] == "fixes[1].ts"
    assert await stored_events(app, device_id) == []  # nothing of a refused request was kept

    [event] = await post(client, device, at(INSIDE, ago(days=6)))
    assert (event["kind"], event["late"]) == ("enter", True)


async def test_without_its_own_limit_an_organisation_uses_the_services(app, client, world: World, settings) -> None:
    owner = await owner_of(app, world)
    device, _ = await visitor(client, world)
    await set_late_limit(app, client, world, LIMIT_S)
    await set_late_limit(app, client, world, None)  # back to the service's setting
    shown = (await client.get("/admin/v1/organisation/settings", headers=owner)).json()
    assert shown["late_fix_after_s"] is None
    assert shown["effective_late_fix_after_s"] == settings.late_fix_after_s == 30 * 86400

    # An hour old: late under the organisation's 10 minutes a moment ago, not under the service's 30 days.
    [event] = await post(client, device, at(INSIDE, ago(hours=1)))
    assert (event["kind"], event["late"]) == ("enter", False)

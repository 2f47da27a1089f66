"""Outgoing webhooks on real PostGIS, sent over real HTTP to a receiver served by uvicorn on loopback.

Time is driven by passing `now` to `send_due`; nothing sleeps for a backoff. Each test posts to its own
receiver path and removes its subscriptions afterwards, so one test's deliveries never fall due in another.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from infra.stack import free_port
from notifications import webhooks
from notifications.webhooks import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    ERROR_CHARS,
    LEASE_S,
    MAX_ATTEMPTS,
    backoff_s,
    verify,
)
from services.models import Role
from tests.integration.webhook_helpers import (
    add_key,
    deliveries_of,
    enqueue,
    seed_events,
    send_due_now,
    subscribe,
)


async def test_signature_verifies_with_the_secret_shown_at_creation(app, client, orgs, receiver, http) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    hook = await subscribe(client, headers, receiver.url(path), ["enter"])
    place_id, device_id, [event_id] = await seed_events(app, organisation_id, ["enter"])
    assert await enqueue(app, organisation_id, [event_id]) == 1

    assert await send_due_now(app, http) == {"claimed": 1, "sent": 1, "retry": 0, "dead": 0}

    [request] = receiver.received(path)
    [delivery] = await deliveries_of(app, hook["id"])
    assert (delivery.status, delivery.attempts) == ("sent", 1)
    assert request.headers["x-placecast-event"] == "enter"
    assert request.headers["x-placecast-delivery"] == str(delivery.id)
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "delivery_id": delivery.id,
        "event_id": event_id,
        "kind": "enter",
        "zone": "building",
        "occurred_at": "2025-05-01T09:30:00Z",
        "organisation_id": organisation_id,
        "place": {"id": place_id, "name": "Oodi"},
        "device_id": device_id,
        "late": False,
    }

    signature = request.headers["x-placecast-signature"]
    signed_at = int(signature.split(",")[0].removeprefix("t="))
    assert abs(signed_at - time.time()) < 60
    assert verify(hook["secret"], signature, request.body)
    assert not verify(hook["secret"], signature, request.body.replace(b'"enter"', b'"exit"'))
    assert not verify("whsec_someone-else", signature, request.body)
    assert not verify(hook["secret"], signature, request.body, now=signed_at + 301)
    assert verify(hook["secret"], signature, request.body, now=signed_at + 299)
    assert not verify(hook["secret"], "t=oops,v1=" + "0" * 64, request.body)
    # The timestamp is inside the MAC: moving it (to replay later) breaks the signature.
    assert not verify(hook["secret"], signature.replace(f"t={signed_at}", f"t={signed_at + 1}"), request.body)
    # The wire format receivers implement: HMAC-SHA256(secret, "<t>." + raw body), hex.
    expected = hmac.new(hook["secret"].encode(), f"{signed_at}.".encode() + request.body, hashlib.sha256)
    assert signature == f"t={signed_at},v1={expected.hexdigest()}"


async def test_enqueue_follows_kinds_active_subscriptions_and_the_organisation(
    app, client, orgs, receiver, http
) -> None:
    organisation_id, headers = await orgs()
    other_id, other_headers = await orgs()
    paths = {name: receiver.path() for name in ("enter", "all", "exit_dwell", "inactive", "other")}
    enter = await subscribe(client, headers, receiver.url(paths["enter"]), ["enter"])
    every = await subscribe(client, headers, receiver.url(paths["all"]), [])
    exit_dwell = await subscribe(client, headers, receiver.url(paths["exit_dwell"]), ["exit", "dwell"])
    inactive = await subscribe(client, headers, receiver.url(paths["inactive"]), [])
    await subscribe(client, other_headers, receiver.url(paths["other"]), [])
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE webhook_subscriptions SET active = false WHERE id = :s"), {"s": inactive["id"]}
        )
    _, _, events = await seed_events(app, organisation_id, ["enter", "exit", "checkin"])
    _, _, other_events = await seed_events(app, other_id, ["enter"])

    # The other organisation's event id is ignored: the caller names the organisation it works for.
    assert await enqueue(app, organisation_id, events + other_events) == 5
    assert await enqueue(app, organisation_id, events) == 0  # a replayed job adds nothing
    assert [d.kind for d in await deliveries_of(app, enter["id"])] == ["enter"]
    assert [d.kind for d in await deliveries_of(app, every["id"])] == ["enter", "exit", "checkin"]
    assert [d.kind for d in await deliveries_of(app, exit_dwell["id"])] == ["exit"]
    assert await deliveries_of(app, inactive["id"]) == []

    # The dead-letter/delivery list pages with a cursor.
    page_url = f"/admin/v1/webhooks/{every['id']}/deliveries"
    first = (await client.get(page_url, params={"limit": 2}, headers=headers)).json()
    rest = (await client.get(page_url, params={"cursor": first["next_cursor"]}, headers=headers)).json()
    assert [i["event_id"] for i in first["items"] + rest["items"]] == events
    assert rest["next_cursor"] is None

    # Switched off after its delivery was queued: nothing more goes to it.
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(text("UPDATE webhook_subscriptions SET active = false WHERE id = :s"), {"s": enter["id"]})
    assert (await send_due_now(app, http, limit=2))["sent"] == 2
    assert (await send_due_now(app, http))["sent"] == 2
    sent = {name: sorted(r.headers["x-placecast-event"] for r in receiver.received(p)) for name, p in paths.items()}
    assert sent == {
        "enter": [],
        "all": ["checkin", "enter", "exit"],
        "exit_dwell": ["exit"],
        "inactive": [],
        "other": [],
    }


async def test_failing_receiver_is_retried_with_backoff_and_delivered_on_the_third_attempt(
    app, client, orgs, receiver, http
) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    receiver.answer(path, [500, 500])
    hook = await subscribe(client, headers, receiver.url(path), [])
    _, _, events = await seed_events(app, organisation_id, ["dwell"])
    await enqueue(app, organisation_id, events)
    now = datetime.now(UTC)

    for attempt in (1, 2):
        assert await send_due_now(app, http, now=now) == {"claimed": 1, "sent": 0, "retry": 1, "dead": 0}
        [delivery] = await deliveries_of(app, hook["id"])
        assert (delivery.status, delivery.attempts) == ("pending", attempt)
        assert delivery.last_error.startswith("HTTP 500: boom")
        step = BACKOFF_BASE_S * 2**attempt
        assert step / 2 <= (delivery.next_attempt_at - now).total_seconds() <= step
        # Not due a moment before the backoff ends: nothing is sent.
        early = delivery.next_attempt_at - timedelta(milliseconds=1)
        assert (await send_due_now(app, http, now=early))["claimed"] == 0
        assert len(receiver.received(path)) == attempt
        now = delivery.next_attempt_at

    assert await send_due_now(app, http, now=now) == {"claimed": 1, "sent": 1, "retry": 0, "dead": 0}
    [delivery] = await deliveries_of(app, hook["id"])
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("sent", 3, None)
    requests = receiver.received(path)
    assert len(requests) == 3
    assert {r.headers["x-placecast-delivery"] for r in requests} == {str(delivery.id)}
    assert len({r.body for r in requests}) == 1  # the same body each time, so receivers can dedupe
    assert (await send_due_now(app, http, now=now + timedelta(days=1)))["claimed"] == 0


async def test_dead_after_max_attempts_listed_and_requeued_through_the_admin_api(
    app, client, orgs, receiver, http
) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    receiver.answer(path, [500] * MAX_ATTEMPTS)
    hook = await subscribe(client, headers, receiver.url(path), ["checkout"])
    _, _, events = await seed_events(app, organisation_id, ["checkout"])
    await enqueue(app, organisation_id, events)
    now = datetime.now(UTC)

    for _ in range(MAX_ATTEMPTS - 1):
        assert (await send_due_now(app, http, now=now))["retry"] == 1
        [delivery] = await deliveries_of(app, hook["id"])
        now = delivery.next_attempt_at
    assert await send_due_now(app, http, now=now) == {"claimed": 1, "sent": 0, "retry": 0, "dead": 1}
    [delivery] = await deliveries_of(app, hook["id"])
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("dead", MAX_ATTEMPTS, None)
    assert len(delivery.last_error) <= len("HTTP 500: ") + ERROR_CHARS
    assert (await send_due_now(app, http, now=now + timedelta(days=30)))["claimed"] == 0
    assert len(receiver.received(path)) == MAX_ATTEMPTS

    deliveries_url = f"/admin/v1/webhooks/{hook['id']}/deliveries"
    dead = await client.get(deliveries_url, params={"status": "dead"}, headers=headers)
    assert dead.status_code == 200, dead.text
    [item] = dead.json()["items"]
    assert (item["id"], item["attempts"], item["status"]) == (delivery.id, MAX_ATTEMPTS, "dead")
    assert item["last_error"].startswith("HTTP 500: boom")
    assert (await client.get(deliveries_url, params={"status": "sent"}, headers=headers)).json()["items"] == []
    assert (await client.get(deliveries_url, params={"status": "lost"}, headers=headers)).status_code == 422

    retried = await client.post(f"/admin/v1/webhook-deliveries/{delivery.id}/retry", headers=headers)
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    again = await client.post(f"/admin/v1/webhook-deliveries/{delivery.id}/retry", headers=headers)
    assert again.status_code == 409

    assert (await send_due_now(app, http))["sent"] == 1
    [delivery] = await deliveries_of(app, hook["id"])
    assert (delivery.status, delivery.attempts) == ("sent", 1)
    assert (await client.get(deliveries_url, params={"status": "dead"}, headers=headers)).json()["items"] == []


async def test_an_unreachable_subscriber_does_not_stop_the_others(app, client, orgs, receiver, http) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    good = await subscribe(client, headers, receiver.url(path), [])
    closed_port = free_port()  # nothing listens there: connection refused
    bad = await subscribe(client, headers, f"http://127.0.0.1:{closed_port}/hook", [])
    _, _, events = await seed_events(app, organisation_id, ["enter"])
    await enqueue(app, organisation_id, events)

    assert await send_due_now(app, http) == {"claimed": 2, "sent": 1, "retry": 1, "dead": 0}
    assert [d.status for d in await deliveries_of(app, good["id"])] == ["sent"]
    [failed] = await deliveries_of(app, bad["id"])
    assert (failed.status, failed.attempts) == ("pending", 1)
    assert failed.last_error.startswith("ConnectError")
    assert len(receiver.received(path)) == 1


async def test_a_subscriber_trickling_its_answer_times_out_and_is_retried(
    app, client, orgs, receiver, http, monkeypatch
) -> None:
    monkeypatch.setattr(webhooks, "REQUEST_TIMEOUT_S", 0.3)
    organisation_id, headers = await orgs()
    path = receiver.path()
    # Each chunk comes well within a per-read timeout; only a bound on the whole exchange stops it.
    receiver.answer(path, [500], trickle=12)
    hook = await subscribe(client, headers, receiver.url(path), [])
    _, _, events = await seed_events(app, organisation_id, ["exit"])
    await enqueue(app, organisation_id, events)

    started = time.monotonic()
    assert (await send_due_now(app, http))["retry"] == 1
    assert time.monotonic() - started < 0.9
    [delivery] = await deliveries_of(app, hook["id"])
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error.startswith("TimeoutError")


async def test_a_late_answer_after_the_lease_ran_out_does_not_overwrite_the_newer_attempt(
    app, client, orgs, receiver, http
) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    receiver.answer(path, [500, 200], delay_s=0.4)
    hook = await subscribe(client, headers, receiver.url(path), [])
    _, _, events = await seed_events(app, organisation_id, ["enter"])
    await enqueue(app, organisation_id, events)
    now = datetime.now(UTC)

    slow = asyncio.create_task(send_due_now(app, http, now=now))
    for _ in range(300):  # until the first worker's request is in flight
        if receiver.received(path):
            break
        await asyncio.sleep(0.01)
    # A second worker whose clock says the first one's lease has run out (as if it had died) sends again.
    retaken = await send_due_now(app, http, now=now + timedelta(seconds=LEASE_S + 1))
    assert retaken == {"claimed": 1, "sent": 1, "retry": 0, "dead": 0}
    assert (await slow)["retry"] == 1
    [delivery] = await deliveries_of(app, hook["id"])
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 1, None)


async def test_a_delivery_another_worker_holds_is_skipped_not_waited_for(app, client, orgs, receiver, http) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    hook = await subscribe(client, headers, receiver.url(path), [])
    _, _, events = await seed_events(app, organisation_id, ["enter", "exit"])
    await enqueue(app, organisation_id, events)
    held, free = await deliveries_of(app, hook["id"])

    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(text("SELECT id FROM webhook_deliveries WHERE id = :id FOR UPDATE"), {"id": held.id})
        counts = await asyncio.wait_for(send_due_now(app, http), timeout=5)
    assert counts == {"claimed": 1, "sent": 1, "retry": 0, "dead": 0}
    assert [r.headers["x-placecast-delivery"] for r in receiver.received(path)] == [str(free.id)]
    assert (await send_due_now(app, http))["sent"] == 1


async def test_concurrent_senders_send_each_delivery_once(app, client, orgs, receiver, http) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    receiver.answer(path, [], delay_s=0.2)
    await subscribe(client, headers, receiver.url(path), [])
    _, _, events = await seed_events(app, organisation_id, ["enter", "exit", "enter", "exit", "dwell"])
    await enqueue(app, organisation_id, events)

    first, second = await asyncio.gather(send_due_now(app, http), send_due_now(app, http))
    assert first["claimed"] + second["claimed"] == 5
    delivery_ids = [r.headers["x-placecast-delivery"] for r in receiver.received(path)]
    assert len(delivery_ids) == len(set(delivery_ids)) == 5


async def test_secret_is_shown_once_and_input_is_checked(app, client, orgs, receiver) -> None:
    organisation_id, headers = await orgs()
    url = receiver.url(receiver.path())
    created = await client.post(
        "/admin/v1/webhooks", json={"url": url, "event_types": ["exit", "enter", "exit"]}, headers=headers
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["event_types"] == ["enter", "exit"]
    assert hook["url"] == url and hook["active"] is True

    listed = await client.get("/admin/v1/webhooks", headers=headers)
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert item["id"] == hook["id"] and "secret" not in item
    deliveries = await client.get(f"/admin/v1/webhooks/{hook['id']}/deliveries", headers=headers)
    for answer in (listed, deliveries):
        assert hook["secret"] not in answer.text
    async with app.state.resources.session_factory() as session:
        audit = (
            await session.execute(
                text(
                    "SELECT details::text FROM audit_log WHERE organisation_id = :o"
                    " AND entity = 'webhook_subscription' AND action = 'create'"
                ),
                {"o": organisation_id},
            )
        ).scalar_one()
    assert url in audit and hook["secret"] not in audit

    for body in (
        {"url": "ftp://example.org/hook"},
        {"url": "not a url"},
        {"url": "javascript:alert(1)"},
        {"url": url, "event_types": ["teleport"]},
        {"url": url, "event_types": "enter"},
    ):
        refused = await client.post("/admin/v1/webhooks", json=body, headers=headers)
        assert refused.status_code == 422, body
        assert refused.json()["error"] == "validation_failed"
    assert len((await client.get("/admin/v1/webhooks", headers=headers)).json()["items"]) == 1


async def test_other_organisations_and_viewers_cannot_change_webhooks(app, client, orgs, receiver) -> None:
    organisation_id, headers = await orgs()
    _, intruder = await orgs()
    viewer = await add_key(app, organisation_id, Role.viewer)
    hook = await subscribe(client, headers, receiver.url(receiver.path()), [])
    _, _, events = await seed_events(app, organisation_id, ["enter"])
    await enqueue(app, organisation_id, events)
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE webhook_deliveries SET status = 'dead' WHERE subscription_id = :s"),
            {"s": hook["id"]},
        )
    [delivery] = await deliveries_of(app, hook["id"])
    deliveries_url = f"/admin/v1/webhooks/{hook['id']}/deliveries"
    retry_url = f"/admin/v1/webhook-deliveries/{delivery.id}/retry"

    assert (await client.get("/admin/v1/webhooks", headers=intruder)).json()["items"] == []
    assert (await client.get(deliveries_url, headers=intruder)).status_code == 404
    assert (await client.post(retry_url, headers=intruder)).status_code == 404
    assert (await client.delete(f"/admin/v1/webhooks/{hook['id']}", headers=intruder)).status_code == 404

    assert [i["id"] for i in (await client.get("/admin/v1/webhooks", headers=viewer)).json()["items"]] == [hook["id"]]
    assert (await client.get(deliveries_url, params={"status": "dead"}, headers=viewer)).status_code == 200
    assert (await client.post(retry_url, headers=viewer)).status_code == 403
    assert (await client.delete(f"/admin/v1/webhooks/{hook['id']}", headers=viewer)).status_code == 403
    body = {"url": receiver.url("/x"), "event_types": []}
    assert (await client.post("/admin/v1/webhooks", json=body, headers=viewer)).status_code == 403
    [still] = await deliveries_of(app, hook["id"])
    assert (still.status, still.attempts) == ("dead", 0)

    assert (await client.delete(f"/admin/v1/webhooks/{hook['id']}", headers=headers)).status_code == 204
    assert (await client.delete(f"/admin/v1/webhooks/{hook['id']}", headers=headers)).status_code == 404
    assert (await client.get(deliveries_url, headers=headers)).status_code == 404
    assert await deliveries_of(app, hook["id"]) == []  # nothing left to send to a deleted subscriber


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt in range(1, 25):
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
        samples = [backoff_s(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 1  # jittered, so receivers are not retried in lockstep
    assert backoff_s(30) <= BACKOFF_CAP_S


async def test_a_walk_in_reaches_the_webhook_through_the_real_worker(app, client, receiver, world, settings) -> None:
    from tests.integration.worker_helpers import run_worker
    from tests.world import FAR_OUTSIDE, INSIDE, fix, register

    path = receiver.path()
    hook = await subscribe(client, world.admin, receiver.url(path), ["enter"])
    device = await register(client, world)
    await client.post("/v1/fixes", json=fix(FAR_OUTSIDE), headers=device)
    [event] = (await client.post("/v1/fixes", json=fix(INSIDE), headers=device)).json()["events"]
    await run_worker(settings, jobs=[("deliver_events", ([event["id"]],))])
    await run_worker(settings, jobs=[("send_webhooks", ())])
    [request] = receiver.received(path)
    assert json.loads(request.body)["event_id"] == event["id"]
    assert verify(hook["secret"], request.headers["x-placecast-signature"], request.body)

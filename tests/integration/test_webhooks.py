"""Outgoing webhooks on real PostGIS, sent over real HTTP to a receiver served by uvicorn on loopback.

Time is driven by passing `now` to `send_due`; nothing sleeps for a backoff. Each test posts to its own
receiver path and removes its subscriptions afterwards, so one test's deliveries never fall due in another.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
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
    enqueue_for_events,
    send_due,
    verify,
)
from services.models import Role
from services.orgs import create_api_key, create_organisation
from services.uow import unit_of_work

OCCURRED_AT = datetime(2025, 5, 1, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An ASGI app that records every request and answers scripted statuses per path (then 200)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._answers: dict[str, list[int]] = {}
        self._delays: dict[str, float] = {}
        self._trickles: dict[str, int] = {}

    def path(self) -> str:
        return f"/hook/{secrets.token_hex(6)}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, statuses: list[int], delay_s: float = 0.0, trickle: int = 0) -> None:
        """Wait `delay_s` before answering; `trickle` sends the body as that many chunks 0.1 s apart."""
        with self._lock:
            self._answers[path] = list(statuses)
            self._delays[path] = delay_s
            self._trickles[path] = trickle

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self._received if r.path == path]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self._lock:
            self._received.append(Received(path, headers, body))
            scripted = self._answers.get(path) or []
            status = scripted.pop(0) if scripted else 200
            delay_s = self._delays.get(path, 0.0)
            trickle = self._trickles.get(path, 0)
        if delay_s:
            await asyncio.sleep(delay_s)
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
        await send(start)
        for _ in range(trickle):
            await send({"type": "http.response.body", "body": b"slow ", "more_body": True})
            await asyncio.sleep(0.1)
        # A long error body shows that last_error keeps only its start.
        answer = b"ok" if status < 300 else b"boom " + b"x" * 1000
        await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    app = Receiver()
    config = uvicorn.Config(app, host="127.0.0.1", port=app.port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.01)
    yield app
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:  # no proxy from the environment for loopback
        yield client


OrgMaker = Callable[..., Awaitable[tuple[int, dict[str, str]]]]


@pytest.fixture
async def orgs(app) -> AsyncIterator[OrgMaker]:
    """Makes organisations with an API key; their subscriptions (and so deliveries) go at teardown."""
    made: list[int] = []

    async def make(role: Role = Role.editor) -> tuple[int, dict[str, str]]:
        slug = "wh-" + secrets.token_hex(4)
        async with unit_of_work(app.state.session_factory) as uow:
            organisation_id = await create_organisation(uow.session, name=slug, slug=slug)
            key = await create_api_key(uow.session, organisation_id=organisation_id, name="t", role=role)
        made.append(organisation_id)
        return organisation_id, {"X-API-Key": key}

    yield make
    async with app.state.session_factory() as session, session.begin():
        await session.execute(
            text("DELETE FROM webhook_subscriptions WHERE organisation_id = ANY(:ids)"), {"ids": made}
        )


async def add_key(app, organisation_id: int, role: Role) -> dict[str, str]:
    async with unit_of_work(app.state.session_factory) as uow:
        key = await create_api_key(uow.session, organisation_id=organisation_id, name="r", role=role)
    return {"X-API-Key": key}


async def seed_events(app, organisation_id: int, kinds: list[str]) -> tuple[int, int, list[int]]:
    """A place, a device and one event per kind; returns (place_id, device_id, event_ids)."""
    async with app.state.session_factory() as session, session.begin():
        place_id = (
            await session.execute(
                text("INSERT INTO places (organisation_id, name, kind) VALUES (:o, 'Oodi', 'library') RETURNING id"),
                {"o": organisation_id},
            )
        ).scalar_one()
        device_id = (
            await session.execute(
                text(
                    "INSERT INTO devices (organisation_id, platform, role, credential_hash)"
                    " VALUES (:o, 'android', 'visitor', :h) RETURNING id"
                ),
                {"o": organisation_id, "h": secrets.token_hex(32)},
            )
        ).scalar_one()
        event_ids = [
            (
                await session.execute(
                    text(
                        "INSERT INTO events (organisation_id, device_id, place_id, kind, occurred_at)"
                        " VALUES (:o, :d, :p, :k, :t) RETURNING id"
                    ),
                    {"o": organisation_id, "d": device_id, "p": place_id, "k": kind, "t": OCCURRED_AT},
                )
            ).scalar_one()
            for kind in kinds
        ]
    return place_id, device_id, event_ids


async def enqueue(app, organisation_id: int, event_ids: list[int]) -> int:
    async with app.state.session_factory() as session, session.begin():
        return await enqueue_for_events(session, organisation_id, event_ids)


async def deliveries_of(app, subscription_id: int) -> list[Any]:
    async with app.state.session_factory() as session:
        rows = await session.execute(
            text(
                "SELECT d.id, d.event_id, e.kind, d.status, d.attempts, d.last_error, d.next_attempt_at"
                " FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
                " WHERE d.subscription_id = :s ORDER BY d.id"
            ),
            {"s": subscription_id},
        )
        return list(rows)


async def subscribe(client, headers: dict[str, str], url: str, event_types: list[str]) -> dict[str, Any]:
    answer = await client.post("/admin/v1/webhooks", json={"url": url, "event_types": event_types}, headers=headers)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def test_signature_verifies_with_the_secret_shown_at_creation(app, client, orgs, receiver, http) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    hook = await subscribe(client, headers, receiver.url(path), ["enter"])
    place_id, device_id, [event_id] = await seed_events(app, organisation_id, ["enter"])
    assert await enqueue(app, organisation_id, [event_id]) == 1

    assert await send_due(app.state.session_factory, http) == {"claimed": 1, "sent": 1, "retry": 0, "dead": 0}

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
    async with app.state.session_factory() as session, session.begin():
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
    async with app.state.session_factory() as session, session.begin():
        await session.execute(text("UPDATE webhook_subscriptions SET active = false WHERE id = :s"), {"s": enter["id"]})
    assert (await send_due(app.state.session_factory, http, limit=2))["sent"] == 2
    assert (await send_due(app.state.session_factory, http))["sent"] == 2
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
    factory = app.state.session_factory
    now = datetime.now(UTC)

    for attempt in (1, 2):
        assert await send_due(factory, http, now=now) == {"claimed": 1, "sent": 0, "retry": 1, "dead": 0}
        [delivery] = await deliveries_of(app, hook["id"])
        assert (delivery.status, delivery.attempts) == ("pending", attempt)
        assert delivery.last_error.startswith("HTTP 500: boom")
        step = BACKOFF_BASE_S * 2**attempt
        assert step / 2 <= (delivery.next_attempt_at - now).total_seconds() <= step
        # Not due a moment before the backoff ends: nothing is sent.
        early = delivery.next_attempt_at - timedelta(milliseconds=1)
        assert (await send_due(factory, http, now=early))["claimed"] == 0
        assert len(receiver.received(path)) == attempt
        now = delivery.next_attempt_at

    assert await send_due(factory, http, now=now) == {"claimed": 1, "sent": 1, "retry": 0, "dead": 0}
    [delivery] = await deliveries_of(app, hook["id"])
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("sent", 3, None)
    requests = receiver.received(path)
    assert len(requests) == 3
    assert {r.headers["x-placecast-delivery"] for r in requests} == {str(delivery.id)}
    assert len({r.body for r in requests}) == 1  # the same body each time, so receivers can dedupe
    assert (await send_due(factory, http, now=now + timedelta(days=1)))["claimed"] == 0


async def test_dead_after_max_attempts_listed_and_requeued_through_the_admin_api(
    app, client, orgs, receiver, http
) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    receiver.answer(path, [500] * MAX_ATTEMPTS)
    hook = await subscribe(client, headers, receiver.url(path), ["checkout"])
    _, _, events = await seed_events(app, organisation_id, ["checkout"])
    await enqueue(app, organisation_id, events)
    factory = app.state.session_factory
    now = datetime.now(UTC)

    for _ in range(MAX_ATTEMPTS - 1):
        assert (await send_due(factory, http, now=now))["retry"] == 1
        [delivery] = await deliveries_of(app, hook["id"])
        now = delivery.next_attempt_at
    assert await send_due(factory, http, now=now) == {"claimed": 1, "sent": 0, "retry": 0, "dead": 1}
    [delivery] = await deliveries_of(app, hook["id"])
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("dead", MAX_ATTEMPTS, None)
    assert len(delivery.last_error) <= len("HTTP 500: ") + ERROR_CHARS
    assert (await send_due(factory, http, now=now + timedelta(days=30)))["claimed"] == 0
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

    assert (await send_due(factory, http))["sent"] == 1
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

    assert await send_due(app.state.session_factory, http) == {"claimed": 2, "sent": 1, "retry": 1, "dead": 0}
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
    assert (await send_due(app.state.session_factory, http))["retry"] == 1
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
    factory = app.state.session_factory
    now = datetime.now(UTC)

    slow = asyncio.create_task(send_due(factory, http, now=now))
    for _ in range(300):  # until the first worker's request is in flight
        if receiver.received(path):
            break
        await asyncio.sleep(0.01)
    # A second worker whose clock says the first one's lease has run out (as if it had died) sends again.
    retaken = await send_due(factory, http, now=now + timedelta(seconds=LEASE_S + 1))
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

    async with app.state.session_factory() as session, session.begin():
        await session.execute(text("SELECT id FROM webhook_deliveries WHERE id = :id FOR UPDATE"), {"id": held.id})
        counts = await asyncio.wait_for(send_due(app.state.session_factory, http), timeout=5)
    assert counts == {"claimed": 1, "sent": 1, "retry": 0, "dead": 0}
    assert [r.headers["x-placecast-delivery"] for r in receiver.received(path)] == [str(free.id)]
    assert (await send_due(app.state.session_factory, http))["sent"] == 1


async def test_concurrent_senders_send_each_delivery_once(app, client, orgs, receiver, http) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    receiver.answer(path, [], delay_s=0.2)
    await subscribe(client, headers, receiver.url(path), [])
    _, _, events = await seed_events(app, organisation_id, ["enter", "exit", "enter", "exit", "dwell"])
    await enqueue(app, organisation_id, events)

    first, second = await asyncio.gather(
        send_due(app.state.session_factory, http), send_due(app.state.session_factory, http)
    )
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
    async with app.state.session_factory() as session:
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
    async with app.state.session_factory() as session, session.begin():
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

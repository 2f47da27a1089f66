"""Webhook test helpers: a recording receiver served by uvicorn on loopback, organisations with keys, events.

The fixtures (`receiver`, `orgs`, `http`) are registered for every integration test in `conftest.py`.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from infra.stack import free_port
from kernel.uow import unit_of_work
from notifications.webhooks import enqueue_for_events, send_due
from services.models import Role
from services.orgs import create_api_key, create_organisation

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
        async with unit_of_work(app.state.resources.session_factory) as uow:
            organisation_id = await create_organisation(uow.session, name=slug, slug=slug)
            key = await create_api_key(uow.session, organisation_id=organisation_id, name="t", role=role)
        made.append(organisation_id)
        return organisation_id, {"X-API-Key": key}

    yield make
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            text("DELETE FROM webhook_subscriptions WHERE organisation_id = ANY(:ids)"), {"ids": made}
        )


async def add_key(app, organisation_id: int, role: Role) -> dict[str, str]:
    async with unit_of_work(app.state.resources.session_factory) as uow:
        key = await create_api_key(uow.session, organisation_id=organisation_id, name="r", role=role)
    return {"X-API-Key": key}


async def seed_events(app, organisation_id: int, kinds: list[str]) -> tuple[int, int, list[int]]:
    """A place, a device and one event per kind; returns (place_id, device_id, event_ids)."""
    async with app.state.resources.session_factory() as session, session.begin():
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
    async with app.state.resources.session_factory() as session, session.begin():
        return await enqueue_for_events(session, organisation_id, event_ids)


async def send_due_now(app, http: httpx.AsyncClient, **options: Any) -> dict[str, int]:
    """The worker's webhook job (`send_due`) with the app's session factory and sealer."""
    resources = app.state.resources
    return await send_due(resources.session_factory, http, sealer=resources.sealer, **options)


async def deliveries_of(app, subscription_id: int) -> list[Any]:
    async with app.state.resources.session_factory() as session:
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

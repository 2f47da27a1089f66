"""PostgreSQL and Redis stopped or killed under load, with the API replicas and the worker running: afterwards
everything the service acknowledged is read back (tests/e2e/ledger.py).

Checking answers proves nothing about loss, so each case records what every request was told and then reads
PostgreSQL and the FCM stand-in: every fix answered 2xx is stored exactly once; a request never answered 2xx
stored all its fixes or none; refusals are 5xx (a 4xx would make the app drop its fixes); the stored events are
exactly the engine's on the stored fixes, and include those in the answers; and every building enter became one
notification whose push FCM received once, after the sweeper has caught up with what the outage interrupted. A
dependency's outage also shows on `/ready` and not on `/health`, and fixes are accepted again within seconds.

Seen on today's code and not asserted here (answers, not loss): a request that reaches PostgreSQL while it is
starting up gets a 500 ("the database system is starting up" is not mapped to 503), and the 503 of a connection
lost mid-request carries no Retry-After.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from infra.fake_fcm import RunningFake, local_fcm
from mobile_api.api import transition_config
from tests.e2e.ledger import Dependencies, Fleet, Phone, Stored, building_enters, load, read_back, replay_with, settled
from tests.e2e.ui_helpers import stop
from tests.world import World

PHONES = 6
DOWN_S = 2.0  # the outage, with the phones still posting
AFTER_S = 2.0  # load after fixes are accepted again
SETTLE_S = 40.0  # the sweeper runs every 5 s: outbox rows 5 s old, pushes whose 5 s lease ended

OUTAGES = [
    pytest.param("postgres", "stop", id="postgres-stopped"),
    pytest.param("postgres", "kill", id="postgres-killed"),
    pytest.param("redis", "stop", id="redis-stopped"),
    pytest.param("redis", "kill", id="redis-killed"),
    # Events waiting in Redis when it loses everything: only the outbox (and the sweeper) still knows them.
    pytest.param("redis", "wipe", id="redis-lost-its-data"),
]


@pytest.fixture(scope="module")
def fcm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningFake, dict[str, str]]]:
    with local_fcm(tmp_path_factory.mktemp("outage-fcm")) as running:
        yield running


class Worker:
    """The arq worker as `placecast up` runs it, pushing to the FCM stand-in; its output kept for a failure."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.deaths = env, log, 0
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as output:
            command = [sys.executable, "-m", "infra.worker"]
            return subprocess.Popen(command, env={**os.environ, **self.env}, stdout=output, stderr=subprocess.STDOUT)

    def revive(self) -> bool:
        """Start it again if it has exited, as a supervisor would; whether it had."""
        if self.process.poll() is None:
            return False
        self.deaths += 1
        self.process = self._start()
        return True


@pytest.fixture(scope="module")
def worker(
    test_env: dict[str, str], fcm: tuple[RunningFake, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    # A push whose answer could not be recorded (PostgreSQL gone) is sent again when its lease ends: 5 s, not 60.
    env = {**test_env, **fcm[1], "PLACECAST_PUSH_LEASE_S": "5"}
    running = Worker(env, tmp_path_factory.mktemp("outage-worker") / "worker.log")
    yield running
    stop(running.process)


@pytest.fixture(scope="module")
async def durable_commits(settings: Any, app: Any) -> AsyncIterator[None]:
    """The session's cluster commits asynchronously for speed, so killing it loses the last few hundred ms of
    commits by design; production commits synchronously. Its database does here, from fresh connections on."""
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    database = sql.Identifier(settings.pg_database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(database))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()"
        )
    await app.state.resources.engine.dispose()
    yield
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} RESET synchronous_commit").format(database))


async def register(client: Any, world: World, token: str, clock: datetime) -> Phone:
    body = {"platform": "android", "fcm_token": token, "consents": {"offers": True}}
    answer = await client.post("/v1/devices", json=body, headers=world.enrolment)
    assert answer.status_code == 201, answer.text
    registered = answer.json()
    return Phone(registered["device_id"], token, {"Authorization": f"Bearer {registered['credential']}"}, clock)


async def probe_outage(base_url: str, service: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 503 and service in ready.json()["down"], ready.text
        assert (await http.get("/health")).status_code == 200


def settle(dsn: str, fake: RunningFake, phones: list[Phone], worker: Worker) -> Stored:
    """What is stored and pushed once every enter's push has arrived (or SETTLE_S has passed)."""
    deadline = time.monotonic() + SETTLE_S
    with fake.client() as http:
        while time.monotonic() < deadline and not settled(load(dsn, http, phones)):
            time.sleep(0.5)
        time.sleep(1.0)  # a push sent twice would arrive by now
        return load(dsn, http, phones)


@pytest.mark.parametrize(("service", "how"), OUTAGES)
async def test_nothing_acknowledged_is_lost(
    service: str,
    how: str,
    two_replicas: list[str],
    world: World,
    client: Any,
    app: Any,
    settings: Any,
    test_env: dict[str, str],
    fcm: tuple[RunningFake, dict[str, str]],
    worker: Worker,
    durable_commits: None,
) -> None:
    worker.revive()
    deaths = worker.deaths
    tag = "outage-" + secrets.token_hex(3)
    content = await client.post(
        "/admin/v1/content",
        headers=world.admin,
        json={"place_id": world.place_id, "title": tag, "body": "Welcome", "trigger": "enter", "cooldown_s": 0},
    )
    assert content.status_code == 201, content.text
    clock = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    phones = [await register(client, world, f"{tag}-{n}", clock) for n in range(PHONES)]
    replay = replay_with(await app.state.resources.indexes.get(world.organisation_id), transition_config(settings))
    dependencies = Dependencies(test_env)
    fleet = Fleet(two_replicas, phones, tag)
    driving = asyncio.create_task(fleet.drive())
    try:
        await fleet.until_acknowledged(20, since=time.monotonic(), timeout_s=20)
        if how == "wipe":  # the worker stalls (a long pause, an overloaded host): events wait for it in Redis
            os.kill(worker.process.pid, signal.SIGSTOP)
            await asyncio.sleep(1.0)
        down_at = time.time()
        await asyncio.to_thread(dependencies.down, service, how)
        try:
            await probe_outage(two_replicas[0], service)
            await asyncio.sleep(DOWN_S)
        finally:
            await asyncio.to_thread(dependencies.up, service)
            up_at = time.time()
            if how == "wipe":
                os.kill(worker.process.pid, signal.SIGCONT)
        resumed_s = await fleet.until_acknowledged(20, since=time.monotonic(), timeout_s=20)
        await asyncio.sleep(AFTER_S)
    finally:
        fleet.stop(drain_s=10)
        await driving
        # This test process's own app (fixtures of later tests) holds connections from before the restart.
        await app.state.resources.engine.dispose()
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    stored = await asyncio.to_thread(settle, dsn, fcm[0], phones, worker)
    assert worker.process.poll() is None and worker.deaths == deaths, (
        "the worker died in the outage:\n" + (worker.log.read_text()[-3000:])
    )
    problems = read_back(fleet, stored, replay, content.json()["id"], (down_at, up_at))
    enters = len(building_enters(stored))
    repeats = sum(1 for copies in Counter(m["data"]["notification_id"] for m in stored.pushes).values() if copies > 1)
    print(
        f"{service} {how}: {fleet.summary()}; {enters} building enters; accepted again after {resumed_s:.1f} s;"
        f" {repeats} pushes repeated; worker restarted {worker.deaths - deaths} times"
    )
    assert not problems, f"{len(problems)} problems ({fleet.summary()}):\n" + "\n".join(problems[:20])
    assert any(not a.ok for s in fleet.ledger for a in s.attempts), "the outage refused nothing"
    assert enters >= 2 * PHONES, f"too few enters to follow: {enters}"
    assert resumed_s < 20


async def test_the_worker_outlives_a_redis_outage(test_env: dict[str, str], worker: Worker) -> None:
    worker.revive()
    await asyncio.sleep(3)  # started: connected to Redis and PostgreSQL, its first sweep run
    dependencies = Dependencies(test_env)
    await asyncio.to_thread(dependencies.down, "redis", "stop")
    try:
        await asyncio.sleep(2)
    finally:
        await asyncio.to_thread(dependencies.up, "redis")
    await asyncio.sleep(1)
    assert worker.process.poll() is None, worker.log.read_text()[-3000:]

"""Fault drills on the highly available topology (`infra/cluster.sh`), under load, with everything read back.

One cluster for the module, in a temporary folder on free ports. A few hundred phones, enrolled up front, post
single fixes and batches (walking in and out of a building whose content pushes on entering) and check in and out,
through HAProxy, at a steady modest rate. While they do, each drill kills one part of the topology:

1. the PostgreSQL leader (Patroni and its PostgreSQL, SIGKILL: the machine is gone) -> the synchronous standby;
2. the Redis master (SIGKILL) -> Sentinel promotes the replica;
3. one API process (SIGKILL) -> HAProxy sends everything to the other;
4. one worker (SIGKILL) while pushes are on the wire -> the other finishes;
5. nothing: everything is stopped (`infra/cluster.sh stop`) and started again (`infra/cluster.sh`).

Then the load stops, the pipeline settles and everything is read back (from the leader, through HAProxy): every
fix answered 2xx is stored (a batch exactly once: it is idempotent on its id; a single fix at least once: a client
that retries once may store it twice after an answer lost in the switch), a request never acknowledged stored all
of its fixes or none, every acknowledged check-in is stored, every building enter has exactly one notification,
sent, and its push reached the FCM stand-in (repeated only where the README allows: a push on the wire when its
worker or the database went away, at most `PLACECAST_FCM_IN_FLIGHT` per worker); the outbox is empty; and every
answer was a 2xx, a 503 with Retry-After, or no answer at all during the switch (never a 500, a 502 or a 4xx).
The time without service is measured as the longest stretch after the kill with no 2xx answer at all. After each
drill the killed node is started again (`infra/cluster.sh` is idempotent; Patroni rejoins the old leader as a
replica, Sentinel turns the old master into a replica) and the next drill waits for a healthy topology.

The table of the run is printed at the end of the session (tests/cluster/conftest.py) and written to
var/cluster-drills.txt.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.cluster.conftest import DRILL_TABLE
from tests.cluster.test_cluster_up import free_block
from tests.e2e.ledger import Attempt, Phone
from tests.world import BLOCK, INSIDE

ROOT = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 240
PHONES = 200  # enrolled up front
CHECKERS = 40  # of them check in and out at the building instead of walking
LANES = 12  # requests in flight at most
RATE_PER_S = 30.0  # requests started per second (a retry is not counted): ~100 fixes/s, well within 2 cores
STEADY = 60  # acknowledgements before the kill
BACK = 60  # acknowledgements after it: service is back
AFTER_S = 5.0  # load after service is back
DRAIN_S = 20.0  # a refused batch is retried this long after the load stops
SETTLE_S = 60.0
PUSH_LEASE_S = 10  # a push claimed longer ago is sent again (default 60: the drills would wait a minute)
FCM_IN_FLIGHT = 100  # PLACECAST_FCM_IN_FLIGHT's default: what a killed worker may have had on the wire
# What the drills give the cluster's processes beyond `infra/cluster.sh`'s own settings: every phone enrols from
# loopback, and a push whose answer was lost is resent after PUSH_LEASE_S.
DRILL_ENV = {
    "PLACECAST_ENROLMENTS_PER_ADDRESS": "1000000",
    "PLACECAST_ENROLMENTS_PER_KEY": "1000000",
    "PLACECAST_PUSH_LEASE_S": str(PUSH_LEASE_S),
}


# ---- the cluster ----


class Cluster:
    """`infra/cluster.sh` in a folder and on ports of its own, and what the drills need of its nodes."""

    def __init__(self, var_dir: Path, port_base: int) -> None:
        self.var_dir, self.root = var_dir, var_dir / "cluster"
        env = {key: value for key, value in os.environ.items() if not key.startswith("PLACECAST_")}
        self.env = env | DRILL_ENV | {"PLACECAST_VAR_DIR": str(var_dir), "PLACECAST_CLUSTER_PORT_BASE": str(port_base)}
        self.script = str(ROOT / "infra" / "cluster.sh")

    def up(self) -> float:
        started = time.monotonic()
        done = subprocess.run(
            [self.script], env=self.env, capture_output=True, text=True, timeout=UP_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"infra/cluster.sh failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return time.monotonic() - started

    def stop(self) -> float:
        started = time.monotonic()
        done = subprocess.run([self.script, "stop"], env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        return time.monotonic() - started

    @property
    def topology(self) -> dict[str, Any]:
        topology: dict[str, Any] = json.loads((self.root / "topology.json").read_text())
        return topology

    def secret(self, name: str) -> str:
        return (self.root / "secrets" / name).read_text().strip()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.topology['haproxy']['api_port']}"

    @property
    def dsn(self) -> str:
        """The service's database on the leader, through HAProxy."""
        port = self.topology["haproxy"]["postgres_port"]
        return f"host=127.0.0.1 port={port} user=placecast password={self.secret('pg-password')} dbname=placecast"

    def cli(self, *args: str) -> str:
        """`placecast ...` as an operator runs it on the cluster (its settings, its secrets)."""
        env = self.env | self.topology["env"]
        done = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "placecast"), *args], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1]

    # PostgreSQL under Patroni

    def patroni_members(self) -> list[dict[str, Any]]:
        config = self.topology["postgres"][0]["patroni_config"]
        listed = subprocess.run(
            ["patronictl", "-c", config, "list", "-f", "json"], capture_output=True, text=True, check=False
        )
        try:
            members: list[dict[str, Any]] = json.loads(listed.stdout)
        except ValueError:
            return []
        return members

    def pg_leader(self) -> dict[str, Any]:
        for node in self.topology["postgres"]:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{node['rest_port']}/primary", timeout=2).status_code == 200:
                    return dict(node)
        raise AssertionError(f"no PostgreSQL leader: {self.patroni_members()}")

    def pg_healthy(self) -> bool:
        """Three members: a leader, a synchronous standby, and the third streaming."""
        members = self.patroni_members()
        roles = Counter(m.get("Role") for m in members)
        return (
            len(members) == 3
            and roles["Leader"] == 1
            and roles["Sync Standby"] >= 1
            and all(m.get("State") in ("running", "streaming") for m in members)
        )

    # Redis and the Sentinels

    def redis_master_port(self) -> int:
        from infra.cluster import sentinel_master

        for sentinel in self.topology["sentinels"]:
            found = sentinel_master(sentinel["port"], self.secret("redis-password"), self.topology["redis_master_name"])
            if found is not None:
                return found[1]
        raise AssertionError("no Sentinel names a master")

    def redis_healthy(self) -> bool:
        import redis

        try:
            port = self.redis_master_port()
            client = redis.Redis(host="127.0.0.1", port=port, password=self.secret("redis-password"), socket_timeout=1)
            with contextlib.closing(client):
                info: dict[str, Any] = client.info("replication")  # type: ignore[assignment]
        except (AssertionError, redis.RedisError):
            return False
        return bool(info.get("role") == "master" and info.get("connected_slaves") == 1)

    # pushes at the FCM stand-in, kept across its restarts (infra/fake_fcm.py --record)

    def pushes(self) -> list[dict[str, Any]]:
        record = self.root / "fake_fcm" / "messages.jsonl"
        if not record.exists():
            return []
        return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def wait_for(what: str, ready: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not ready():
        assert time.monotonic() - started < timeout_s, f"{what} not within {timeout_s:.0f} s"
        time.sleep(0.5)
    return time.monotonic() - started


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


# ---- the phones and their load ----


@dataclass
class Call:
    """One request of a phone and every attempt at it."""

    kind: str  # fix, batch, checkin, checkout
    phone: Phone
    path: str
    body: dict[str, Any]
    fixes: list[dict[str, Any]] = field(default_factory=list)
    batch_id: str | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return any(a.ok for a in self.attempts)

    def fix_keys(self) -> list[tuple[datetime, float, float, str | None]]:
        return [(datetime.fromisoformat(f["ts"]), f["lon"], f["lat"], self.batch_id) for f in self.fixes]


@dataclass
class Scene:
    walkers: list[Phone]
    checkers: list[Phone]
    place_id: int
    content_id: int
    checked_in: set[int] = field(default_factory=set)  # checkers with an open visit


class Load:
    """Phones taking turns (one request of a phone at a time) on LANES lanes at RATE_PER_S requests a second.
    A refused batch is retried (with its batch id) until it is acknowledged; a single fix or a check-in is retried
    once, as an app would without an idempotency key."""

    def __init__(self, base_url: str, scene: Scene, tag: str) -> None:
        self.base_url, self.scene, self.tag = base_url, scene, tag
        phones = [*scene.walkers, *scene.checkers]
        random.Random(tag).shuffle(phones)
        self.turns: asyncio.Queue[Phone] = asyncio.Queue()
        for phone in phones:
            self.turns.put_nowait(phone)
        self.calls: list[Call] = []
        self.rng = random.Random(tag)
        self._stop = asyncio.Event()
        self._give_up_at = float("inf")
        self._next_start = 0.0

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=LANES, max_keepalive_connections=LANES)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=20, limits=limits) as http:
            await asyncio.gather(*(self._lane(http) for _ in range(LANES)))

    def stop(self) -> None:
        self._give_up_at = time.monotonic() + DRAIN_S
        self._stop.set()

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for c in self.calls for a in c.attempts if a.ok and a.at >= moment)

    async def until_acknowledged(self, count: int, since: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.acknowledged_since(since) < count:
            assert time.monotonic() < deadline, f"not {count} acknowledged in {timeout_s:.0f} s: {self.summary()}"
            await asyncio.sleep(0.1)

    async def _lane(self, http: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            self._next_start = max(now, self._next_start) + 1 / RATE_PER_S
            await asyncio.sleep(self._next_start - 1 / RATE_PER_S - now)
            if self._stop.is_set():
                return
            phone = await self.turns.get()
            try:
                await self._call(http, self._next_call(phone))
            finally:
                self.turns.put_nowait(phone)

    def _next_call(self, phone: Phone) -> Call:
        if phone in self.scene.checkers:
            if phone.device_id in self.scene.checked_in:
                return Call("checkout", phone, "/v1/checkouts", {"place_id": self.scene.place_id})
            body = {"place_id": self.scene.place_id, "lon": INSIDE[0], "lat": INSIDE[1], "accuracy_m": 10.0}
            return Call("checkin", phone, "/v1/checkins", body)
        size = 1 if self.rng.random() < 0.5 else self.rng.randint(2, 12)
        fixes = phone.next_fixes(size)
        if size == 1:
            return Call("fix", phone, "/v1/fixes", fixes[0], fixes)
        batch_id = f"{self.tag}-{phone.device_id}-{phone.made}"
        return Call("batch", phone, "/v1/fixes/batch", {"batch_id": batch_id, "fixes": fixes}, fixes, batch_id)

    async def _call(self, http: httpx.AsyncClient, call: Call) -> None:
        self.calls.append(call)
        while True:
            attempt = await self._post(http, call)
            call.attempts.append(attempt)
            if attempt.ok:
                if call.kind == "checkin":
                    self.scene.checked_in.add(call.phone.device_id)
                elif call.kind == "checkout":
                    self.scene.checked_in.discard(call.phone.device_id)
                return
            if attempt.status == 404 and call.kind == "checkout" and len(call.attempts) > 1:
                self.scene.checked_in.discard(call.phone.device_id)  # the first attempt did check out
                return
            retries = call.kind == "batch" or len(call.attempts) < 2
            if not retries or time.monotonic() > self._give_up_at:
                return
            wait = float(attempt.retry_after) if attempt.retry_after and attempt.retry_after.isdigit() else 0.5
            await asyncio.sleep(min(wait, 2.0))

    async def _post(self, http: httpx.AsyncClient, call: Call) -> Attempt:
        started = time.monotonic()
        try:
            answer = await http.post(call.path, json=call.body, headers=call.phone.auth)
        except httpx.HTTPError as error:
            return Attempt(time.monotonic(), None, error=repr(error), started=started)
        try:
            parsed = answer.json()
        except ValueError:
            parsed = answer.text[:200]
        return Attempt(time.monotonic(), answer.status_code, parsed, answer.headers.get("Retry-After"), started=started)

    def summary(self) -> str:
        answers = Counter(a.status for c in self.calls for a in c.attempts)
        return f"{len(self.calls)} requests; answers {dict(answers)}"


# ---- measuring and reading back ----


@dataclass
class Row:
    drill: str
    without_service_s: float
    sent: int
    accepted: int
    stored: int
    events: int
    notifications: int
    duplicate_pushes: int
    note: str = ""


def without_service(load: Load, since: float) -> tuple[float, dict[str, float]]:
    """The longest stretch after `since` with no 2xx answer at all (from the last 2xx before it), and per kind of
    request."""

    def longest(kinds: set[str]) -> float:
        answers = sorted(a.at for c in load.calls if c.kind in kinds for a in c.attempts if a.ok)
        before = [at for at in answers if at < since][-1:]
        after = [at for at in answers if at >= since]
        return max((b - a for a, b in itertools.pairwise(before + after)), default=0.0)

    kinds = {c.kind for c in load.calls}
    return longest(kinds), {kind: round(longest({kind}), 1) for kind in sorted(kinds)}


@dataclass
class Stored:
    fixes: Counter[tuple[int, datetime, float, float, str | None]]
    events: dict[int, tuple[int, str, str, bool]]  # id: device, kind, zone, late
    notifications: dict[int, list[tuple[int, str | None]]]  # event id: [(notification id, fcm delivery status)]
    unprocessed_outbox: int
    pushes: Counter[str]  # notification id: copies the FCM stand-in received
    first_push_at: dict[str, float]


def load_stored(cluster: Cluster, scene: Scene) -> Stored:
    devices = [p.device_id for p in (*scene.walkers, *scene.checkers)]
    with psycopg.connect(cluster.dsn, connect_timeout=10) as conn:
        fixes: Counter[tuple[int, datetime, float, float, str | None]] = Counter(
            tuple(row)
            for row in conn.execute(
                "SELECT device_id, device_ts, lon, lat, batch_id FROM fixes WHERE device_id = ANY(%s)", (devices,)
            )
        )
        events = {
            row[0]: (row[1], row[2], row[3], row[4])
            for row in conn.execute(
                "SELECT id, device_id, kind, zone, late FROM events WHERE device_id = ANY(%s)", (devices,)
            )
        }
        notifications: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
        for notification, event, status in conn.execute(
            "SELECT n.id, n.event_id, d.status FROM notifications n"
            " LEFT JOIN deliveries d ON d.notification_id = n.id AND d.channel = 'fcm'"
            " WHERE n.device_id = ANY(%s)",
            (devices,),
        ):
            notifications[event].append((notification, status))
        row = conn.execute(
            "SELECT count(*) FROM outbox o JOIN events e ON e.id = o.event_id"
            " WHERE e.device_id = ANY(%s) AND o.processed_at IS NULL",
            (devices,),
        ).fetchone()
    tokens = {p.token for p in (*scene.walkers, *scene.checkers)}
    pushes = [m for m in cluster.pushes() if m["token"] in tokens]
    first: dict[str, float] = {}
    for message in sorted(pushes, key=lambda m: float(m["received_at"])):
        first.setdefault(message["data"]["notification_id"], float(message["received_at"]))
    copies = Counter(m["data"]["notification_id"] for m in pushes)
    return Stored(fixes, events, notifications, int(row[0]) if row else -1, copies, first)


def building_enters(stored: Stored, after_event: int = 0) -> list[int]:
    return sorted(
        event
        for event, (_, kind, zone, late) in stored.events.items()
        if event > after_event and kind == "enter" and zone == "building" and not late
    )


def settle(cluster: Cluster, scene: Scene) -> Stored:
    """What is stored and pushed once the outbox is empty and every enter's push arrived (or SETTLE_S passed)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            stored = load_stored(cluster, scene)
        except psycopg.OperationalError:
            stored = None
        if stored is not None:
            enters = building_enters(stored)
            sent = sum(1 for e in enters for _, status in stored.notifications.get(e, []) if status == "sent")
            pushed = sum(1 for e in enters for n, _ in stored.notifications.get(e, []) if stored.pushes[str(n)])
            if stored.unprocessed_outbox == 0 and sent >= len(enters) and pushed >= len(enters):
                break
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    time.sleep(1.0)  # a push sent twice would arrive by now
    return load_stored(cluster, scene)


def check_answers(load: Load) -> list[str]:
    """Every answer a 2xx, a 503 with Retry-After or none at all (a 404 to a retried check-out whose first attempt
    did check out is the client's own doing)."""
    problems = []
    for call in load.calls:
        for n, attempt in enumerate(call.attempts):
            if attempt.ok or attempt.status is None:
                continue
            if attempt.status == 503 and attempt.retry_after:
                continue
            if attempt.status == 404 and call.kind == "checkout" and n > 0:
                continue
            problems.append(
                f"device {call.phone.device_id} {call.kind}: answered {attempt.status}"
                f" (Retry-After {attempt.retry_after}) {str(attempt.answer)[:160]}"
            )
    return problems


def check_fixes(loads: list[Load], stored: Stored) -> tuple[list[str], int]:
    """Every acknowledged fix stored (a batch exactly once), nothing half-stored; and how many were stored."""
    problems, found = [], 0
    for load in loads:
        for call in load.calls:
            if call.kind in ("checkin", "checkout"):
                if call.acknowledged:
                    event = next(a.answer for a in call.attempts if a.ok)
                    if stored.events.get(event["id"], (None,))[0] != call.phone.device_id:
                        problems.append(f"{call.kind} {event} acknowledged but not stored")
                continue
            counts = [stored.fixes[(call.phone.device_id, *key)] for key in call.fix_keys()]
            found += sum(1 for count in counts if count)
            what = f"device {call.phone.device_id} {call.batch_id or 'fix'} ({len(counts)} fixes)"
            tries = len(call.attempts)
            once = counts == [1] * len(counts) if call.kind == "batch" else 1 <= counts[0] <= tries
            if call.acknowledged and not once:
                problems.append(f"{what} acknowledged but stored {counts} times: {story(call)}")
            elif not call.acknowledged and (set(counts) not in ({0}, {1}) or max(counts) > tries):
                problems.append(f"{what} never acknowledged but stored {counts} times: {story(call)}")
    return problems, found


def check_pushes(stored: Stored, scene: Scene, after_event: int, repeat_ok: Callable[[float], bool]) -> list[str]:
    """Each building enter: one notification, sent, its push received once (twice where `repeat_ok` says the
    first copy's time allows it); no notification of anything else; the outbox empty."""
    problems = []
    if stored.unprocessed_outbox:
        problems.append(f"{stored.unprocessed_outbox} outbox rows never processed")
    enters = set(building_enters(stored, after_event))
    for event in sorted(enters):
        rows = stored.notifications.get(event, [])
        if len(rows) != 1:
            problems.append(f"building enter {event}: {len(rows)} notifications, want 1: {rows}")
            continue
        notification, status = rows[0]
        copies = stored.pushes[str(notification)]
        if status != "sent":
            problems.append(f"building enter {event}: notification {notification} {status}, want sent")
        if copies != 1 and not (copies == 2 and repeat_ok(stored.first_push_at[str(notification)])):
            problems.append(f"building enter {event}: FCM received notification {notification} {copies} times")
    if others := sorted(e for e in stored.notifications if e > after_event and e not in enters):
        problems.append(f"notifications of events that are not building enters: {others[:10]}")
    return problems


def story(call: Call) -> str:
    return "; ".join(f"{a.status or a.error[:60]} {str(a.answer)[:60]}" for a in call.attempts)


def max_event_id(cluster: Cluster) -> int:
    with psycopg.connect(cluster.dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    return int(row[0]) if row else 0


# ---- fixtures ----


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    var_dir = Path(tempfile.mkdtemp(prefix="placecast-drills-"))
    var_dir.chmod(0o755)  # the postgres system user reaches its nodes' folders
    running = Cluster(var_dir, free_block())
    try:
        running.up()
        yield running
    finally:
        running.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def table(request: pytest.FixtureRequest) -> Iterator[list[Row]]:
    rows: list[Row] = []
    yield rows
    if rows:
        text = render(rows)
        request.config.stash[DRILL_TABLE] = text
        out = ROOT / "var" / "cluster-drills.txt"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n")


def render(rows: list[Row]) -> str:
    head = ("drill", "s without service", "fixes sent", "accepted", "stored", "events", "notifications", "dup pushes")
    body = [
        (
            r.drill,
            f"{r.without_service_s:.1f}",
            str(r.sent),
            str(r.accepted),
            str(r.stored),
            str(r.events),
            str(r.notifications),
            str(r.duplicate_pushes),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    lines = [
        "  ".join([line[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True))])
        for line in (head, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{r.drill}: {r.note}" for r in rows if r.note]
    return "\n".join(lines)


@pytest.fixture(scope="module")
async def scene(cluster: Cluster) -> Scene:
    """An organisation of its own (a week's late-fix limit: the phones' clocks run days behind, as in the e2e
    tests), the building with content that pushes on entering, and PHONES phones enrolled with consent."""
    slug = "drills"
    cluster.cli("create-org", "Drills", slug)
    admin = {"X-API-Key": cluster.cli("create-api-key", slug, "--role", "owner")}
    enrolment = {"X-Enrolment-Key": cluster.cli("create-api-key", slug, "--purpose", "enrolment")}
    cluster.cli("org-settings", "--org", slug, "--late-fix-after-s", str(7 * 86400))
    clock = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    async with httpx.AsyncClient(base_url=cluster.api, timeout=30) as http:
        place = await http.post(
            "/admin/v1/places",
            json={"name": "Oodi", "kind": "library", "fences": [{"geometry": BLOCK}]},
            headers=admin,
        )
        assert place.status_code == 201, place.text
        content = await http.post(
            "/admin/v1/content",
            headers=admin,
            json={
                "place_id": place.json()["id"],
                "title": "Welcome",
                "body": "Drills",
                "trigger": "enter",
                "cooldown_s": 0,
            },
        )
        assert content.status_code == 201, content.text
        lanes = asyncio.Semaphore(LANES)

        async def enrol(n: int) -> Phone:
            token = f"drill-{n}"
            body = {"platform": "android", "fcm_token": token, "consents": {"offers": True}}
            async with lanes:
                answer = await http.post("/v1/devices", json=body, headers=enrolment)
            assert answer.status_code == 201, answer.text
            found = answer.json()
            return Phone(found["device_id"], token, {"Authorization": f"Bearer {found['credential']}"}, clock)

        phones = await asyncio.gather(*(enrol(n) for n in range(PHONES)))
    return Scene(phones[CHECKERS:], phones[:CHECKERS], place.json()["id"], content.json()["id"])


@dataclass
class History:
    """What every drill sent, and when a push may have been repeated (for the read-back after the restart)."""

    loads: list[Load] = field(default_factory=list)
    repeat_windows: list[tuple[float, float]] = field(default_factory=list)  # wall clock

    def repeat_ok(self, first_received_at: float) -> bool:
        return any(start <= first_received_at <= end for start, end in self.repeat_windows)


@pytest.fixture(scope="module")
def history() -> History:
    return History()


@dataclass
class Outcome:
    row: Row
    problems: list[str]
    load: Load
    without_service: dict[str, float]


@dataclass
class Stage:
    """What every drill works on: the cluster, its phones, what earlier drills sent, the table."""

    cluster: Cluster
    scene: Scene
    history: History
    table: list[Row]


@pytest.fixture(scope="module")
def stage(cluster: Cluster, scene: Scene, history: History, table: list[Row]) -> Stage:
    return Stage(cluster, scene, history, table)


async def drill(
    name: str,
    stage: Stage,
    kill: Callable[[Cluster], str],
    restore: Callable[[Cluster], str],
    *,
    repeats: Callable[[float, float], tuple[float, float] | None] = lambda killed, back: None,
) -> Outcome:
    """Load, steady acknowledgements, `kill`, service back, more load, settle, read back, `restore`.
    `repeats(killed, back)` is the wall-clock window in which a push first received may arrive twice."""
    cluster, scene, history, table = stage.cluster, stage.scene, stage.history, stage.table
    wait_for("a healthy topology", lambda: cluster.pg_healthy() and cluster.redis_healthy(), 120)
    since_event = await asyncio.to_thread(max_event_id, cluster)
    load = Load(cluster.api, scene, name.split()[0] + "-" + os.urandom(3).hex())
    driving = asyncio.create_task(load.run())
    try:
        await load.until_acknowledged(STEADY, since=time.monotonic(), timeout_s=60)
        killed, killed_wall = time.monotonic(), time.time()
        note = await asyncio.to_thread(kill, cluster)
        await until_recovered(load, killed)
        back_wall = time.time()
        await asyncio.sleep(AFTER_S)
    finally:
        load.stop()
        await driving
    history.loads.append(load)
    if (window := repeats(killed_wall, back_wall)) is not None:
        history.repeat_windows.append(window)
    try:
        stored = await asyncio.to_thread(settle, cluster, scene)
        problems = check_answers(load)
        fix_problems, found = check_fixes([load], stored)
        problems += fix_problems
        problems += check_pushes(stored, scene, since_event, history.repeat_ok)
    finally:
        note += "; " + await asyncio.to_thread(restore, cluster)
    gap, per_kind = without_service(load, killed)
    if dump := os.environ.get("PLACECAST_DRILL_DUMP"):  # every attempt, seconds from the kill, for a post-mortem
        await asyncio.to_thread(write_dump, Path(dump), name, load, killed)
    new_events = [e for e in stored.events if e > since_event]
    notifications = [n for e in new_events for n, _ in stored.notifications.get(e, [])]
    fixes = [c for c in load.calls if c.kind in ("fix", "batch")]
    row = Row(
        name,
        gap,
        sum(len(c.fixes) for c in fixes),
        sum(len(c.fixes) for c in fixes if c.acknowledged),
        found,
        len(new_events),
        len(notifications),
        sum(max(stored.pushes[str(n)] - 1, 0) for n in notifications),
        f"{note}; building enters {len(building_enters(stored, since_event))};"
        f" longest without a 2xx per request kind {per_kind}; {load.summary()}",
    )
    table.append(row)
    print(f"\n{render([row])}")
    return Outcome(row, problems, load, per_kind)


def write_dump(path: Path, name: str, load: Load, killed: float) -> None:
    with path.open("a") as out:
        for call in load.calls:
            for a in call.attempts:
                took = f"{a.started - killed:.2f}..{a.at - killed:.2f}"
                said = f"{str(a.answer)[:100]}{a.error[:100]}"
                out.write(f"{name[:1]} {call.kind} {took} {a.status} {a.retry_after} {said}\n")


async def until_recovered(load: Load, killed: float, quiet_s: float = 3.0, timeout_s: float = 120.0) -> None:
    """BACK acknowledgements after the kill, the last of them at least `quiet_s` after the last failure (and
    after the kill): the switch is over."""
    deadline = time.monotonic() + timeout_s
    while True:
        failures = [a.at for c in load.calls for a in c.attempts if not a.ok and a.at >= killed]
        last = max(failures, default=killed)
        if load.acknowledged_since(last) >= BACK and time.monotonic() - last >= quiet_s:
            return
        assert time.monotonic() < deadline, f"service not back within {timeout_s:.0f} s: {load.summary()}"
        await asyncio.sleep(0.2)


def report(outcome: Outcome, target_s: float | None = None) -> None:
    if target_s is not None:
        met = "met" if outcome.row.without_service_s <= target_s else "MISSED"
        outcome.row.note = f"target ≤ {target_s:.0f} s without service {met}; " + outcome.row.note
    assert not outcome.problems, f"{len(outcome.problems)} problems:\n" + "\n".join(outcome.problems[:25])


# ---- the drills ----


def kill_pg_leader(cluster: Cluster) -> str:
    """The leader's machine gone: its Patroni, its postmaster and every backend, SIGKILL."""
    leader = cluster.pg_leader()
    postmaster = int((Path(leader["data_dir"]) / "postmaster.pid").read_text().split()[0])
    backends = children(postmaster)
    kill(leader["patroni_pid"])
    kill(postmaster)
    for pid in backends:
        kill(pid)
    return f"killed leader {leader['name']}"


def restore_pg(cluster: Cluster) -> str:
    took = cluster.up()
    waited = wait_for("the old leader back as a replica", cluster.pg_healthy, 180)
    roles = {m["Member"]: m["Role"] for m in cluster.patroni_members()}
    return f"restarted in {took:.0f} s, healthy {waited:.0f} s later: {roles}"


async def test_postgresql_leader_killed(stage: Stage) -> None:
    outcome = await drill(
        "1 PostgreSQL leader killed",
        stage,
        kill_pg_leader,
        restore_pg,
        # A push FCM accepted while the database went away may have lost its answer: sent again after the lease.
        repeats=lambda killed, back: (killed - 2, back),
    )
    report(outcome, target_s=15)
    assert outcome.row.duplicate_pushes <= 2 * FCM_IN_FLIGHT


def kill_redis_master(cluster: Cluster) -> str:
    port = cluster.redis_master_port()
    node = next(node for node in cluster.topology["redis"] if node["port"] == port)
    kill(node["pid"])
    return f"killed Redis master {node['name']}"


def restore_redis(cluster: Cluster) -> str:
    took = cluster.up()
    waited = wait_for("the old master back as a replica", cluster.redis_healthy, 120)
    master = cluster.redis_master_port()
    name = next(node["name"] for node in cluster.topology["redis"] if node["port"] == master)
    return f"restarted in {took:.0f} s, replicating {waited:.0f} s later; master now {name}"


async def test_redis_master_killed(stage: Stage) -> None:
    outcome = await drill("2 Redis master killed", stage, kill_redis_master, restore_redis)
    report(outcome, target_s=10)


def kill_process(cluster: Cluster, group: str) -> str:
    node = cluster.topology[group][0]
    kill(node["pid"])
    return f"killed {node['name']} (pid {node['pid']})"


def restore_service(cluster: Cluster) -> str:
    return f"started again in {cluster.up():.0f} s"


async def test_api_process_killed(stage: Stage) -> None:
    outcome = await drill("3 API process killed", stage, partial(kill_process, group="api"), restore_service)
    # Invisible to a client that retries once: every request acknowledged by its first or second attempt.
    retried = [c for c in outcome.load.calls if not any(a.ok for a in c.attempts[:2])]
    outcome.row.note = f"{len(retried)} requests not acknowledged by a second attempt; " + outcome.row.note
    report(outcome)
    assert not retried, [story(c) for c in retried[:10]]


def kill_worker_mid_batch(cluster: Cluster) -> str:
    """Worker 1, SIGKILL, while pushes reach the FCM stand-in (the record grew in the last half second)."""
    record = cluster.root / "fake_fcm" / "messages.jsonl"
    deadline = time.monotonic() + 30
    size = record.stat().st_size
    while time.monotonic() < deadline:
        time.sleep(0.5)
        grown, size = record.stat().st_size > size, record.stat().st_size
        if grown:
            break
    return kill_process(cluster, "workers") + " while pushes were on their way"


async def test_worker_killed_mid_batch(stage: Stage) -> None:
    outcome = await drill(
        "4 worker killed mid-batch",
        stage,
        kill_worker_mid_batch,
        restore_service,
        # The pushes on the dead worker's wire: FCM may have them; sent again after the lease (README).
        repeats=lambda killed, back: (killed - 2, killed + 1),
    )
    report(outcome)
    assert outcome.row.duplicate_pushes <= FCM_IN_FLIGHT


async def test_everything_restarted(stage: Stage) -> None:
    """Stopped (`infra/cluster.sh stop`: the service first, the workers finishing their pushes) and started
    again under load; then everything acknowledged in every drill is read back, and every push of every drill."""
    cluster, scene, history = stage.cluster, stage.scene, stage.history

    def restart(cluster: Cluster) -> str:
        stopped = cluster.stop()
        return f"stopped in {stopped:.0f} s, started in {cluster.up():.0f} s"

    outcome = await drill("5 everything restarted", stage, restart, lambda _: "nothing to restore")
    stored = await asyncio.to_thread(settle, cluster, scene)
    fix_problems, _ = check_fixes(history.loads, stored)
    everything = fix_problems + check_pushes(stored, scene, 0, history.repeat_ok)
    enters = building_enters(stored)
    outcome.row.note += (
        f"; over all drills: {sum(len(c.fixes) for ld in history.loads for c in ld.calls if c.acknowledged)}"
        f" fixes acknowledged, {len(enters)} building enters, {sum(stored.pushes.values())} pushes received,"
        f" outbox {stored.unprocessed_outbox} waiting"
    )
    report(outcome)
    assert not everything, f"{len(everything)} problems over all drills:\n" + "\n".join(everything[:25])

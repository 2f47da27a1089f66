"""Fault tests that read back: phones posting fixes through an outage, the ledger of what each request was
told, and the read-back that holds the service to every answer it gave.

A 2xx from `/v1/fixes` or `/v1/fixes/batch` means stored (ARCHITECTURE.md, "The flow of one fix", step 5). A
request that never got a 2xx stored all of its fixes or none (one transaction): a client cannot know which, so
both are allowed, a part never. `read_back` checks both against PostgreSQL, replays the stored fixes through
the pure engine (the events stored must be exactly the ones those fixes make), and follows every building enter
to one notification whose push the FCM stand-in received once.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from infra.stack import PgCluster, RedisServer
from services.tracking import ZONES, FixRecord

OUTSIDE = (24.9300, 60.1700)  # ~650 m from the Oodi block of tests/world.py
INSIDE = (24.9388, 60.1740)  # the block's middle, 50 m from its nearest wall
STEP_S = 20  # device seconds between fixes: walking in or out is then 33 m/s, under the engine's jump limit
LEG = 4  # fixes outside, then fixes inside: an enter on arrival, an exit after 30 s outside
PACE_S = 0.12  # between one phone's requests: ~8 a second, under the 600-a-minute limit per device
RETRY_S = 0.25

EventKey = tuple[str, str, int | None, datetime, bool]  # kind, zone, fence id, occurred at, late
FixKey = tuple[datetime, float, float, str | None]  # device time, lon, lat, batch id


@dataclass
class Phone:
    device_id: int
    token: str
    auth: dict[str, str]
    clock: datetime  # its first fix's device time
    made: int = 0

    def next_fixes(self, count: int) -> list[dict[str, Any]]:
        """The walk: LEG fixes far outside, LEG deep inside, over and over; each fix at its own point."""
        fixes = []
        for k in range(self.made, self.made + count):
            lon, lat = OUTSIDE if (k // LEG) % 2 == 0 else INSIDE
            jitter = (k * 7919 % 13) * 1e-6
            ts = self.clock + timedelta(seconds=k * STEP_S)
            fixes.append({"lon": lon + jitter, "lat": lat - jitter, "accuracy_m": 5.0, "ts": ts.isoformat()})
        self.made += count
        return fixes


@dataclass
class Attempt:
    at: float  # monotonic, when it was answered
    status: int | None  # None: no answer at all (refused connection, timeout)
    answer: Any = None
    retry_after: str | None = None
    error: str = ""
    started: float = 0.0  # monotonic, when it was sent (the cluster drills measure from it)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Sent:
    """One request of a phone and every attempt at it (a batch is retried with its batch id, as an app would)."""

    phone: Phone
    fixes: list[dict[str, Any]]
    batch_id: str | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return any(a.ok for a in self.attempts)

    def fix_keys(self) -> list[FixKey]:
        return [(datetime.fromisoformat(f["ts"]), f["lon"], f["lat"], self.batch_id) for f in self.fixes]


class Fleet:
    """Phones posting fixes (single and batches) to the API replicas in turn, recording every answer."""

    def __init__(self, replicas: Sequence[str], phones: Sequence[Phone], tag: str) -> None:
        self.replicas = list(replicas)
        self.phones = list(phones)
        self.tag = tag
        self.ledger: list[Sent] = []
        self._stop = asyncio.Event()
        self._give_up_at = float("inf")

    async def drive(self) -> None:
        async with httpx.AsyncClient(timeout=15) as http:
            await asyncio.gather(*(self._phone(http, n) for n in range(len(self.phones))))

    def stop(self, drain_s: float) -> None:
        """No new requests; a batch still refused is retried for `drain_s` more."""
        self._give_up_at = time.monotonic() + drain_s
        self._stop.set()

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for s in self.ledger for a in s.attempts if a.ok and a.at >= moment)

    async def until_acknowledged(self, count: int, since: float, timeout_s: float) -> float:
        """Seconds from `since` until `count` requests answered after it were acknowledged."""
        deadline = time.monotonic() + timeout_s
        while self.acknowledged_since(since) < count:
            assert time.monotonic() < deadline, f"fewer than {count} fixes accepted in {timeout_s} s:\n{self.summary()}"
            await asyncio.sleep(0.05)
        return time.monotonic() - since

    async def _phone(self, http: httpx.AsyncClient, number: int) -> None:
        phone, rng = self.phones[number], random.Random(number)
        while not self._stop.is_set():
            size = 1 if rng.random() < 0.5 else rng.randint(2, 12)
            batch_id = f"{self.tag}-{number}-{len(self.ledger)}" if size > 1 else None
            sent = Sent(phone, phone.next_fixes(size), batch_id)
            self.ledger.append(sent)
            while True:
                replica = self.replicas[(len(self.ledger) + len(sent.attempts)) % len(self.replicas)]
                sent.attempts.append(await _post(http, replica, phone, sent))
                if sent.attempts[-1].ok or batch_id is None or time.monotonic() > self._give_up_at:
                    break  # a single fix has no idempotency key: an app would not resend it blindly
                await asyncio.sleep(RETRY_S)
            await asyncio.sleep(PACE_S)

    def summary(self) -> str:
        answers = Counter(a.status for s in self.ledger for a in s.attempts)
        acknowledged = sum(len(s.fixes) for s in self.ledger if s.acknowledged)
        refused = [s for s in self.ledger if not s.acknowledged]
        return (
            f"{len(self.ledger)} requests, {acknowledged} fixes acknowledged, {len(refused)} requests never"
            f" acknowledged ({sum(len(s.fixes) for s in refused)} fixes); answers {dict(answers)}"
        )


async def _post(http: httpx.AsyncClient, replica: str, phone: Phone, sent: Sent) -> Attempt:
    if sent.batch_id is None:
        path, body = "/v1/fixes", sent.fixes[0]
    else:
        path, body = "/v1/fixes/batch", {"batch_id": sent.batch_id, "fixes": sent.fixes}
    try:
        answer = await http.post(replica + path, json=body, headers=phone.auth)
    except httpx.HTTPError as error:
        return Attempt(time.monotonic(), None, error=repr(error))
    try:
        parsed = answer.json()
    except ValueError:
        parsed = answer.text[:200]
    return Attempt(time.monotonic(), answer.status_code, parsed, answer.headers.get("Retry-After"))


class Dependencies:
    """The session's PostgreSQL and Redis (tests/conftest.py), stopped cleanly or killed, and started again."""

    def __init__(self, test_env: dict[str, str]) -> None:
        root = Path(test_env["PLACECAST_VAR_DIR"]).parent
        self.redis = RedisServer(root / "redis", int(test_env["PLACECAST_REDIS_PORT"]))
        self.pg = PgCluster(
            root / "pg",
            int(test_env["PLACECAST_PG_PORT"]),
            "placecast",
            test_env["PLACECAST_PG_PASSWORD"],
            test_env["PLACECAST_PG_DATABASE"],
            fast_unsafe=True,
        )

    def down(self, service: str, how: str) -> None:
        if (service, how) == ("postgres", "stop"):
            self.pg.stop()  # fast shutdown: sessions ended, open transactions rolled back, a checkpoint
        elif (service, how) == ("postgres", "kill"):
            # Immediate shutdown: every process quits at once, no checkpoint; the restart replays the WAL.
            _kill(int((self.pg.data_dir / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)
        elif (service, how) == ("redis", "stop"):
            self.redis.stop()  # SIGTERM: Redis writes its append-only file and exits
        elif service == "redis" and how in ("kill", "wipe"):
            _kill(int(self.redis.pidfile.read_text()), signal.SIGKILL)  # what it wrote to its file survives
            self.redis.pidfile.unlink(missing_ok=True)
            if how == "wipe":  # it comes back empty, as after a failover to a replica that was behind
                shutil.rmtree(self.redis.data_dir / "appendonlydir", ignore_errors=True)
                for saved in [*self.redis.data_dir.glob("*.aof"), *self.redis.data_dir.glob("*.rdb")]:
                    saved.unlink()
        else:
            raise ValueError(f"unknown outage {service} {how}")

    def up(self, service: str) -> None:
        (self.pg if service == "postgres" else self.redis).start()


def _kill(pid: int, how: signal.Signals) -> None:
    os.kill(pid, how)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} outlived {how.name}")


# ---- the read-back ----


@dataclass
class Stored:
    fixes: dict[int, Counter[FixKey]]  # per device
    events: dict[int, list[tuple[int, EventKey]]]  # per device, in id order
    notifications: list[tuple[int, int, int, int | None, str | None]]  # id, event id, device, content, fcm status
    unprocessed_outbox: int
    pushes: list[dict[str, Any]]  # what the FCM stand-in received for these phones


def load(dsn: str, fake_http: httpx.Client, phones: Sequence[Phone]) -> Stored:
    devices = [p.device_id for p in phones]
    with psycopg.connect(dsn) as conn:
        fixes: dict[int, Counter[FixKey]] = defaultdict(Counter)
        for device, ts, lon, lat, batch in conn.execute(
            "SELECT device_id, device_ts, lon, lat, batch_id FROM fixes WHERE device_id = ANY(%s)", (devices,)
        ):
            fixes[device][(ts, lon, lat, batch)] += 1
        events: dict[int, list[tuple[int, EventKey]]] = defaultdict(list)
        for event, device, kind, zone, fence, at, late in conn.execute(
            "SELECT id, device_id, kind, zone, fence_id, occurred_at, late FROM events"
            " WHERE device_id = ANY(%s) ORDER BY id",
            (devices,),
        ):
            events[device].append((event, (kind, zone, fence, at, late)))
        notifications = conn.execute(
            "SELECT n.id, n.event_id, n.device_id, n.content_id, d.status FROM notifications n"
            " LEFT JOIN deliveries d ON d.notification_id = n.id AND d.channel = 'fcm'"
            " WHERE n.device_id = ANY(%s) ORDER BY n.id",
            (devices,),
        ).fetchall()
        row = conn.execute(
            "SELECT count(*) FROM outbox o JOIN events e ON e.id = o.event_id"
            " WHERE e.device_id = ANY(%s) AND o.processed_at IS NULL",
            (devices,),
        ).fetchone()
    tokens = {p.token for p in phones}
    pushes = [m for m in fake_http.get("/_fake/messages").json() if m["token"] in tokens]
    return Stored(fixes, events, [tuple(n) for n in notifications], int(row[0]) if row else -1, pushes)


def building_enters(stored: Stored) -> list[int]:
    return [
        event
        for rows in stored.events.values()
        for event, (kind, zone, _, _, late) in rows
        if kind == "enter" and zone == "building" and not late
    ]


def settled(stored: Stored) -> bool:
    """Every building enter has its push sent and received, and no outbox row waits."""
    enters = len(building_enters(stored))
    sent = sum(1 for n in stored.notifications if n[4] == "sent")
    return stored.unprocessed_outbox == 0 and sent >= enters and len(stored.pushes) >= enters


Replay = Callable[[list[FixRecord]], list[EventKey]]


def replay_with(index: Any, config: Any) -> Replay:
    """The events the pure engine makes of a device's fixes, from a fresh state, as the API runs it."""
    from services.tracking import load_state, run_transitions

    def replay(fixes: list[FixRecord]) -> list[EventKey]:
        _, events = run_transitions(index, load_state({}), fixes, config)
        return [(e.kind, ZONES[e.key[1]], e.key[0], datetime.fromtimestamp(e.ts, UTC), e.late) for e in events]

    return replay


def read_back(fleet: Fleet, stored: Stored, replay: Replay, content_id: int, outage: tuple[float, float]) -> list[str]:
    """Every way the stored data breaks what the clients were told; empty when nothing was lost. `outage` is when
    the dependency was down (wall clock), with a second before it: see `_pushes`."""
    problems: list[str] = []
    by_device = {p.device_id: p for p in fleet.phones}
    stored_events = {device: {(i, key[:4]) for i, key in rows} for device, rows in stored.events.items()}
    sent_keys: dict[int, set[FixKey]] = defaultdict(set)
    for sent in fleet.ledger:
        device = sent.phone.device_id
        counts = [stored.fixes[device][key] for key in sent.fix_keys()]
        sent_keys[device].update(sent.fix_keys())
        what = f"device {device} {'batch ' + sent.batch_id if sent.batch_id else 'fix'} ({len(sent.fixes)} fixes)"
        if sent.acknowledged and counts != [1] * len(counts):
            problems.append(f"{what} was acknowledged but stored {counts} times: {_story(sent)}")
        elif not sent.acknowledged and set(counts) not in ({0}, {1}):
            problems.append(f"{what} was refused but half-stored ({counts}): {_story(sent)}")
        for attempt in sent.attempts:
            if attempt.ok:
                for event in attempt.answer.get("events", []):
                    at = datetime.fromisoformat(event["occurred_at"])
                    key = (event["id"], (event["kind"], event["zone"], event["fence_id"], at))
                    if key not in stored_events.get(device, set()):
                        problems.append(f"{what}: event {event} was acknowledged but is not stored as such")
            elif attempt.status is not None and attempt.status < 500:
                # A 4xx tells the app its fixes are wrong: it drops them. An outage must answer "retry" (5xx).
                problems.append(f"{what}: answered {attempt.status} {attempt.answer} during an outage")
    for device in by_device:
        stored_fixes = stored.fixes[device]
        if strays := set(stored_fixes) - sent_keys[device]:
            problems.append(f"device {device}: {len(strays)} stored fixes were never sent, e.g. {min(strays)}")
        records = [FixRecord(ts, lon, lat, 5.0) for ts, lon, lat, _ in sorted(stored_fixes.elements())]
        expected, events = replay(records), [key for _, key in stored.events[device]]
        if events != expected:
            problems.append(
                f"device {device}: stored events differ from the engine's on its stored fixes:"
                f" {_diff(events, expected)}"
            )
    problems += _pushes(stored, by_device, content_id, outage)
    return problems


def _pushes(stored: Stored, phones: dict[int, Phone], content_id: int, outage: tuple[float, float]) -> list[str]:
    """Each building enter: one notification, its push sent and received once. A push FCM accepted while
    PostgreSQL went down may have had its answer lost: it is sent again when its lease ends, and FCM (no
    idempotency key) receives it twice; the phone shows it once (same collapse key, tests/e2e/test_worker_crash.py).
    Only those may repeat: first received within the outage (or the second before it), twice at most."""
    problems: list[str] = []
    if stored.unprocessed_outbox:
        problems.append(f"{stored.unprocessed_outbox} outbox rows never processed")
    enters = set(building_enters(stored))
    per_event: dict[int, list[tuple[int, int, int, int | None, str | None]]] = defaultdict(list)
    for row in stored.notifications:
        per_event[row[1]].append(row)
    received = Counter(m["data"]["notification_id"] for m in stored.pushes)
    token_of = {m["data"]["notification_id"]: m["token"] for m in stored.pushes}
    first_seen: dict[str, float] = {}
    for message in sorted(stored.pushes, key=lambda m: float(m["received_at"])):
        first_seen.setdefault(message["data"]["notification_id"], float(message["received_at"]))
    for event in enters:
        rows = per_event.get(event, [])
        if len(rows) != 1:
            problems.append(f"building enter {event}: {len(rows)} notifications, want 1: {rows}")
            continue
        notification, _, device, content, status = rows[0]
        if content != content_id or status != "sent":
            problems.append(f"building enter {event}: notification {rows[0]}, want content {content_id} sent")
        copies, key = received[str(notification)], str(notification)
        if copies != 1 and not (copies == 2 and outage[0] - 1 <= first_seen[key] <= outage[1]):
            problems.append(f"building enter {event}: FCM received its push {copies} times")
        elif token_of[key] != phones[device].token:
            problems.append(f"building enter {event}: pushed to {token_of[key]}")
    if others := {e for e in per_event if e not in enters}:
        problems.append(f"notifications for events that are not building enters: {sorted(others)}")
    known = {str(n[0]) for n in stored.notifications}
    if unknown := set(received) - known:
        problems.append(f"FCM received pushes of no stored notification: {sorted(unknown)}")
    return problems


def _story(sent: Sent) -> str:
    return "; ".join(f"{a.status or a.error} {str(a.answer)[:80]}" for a in sent.attempts)


def _diff(got: list[EventKey], want: list[EventKey]) -> str:
    first = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), min(len(got), len(want)))
    return (
        f"{len(got)} stored, {len(want)} replayed; first difference at #{first}:"
        f" stored {got[first : first + 2]}, replayed {want[first : first + 2]}"
    )

"""A worker stopped in the middle of a batch of pushes, then restarted.

Guarantees under test, with FCM's local stand-in answering in 200 ms so the stop lands mid-batch (it records
a push on arrival, as FCM accepts it, before it answers):
- SIGTERM (a deploy, Ctrl-C, `placecast stop`): the worker finishes the pushes it started, then exits;
  after the restart every push has reached FCM exactly once.
- SIGKILL: every event still yields exactly one notification and one *sent* delivery, and FCM receives
  every push. A push can be repeated only if it was on the wire at the kill: FCM v1 has no idempotency key,
  so nobody can know whether those arrived. They are at most the in-flight bound, and carry the same
  collapse key, APNs collapse id and Android tag, so the phone shows each once.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from infra.fake_fcm import local_fcm
from tests.e2e.ui_helpers import start_worker

EVENTS = 400
CHUNK = 50
IN_FLIGHT = 100
LATENCY_S = 0.2


def seed(dsn: str) -> list[int]:
    """An organisation, a place with content, EVENTS devices each with one enter event in the outbox."""
    tag = secrets.token_hex(3)
    with psycopg.connect(dsn) as conn:
        org = conn.execute(
            "INSERT INTO organisations (name, slug) VALUES (%s, %s) RETURNING id", (tag, "crash-" + tag)
        ).fetchone()[0]  # type: ignore[index]
        place = conn.execute(
            "INSERT INTO places (organisation_id, name, kind) VALUES (%s, 'Oodi', 'library') RETURNING id", (org,)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO content_items (organisation_id, place_id, title, body, cooldown_s)"
            " VALUES (%s, %s, %s, 'Welcome', 0)",
            (org, place, "crash-" + tag),
        )
        devices = conn.execute(
            "INSERT INTO devices (organisation_id, platform, role, credential_hash, fcm_token, consents)"
            " SELECT %s, 'android', 'visitor', md5(random()::text) || g, 'crash-' || %s || '-' || g,"
            " '{\"offers\": true}' FROM generate_series(1, %s) g RETURNING id",
            (org, tag, EVENTS),
        ).fetchall()
        events = conn.execute(
            "INSERT INTO events (organisation_id, device_id, place_id, kind, zone, occurred_at)"
            " SELECT %s, d, %s, 'enter', 'building', now() FROM unnest(%s::bigint[]) d RETURNING id",
            (org, place, [d[0] for d in devices]),
        ).fetchall()
        ids = [e[0] for e in events]
        conn.execute("INSERT INTO outbox (event_id) SELECT unnest(%s::bigint[])", (ids,))
    return ids


def delivered(dsn: str, event_ids: list[int]) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT n.id, d.status FROM notifications n JOIN deliveries d ON d.notification_id = n.id"
            " AND d.channel = 'fcm' WHERE n.event_id = ANY(%s)",
            (event_ids,),
        ).fetchall()


def _env(test_env: dict[str, str], fcm_env: dict[str, str]) -> dict[str, str]:
    return {
        **test_env,
        **fcm_env,
        "PLACECAST_FCM_BATCH_SIZE": str(CHUNK),
        "PLACECAST_FCM_IN_FLIGHT": str(IN_FLIGHT),
        "PLACECAST_PUSH_LEASE_S": "3",  # an unsettled push is sent again 3 s after its claim
        "PLACECAST_OUTBOX_SWEEP_AFTER_S": "0",  # the sweeper (run at start-up) picks the seeded outbox up
    }


def _wait_for_pushes(http: Any, count: int) -> None:
    deadline = time.monotonic() + 60
    while http.get("/_fake/stats").json()["stored"] < count:
        assert time.monotonic() < deadline, "no pushes arrived"
        time.sleep(0.02)


def _wait_all_sent(dsn: str, event_ids: list[int]) -> None:
    deadline = time.monotonic() + 90
    while sum(1 for _, s in delivered(dsn, event_ids) if s == "sent") < EVENTS:
        assert time.monotonic() < deadline, f"stuck: {Counter(s for _, s in delivered(dsn, event_ids))}"
        time.sleep(0.5)


@dataclass
class Scenario:
    dsn: str
    env: dict[str, str]
    event_ids: list[int]
    http: Any
    worker: subprocess.Popen[bytes]

    def messages(self) -> list[dict[str, Any]]:
        return [m for m in self.http.get("/_fake/messages").json() if m["token"].startswith("crash-")]


@contextmanager
def scenario(test_env: dict[str, str], settings: Any, tmp_path: Path) -> Iterator[Scenario]:
    """EVENTS events in the outbox, FCM's stand-in answering in LATENCY_S, a worker started on them."""
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    with local_fcm(tmp_path, latency_ms=LATENCY_S * 1000) as (fake, fcm_env), fake.client() as http:
        env = _env(test_env, fcm_env)
        run = Scenario(dsn, env, seed(dsn), http, start_worker(env))
        try:
            yield run
        finally:
            run.worker.terminate()
            run.worker.wait(timeout=60)


def test_sigterm_mid_batch_finishes_what_it_started_and_a_restart_sends_nothing_twice(
    test_env, settings, tmp_path
) -> None:
    with scenario(test_env, settings, tmp_path) as run:
        _wait_for_pushes(run.http, CHUNK)
        at_signal = run.http.get("/_fake/stats").json()["stored"]
        run.worker.terminate()
        assert run.worker.wait(timeout=60) == 0  # it exited by itself, not cancelled by a timeout
        assert at_signal < EVENTS, "the signal came too late to be mid-batch"
        time.sleep(4)  # past the lease: anything left claimed but unsettled would now be sent again
        run.worker = start_worker(run.env)
        _wait_all_sent(run.dsn, run.event_ids)
        time.sleep(1)
        messages = run.messages()
    rows = delivered(run.dsn, run.event_ids)
    assert len(rows) == EVENTS and {s for _, s in rows} == {"sent"}
    per_notification = Counter(m["data"]["notification_id"] for m in messages)
    assert per_notification == Counter({str(n): 1 for n, _ in rows})  # each push exactly once


def test_sigkill_mid_batch_then_restart_sends_every_push(test_env, settings, tmp_path) -> None:
    with scenario(test_env, settings, tmp_path) as run:
        _wait_for_pushes(run.http, 2 * CHUNK)
        os.kill(run.worker.pid, signal.SIGKILL)
        run.worker.wait()
        killed_at = time.time()
        at_kill = run.http.get("/_fake/stats").json()["stored"]
        assert at_kill < EVENTS, "the kill came too late to be mid-batch"
        run.worker = start_worker(run.env)
        _wait_all_sent(run.dsn, run.event_ids)
        messages = run.messages()
    rows = delivered(run.dsn, run.event_ids)
    assert len(rows) == EVENTS and {s for _, s in rows} == {"sent"}  # one notification, one sent push each
    per_notification = Counter(m["data"]["notification_id"] for m in messages)
    assert set(per_notification) == {str(n) for n, _ in rows}  # every push reached FCM
    repeated = {n for n, count in per_notification.items() if count > 1}
    print(f"pushes repeated after the kill: {len(repeated)} of {EVENTS}")
    assert len(repeated) <= IN_FLIGHT  # only pushes on the wire at the kill can repeat…
    first_seen: dict[str, float] = {}
    for message in messages:
        first_seen.setdefault(message["data"]["notification_id"], message["received_at"])
    for n in repeated:  # …sent within one answer's time before it, never one whose answer was settled
        assert killed_at - 1.0 - LATENCY_S <= first_seen[n] <= killed_at
    for message in messages:  # …and a repeat collapses into the first on the phone
        key = f"n{message['data']['notification_id']}"
        assert message["android"]["collapse_key"] == key == message["apns"]["headers"]["apns-collapse-id"]
        assert message["android"]["notification"]["tag"] == key

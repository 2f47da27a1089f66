"""A worker killed with SIGKILL in the middle of a batch of pushes, then restarted.

Guarantee under test: every event yields exactly one notification and exactly one *sent* delivery; FCM
(here its local stand-in, with 200 ms answers so the kill lands mid-batch) receives every push, and a
push can be repeated only if it was in the one chunk in flight at the kill, with the same collapse key so
the phone shows it once.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections import Counter
from typing import Any

import psycopg

from infra.fake_fcm import local_fcm
from tests.e2e.ui_helpers import start_worker

EVENTS = 400
CHUNK = 50


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


def test_sigkill_mid_batch_then_restart_sends_every_push(test_env, settings, tmp_path) -> None:
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    with local_fcm(tmp_path, latency_ms=200) as (fake, fcm_env):
        env = {
            **test_env,
            **fcm_env,
            "PLACECAST_FCM_BATCH_SIZE": str(CHUNK),
            "PLACECAST_PUSH_LEASE_S": "3",
            "PLACECAST_OUTBOX_SWEEP_AFTER_S": "0",
        }
        event_ids = seed(dsn)
        worker = start_worker(env)  # its sweeper (run at start-up) picks the outbox rows up
        try:
            with fake.client() as http:
                deadline = time.monotonic() + 60
                while http.get("/_fake/stats").json()["stored"] < 2 * CHUNK:
                    assert time.monotonic() < deadline, "no pushes arrived"
                    time.sleep(0.02)
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
                at_kill = http.get("/_fake/stats").json()["stored"]
                assert at_kill < EVENTS, "the kill came too late to be mid-batch"
                worker = start_worker(env)
                deadline = time.monotonic() + 90
                while sum(1 for _, s in delivered(dsn, event_ids) if s == "sent") < EVENTS:
                    assert time.monotonic() < deadline, f"stuck: {Counter(s for _, s in delivered(dsn, event_ids))}"
                    time.sleep(0.5)
                messages = [m for m in http.get("/_fake/messages").json() if m["token"].startswith("crash-")]
        finally:
            worker.terminate()
            worker.wait(timeout=15)
    rows = delivered(dsn, event_ids)
    assert len(rows) == EVENTS and {s for _, s in rows} == {"sent"}  # one notification, one sent push each
    per_notification = Counter(m["data"]["notification_id"] for m in messages)
    assert set(per_notification) == {str(n) for n, _ in rows}  # every push reached FCM
    repeated = [n for n, count in per_notification.items() if count > 1]
    print(f"pushes repeated after the kill: {len(repeated)} of {EVENTS}")
    assert len(repeated) <= CHUNK  # only the chunk in flight at the kill can repeat…
    for message in messages:  # …and a repeat collapses into the first on the phone
        assert message["android"]["collapse_key"] == f"n{message['data']['notification_id']}"

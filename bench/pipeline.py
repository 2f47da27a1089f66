"""The whole delivery pipeline against firebase-admin alone, side by side in one run.

(a) ceiling: `FcmSender` (firebase-admin's send path) pushing N messages in chunks, nothing else;
(b) pipeline: N events in the outbox → arq jobs (batches of events) → rules → notifications → firebase-admin;
(c) latency: fixes at ~1,000/s through the HTTP API, half of them entering a fence with content, from the
    moment the API committed the event to the moment the FCM-compatible server received the push.
All against the local FCM-compatible server over TLS + HTTP/2, on a private PostGIS + Redis.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvloop

from bench.push import _trusting
from infra.fake_fcm import RunningFake, local_fcm
from infra.settings import Settings
from infra.stack import free_port, private_stack, start_api
from notifications.push import BoundedSender, FcmSender, PushMessage
from notifications.queue import enqueue_events

WINDOW_S = 0.05  # the pipeline_window_s default
BLOCK = "POLYGON((24.937 60.1735, 24.9406 60.1735, 24.9406 60.1745, 24.937 60.1745, 24.937 60.1735))"


@contextmanager
def _stack() -> Iterator[tuple[dict[str, str], str, RunningFake, Path]]:
    with (
        private_stack("placecast-bench-pipeline-") as (root, stack_env),
        local_fcm(root, latency_ms=25) as (fake, fcm_env),
    ):
        account = Path(fcm_env["PLACECAST_FCM_CREDENTIALS_FILE"])
        env = {
            **stack_env,
            **fcm_env,
            "PLACECAST_LOG_LEVEL": "WARNING",
            "PLACECAST_OUTBOX_SWEEP_AFTER_S": "30",
            # 200 devices enrol from loopback with one key at once: past the enrolment limits.
            "PLACECAST_ENROLMENTS_PER_ADDRESS": "1000000",
            "PLACECAST_ENROLMENTS_PER_KEY": "1000000",
        }
        subprocess.run(
            [sys.executable, "-m", "infra.cli", "migrate"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        dsn = (
            f"postgresql://placecast:{env['PLACECAST_PG_PASSWORD']}@127.0.0.1:{env['PLACECAST_PG_PORT']}"
            f"/{env['PLACECAST_PG_DATABASE']}"
        )
        yield env, dsn, fake, account


def _place(conn: psycopg.Connection[Any], org: int) -> int:
    place = conn.execute(
        "INSERT INTO places (organisation_id, name, kind) VALUES (%s, 'Oodi', 'library') RETURNING id", (org,)
    ).fetchone()[0]  # type: ignore[index]
    conn.execute(
        "INSERT INTO geofences (organisation_id, place_id, kind, geom) VALUES (%s, %s, 'polygon',"
        " ST_GeomFromText(%s, 4326))",
        (org, place, BLOCK),
    )
    conn.execute(
        "INSERT INTO content_items (organisation_id, place_id, title, body, cooldown_s)"
        " VALUES (%s, %s, 'Reading hour', 'Floor 2 at 15:00', 0)",
        (org, place),
    )
    return int(place)


def _seed(dsn: str, devices: int, events: int) -> tuple[int, int, list[int]]:
    with psycopg.connect(dsn) as conn:
        org = conn.execute(
            "INSERT INTO organisations (name, slug) VALUES ('b', 'b') ON CONFLICT (slug) DO UPDATE"
            " SET name = 'b' RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        # One place with one fence and one content item however many passes seed devices: a second place on
        # the same spot would double every enter of the latency run.
        existing = conn.execute("SELECT id FROM places WHERE organisation_id = %s", (org,)).fetchone()
        place = existing[0] if existing else _place(conn, org)
        ids = [
            r[0]
            for r in conn.execute(
                "INSERT INTO devices (organisation_id, platform, role, credential_hash, fcm_token, consents)"
                " SELECT %s, 'android', 'visitor', md5(random()::text || g), 'bench-' || g, '{\"offers\": true}'"
                " FROM generate_series(1, %s) g RETURNING id",
                (org, devices),
            ).fetchall()
        ]
        conn.execute("INSERT INTO device_states (device_id, state) SELECT unnest(%s::bigint[]), '{}'", (ids,))
        event_ids = [
            r[0]
            for r in conn.execute(
                "INSERT INTO events (organisation_id, device_id, place_id, kind, zone, occurred_at)"
                " SELECT %s, d, %s, 'enter', 'building', now() FROM unnest(%s::bigint[]) d,"
                " generate_series(1, %s) RETURNING id",
                (org, place, ids, max(1, events // devices)),
            ).fetchall()
        ]
        conn.execute("INSERT INTO outbox (event_id) SELECT unnest(%s::bigint[])", (event_ids,))
    return org, place, event_ids


def _sent(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM deliveries WHERE channel = 'fcm' AND status = 'sent'").fetchone()
    return int(row[0]) if row else 0


def _workers(env: dict[str, str], n: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "infra.worker"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


async def _ceiling(account: Path, fake: RunningFake, n: int, settings: Settings) -> float:
    """firebase-admin alone, sending as the worker does: chunks of `fcm_batch_size`, at most `fcm_in_flight`
    pushes in flight, on uvloop; measured, this is also its best configuration here (`bench.push` compares
    paths and batch sizes). Every push must arrive: a ceiling made of fast failures (say, an untrusted
    certificate) would make any pipeline look slow."""
    chunk = settings.fcm_batch_size
    with _trusting(fake):
        fcm = FcmSender(account, base_url=fake.base_url, send_path="async", batch_size=chunk)
        sender = BoundedSender(fcm, settings.fcm_in_flight)
        messages = [
            PushMessage(i, f"ceiling-{i}", "Reading hour", "Floor 2 at 15:00", {"place_id": "1"}, collapse_key=f"n{i}")
            for i in range(n)
        ]
        await sender.send(messages[:chunk])  # warm: token, connection
        start = time.perf_counter()
        batches = await asyncio.gather(*(sender.send(messages[i : i + chunk]) for i in range(0, n, chunk)))
        elapsed = time.perf_counter() - start
        await fcm.aclose()
    failed = Counter(o.error_code for batch in batches for o in batch if o.status != "sent")
    if failed:
        raise RuntimeError(f"ceiling run: {sum(failed.values())} of {n} pushes failed: {dict(failed)}")
    return n / elapsed


def _pipeline(env: dict[str, str], dsn: str, n: int, processes: int) -> float:
    from arq import create_pool
    from arq.connections import RedisSettings

    _, _, event_ids = _seed(dsn, devices=n, events=n)
    # One connection for the progress polls: a new one each time would fork a backend 20 times a second.
    conn = psycopg.connect(dsn, autocommit=True)
    before = _sent(conn)
    workers = _workers(env, processes)
    time.sleep(3)  # workers connected (their start-up is not what we measure)

    async def enqueue() -> None:
        redis = await create_pool(
            RedisSettings(port=int(env["PLACECAST_REDIS_PORT"]), password=env["PLACECAST_REDIS_PASSWORD"])
        )
        for i in range(0, len(event_ids), 100):  # as the API hands over a request's events
            await enqueue_events(redis, event_ids[i : i + 100], WINDOW_S)
        await redis.aclose()

    start = time.perf_counter()
    asyncio.run(enqueue())
    deadline = time.monotonic() + 300
    while _sent(conn) - before < len(event_ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    for worker in workers:
        worker.terminate()
        worker.wait(timeout=20)
    done = _sent(conn) - before
    conn.close()
    return done / elapsed


def _latency(
    env: dict[str, str], dsn: str, fake: RunningFake, rate: int, seconds: int, per_request: int
) -> dict[str, Any]:
    api_port = free_port()
    api = start_api(env, api_port, workers=2)
    workers = _workers(env, 1)
    base = f"http://127.0.0.1:{api_port}"
    with psycopg.connect(dsn) as conn:
        org = conn.execute("SELECT id FROM organisations WHERE slug = 'b'").fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO api_keys (organisation_id, name, purpose, key_hash)"
            " VALUES (%s, 'e', 'enrolment', encode(sha256('pce_bench'::bytea), 'hex'))"
            " ON CONFLICT DO NOTHING",
            (org,),
        )
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            devices = [
                http.post(
                    "/v1/devices",
                    headers={"X-Enrolment-Key": "pce_bench"},
                    json={"platform": "android", "fcm_token": f"lat-{i}", "consents": {"offers": True}},
                ).json()["credential"]
                for i in range(200)
            ]
        # Two seconds of the same traffic first: fence index, OAuth2 token, connections; then the measured run.
        steps = dict.fromkeys(range(len(devices)), 0)
        asyncio.run(_drive(base, devices, rate, 2, per_request, steps))
        time.sleep(1)
        with fake.client() as control:
            control.delete("/_fake/messages")
        drive_start = time.time()
        sent, answers = asyncio.run(_drive(base, devices, rate, seconds, per_request, steps))
        time.sleep(3)
        with fake.client() as control:
            received = {
                m["data"]["notification_id"]: m["received_at"]
                for m in control.get("/_fake/messages").json()
                if m["token"].startswith("lat-")
            }
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT n.id, extract(epoch FROM e.created_at) FROM notifications n JOIN events e ON e.id = n.event_id"
                " WHERE n.id = ANY(%s)",
                ([int(k) for k in received],),
            ).fetchall()
            enters = conn.execute(
                "SELECT count(*) FROM events WHERE kind = 'enter' AND created_at >= to_timestamp(%s)", (drive_start,)
            ).fetchone()
        latencies = sorted((received[str(n)] - float(t)) * 1000 for n, t in rows)
        return {
            "fixes_sent": sent,
            "fixes_per_request": per_request,
            "fixes_per_s": sent / seconds,
            "answers": dict(answers),
            "enter_events": enters[0] if enters else 0,
            "pushes": len(latencies),
            "p50_ms": statistics.median(latencies) if latencies else None,
            "p95_ms": latencies[int(len(latencies) * 0.95)] if latencies else None,
        }
    finally:
        for process in (*workers, api):
            process.terminate()
            process.wait(timeout=20)


async def _drive(
    base: str, devices: list[str], rate: int, seconds: int, per_request: int, steps: dict[int, int]
) -> tuple[int, Counter[str]]:
    """`rate` fixes/s for `seconds`, `per_request` fixes per request (one device's batch, as OwnTracks and
    Traccar clients send what they buffered). Fixes are 30 s apart; each device spends five of them 800 m
    away and five inside the fence, so one fix in ten is an enter and becomes a push."""
    inside, outside = (24.9388, 60.1740), (24.9300, 60.1700)
    start_ts = datetime.now(UTC) - timedelta(hours=8)  # device clocks: 30 s per step from here, never past now
    sent = 0
    async with httpx.AsyncClient(
        base_url=base, timeout=10, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
    ) as http:
        begin = time.perf_counter()
        tasks: list[asyncio.Task[Any]] = []
        for i in range(rate * seconds // per_request):
            delay = begin + i * per_request / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            device = i % len(devices)
            fixes = []
            for _ in range(per_request):
                step = steps[device]
                steps[device] += 1
                lon, lat = inside if step % 10 >= 5 else outside
                ts = (start_ts + timedelta(seconds=30 * step)).isoformat()
                fixes.append({"lon": lon, "lat": lat, "accuracy_m": 5, "ts": ts})
            body = {"batch_id": f"lat-{i}", "fixes": fixes}
            headers = {"Authorization": f"Bearer {devices[device]}"}
            tasks.append(asyncio.create_task(http.post("/v1/fixes/batch", json=body, headers=headers)))
            sent += per_request
        answers = await asyncio.gather(*tasks, return_exceptions=True)
    return sent, Counter(str(getattr(a, "status_code", type(a).__name__)) for a in answers)


def run_pipeline_bench(quick: bool = False) -> dict[str, Any]:
    n = 1000 if quick else 5000
    with _stack() as (env, dsn, fake, account):
        settings = Settings()
        # Passes interleaved, median of each: on 2 shared cores one pass can be off by 10 %.
        passes: dict[str, list[float]] = {"ceiling": [], "one": [], "two": []}
        for _ in range(1 if quick else 3):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the worker's loop
                passes["ceiling"].append(runner.run(_ceiling(account, fake, n, settings)))
            passes["one"].append(_pipeline(env, dsn, n, 1))
            passes["two"].append(_pipeline(env, dsn, n, 2))
        ceiling, one, two = (statistics.median(passes[k]) for k in ("ceiling", "one", "two"))
        seconds = 5 if quick else 10
        batched = _latency(env, dsn, fake, rate=1000, seconds=seconds, per_request=10)
        single = _latency(env, dsn, fake, rate=400, seconds=seconds, per_request=1)
    return {
        "pushes": n,
        "cores": os.cpu_count(),
        "fcm_latency_ms": 25,
        "chunk": settings.fcm_batch_size,
        "in_flight": settings.fcm_in_flight,
        "ceiling_firebase_admin_pushes_per_s": ceiling,
        "pipeline_1_worker_pushes_per_s": one,
        "pipeline_2_workers_pushes_per_s": two,
        "pipeline_vs_ceiling_1_worker": one / ceiling,
        "passes": passes,
        "latency_at_1000_fixes_per_s_batches_of_10": batched,
        "latency_at_400_single_fixes_per_s": single,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_pipeline_bench(quick="--quick" in sys.argv), indent=2))

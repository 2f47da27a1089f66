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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from infra.fake_fcm import RunningFake, local_fcm
from infra.stack import free_port, private_stack
from notifications.push import FcmSender, PushMessage

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


def _seed(dsn: str, devices: int, events: int) -> tuple[int, int, list[int]]:
    with psycopg.connect(dsn) as conn:
        org = conn.execute(
            "INSERT INTO organisations (name, slug) VALUES ('b', 'b') ON CONFLICT (slug) DO UPDATE"
            " SET name = 'b' RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
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


def _sent(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM deliveries WHERE channel = 'fcm' AND status = 'sent'").fetchone()
        return int(row[0]) if row else 0


def _workers(env: dict[str, str], n: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "arq", "infra.worker.WorkerSettings"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


async def _ceiling(account: Path, fake: RunningFake, n: int, chunk: int) -> float:
    sender = FcmSender(account, base_url=fake.base_url, send_path="async", batch_size=chunk)  # as the worker
    messages = [
        PushMessage(i, f"ceiling-{i}", "Reading hour", "Floor 2 at 15:00", {"place_id": "1"}, collapse_key=f"n{i}")
        for i in range(n)
    ]
    await sender.send(messages[:chunk])  # warm: token, connection
    start = time.perf_counter()
    for i in range(0, n, chunk):
        await sender.send(messages[i : i + chunk])
    elapsed = time.perf_counter() - start
    await sender.aclose()
    return n / elapsed


def _pipeline(env: dict[str, str], dsn: str, n: int, processes: int) -> float:
    from arq import create_pool
    from arq.connections import RedisSettings

    _, _, event_ids = _seed(dsn, devices=n, events=n)
    before = _sent(dsn)
    workers = _workers(env, processes)
    time.sleep(3)  # workers connected (their start-up is not what we measure)

    async def enqueue() -> None:
        redis = await create_pool(RedisSettings(port=int(env["PLACECAST_REDIS_PORT"])))
        for i in range(0, len(event_ids), 100):  # as the API enqueues: a job per request's events
            await redis.enqueue_job("deliver_events", event_ids[i : i + 100])
        await redis.aclose()

    start = time.perf_counter()
    asyncio.run(enqueue())
    deadline = time.monotonic() + 300
    while _sent(dsn) - before < len(event_ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    for worker in workers:
        worker.terminate()
        worker.wait(timeout=20)
    return (_sent(dsn) - before) / elapsed


def _latency(env: dict[str, str], dsn: str, fake: RunningFake, rate: int, seconds: int) -> dict[str, Any]:
    api_port = free_port()
    api_env = {**os.environ, **env, "PLACECAST_API_PORT": str(api_port)}
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "infra.app:create_app",
            "--port",
            str(api_port),
            "--workers",
            "2",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=api_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
            for _ in range(300):
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            devices = [
                http.post(
                    "/v1/devices",
                    headers={"X-Enrolment-Key": "pce_bench"},
                    json={"platform": "android", "fcm_token": f"lat-{i}", "consents": {"offers": True}},
                ).json()["credential"]
                for i in range(200)
            ]
        with fake.client() as control:
            control.delete("/_fake/messages")
        sent = asyncio.run(_drive(base, devices, rate, seconds))
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
        latencies = sorted((received[str(n)] - float(t)) * 1000 for n, t in rows)
        return {
            "fixes_sent": sent,
            "fixes_per_s": sent / seconds,
            "pushes": len(latencies),
            "p50_ms": statistics.median(latencies) if latencies else None,
            "p95_ms": latencies[int(len(latencies) * 0.95)] if latencies else None,
        }
    finally:
        for process in (*workers, api):
            process.terminate()
            process.wait(timeout=20)


async def _drive(base: str, devices: list[str], rate: int, seconds: int) -> int:
    """Each device alternates a fix inside the fence and one 800 m away: every second fix is an enter."""
    inside, outside = (24.9388, 60.1740), (24.9300, 60.1700)
    start_ts = datetime.now(UTC) - timedelta(hours=2)
    sent = 0
    async with httpx.AsyncClient(
        base_url=base, timeout=10, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
    ) as http:
        begin = time.perf_counter()
        tasks: list[asyncio.Task[Any]] = []
        for i in range(rate * seconds):
            due = begin + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            device = devices[i % len(devices)]
            step = i // len(devices)
            lon, lat = inside if step % 2 else outside
            body = {
                "lon": lon,
                "lat": lat,
                "accuracy_m": 5,
                "ts": (start_ts + timedelta(seconds=30 * step)).isoformat(),
            }
            tasks.append(
                asyncio.create_task(http.post("/v1/fixes", json=body, headers={"Authorization": f"Bearer {device}"}))
            )
            sent += 1
        await asyncio.gather(*tasks, return_exceptions=True)
    return sent


def run_pipeline_bench(quick: bool = False) -> dict[str, Any]:
    n = 1000 if quick else 3000
    with _stack() as (env, dsn, fake, account):
        ceiling = asyncio.run(_ceiling(account, fake, n, 50))
        one = _pipeline(env, dsn, n, 1)
        two = _pipeline(env, dsn, n, 2)
        latency = _latency(env, dsn, fake, rate=1000, seconds=5 if quick else 10)
    return {
        "pushes": n,
        "fcm_latency_ms": 25,
        "chunk": 50,
        "ceiling_firebase_admin_pushes_per_s": ceiling,
        "pipeline_1_worker_pushes_per_s": one,
        "pipeline_2_workers_pushes_per_s": two,
        "pipeline_vs_ceiling_1_worker": one / ceiling,
        "latency_at_1000_fixes_per_s": latency,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_pipeline_bench(quick="--quick" in sys.argv), indent=2))

"""A lost dependency gives a clear 503, and service resumes on its own when it returns (real servers)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from infra.stack import PgCluster, RedisServer
from tests.world import World

INSIDE = {"lon": 24.9388, "lat": 60.1740, "accuracy_m": 5}


def fix_body(seconds_ago: float) -> dict[str, object]:
    return {**INSIDE, "ts": (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()}


def until_accepted(http: httpx.Client, headers: dict[str, str], timeout_s: float = 20.0) -> float:
    """Seconds until a fix is accepted again."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        answer = http.post("/v1/fixes", json=fix_body(60 - (time.monotonic() - start)), headers=headers)
        if answer.status_code == 202:
            return time.monotonic() - start
        assert answer.status_code == 503, answer.text
        time.sleep(0.2)
    raise AssertionError("service did not resume")


async def test_redis_then_postgres_down_and_back(two_replicas, world: World, test_env, app) -> None:
    await asyncio.to_thread(_redis_then_postgres_down_and_back, two_replicas[0], world, test_env)
    # This test process's own app (fixtures of later tests) holds connections from before the restart.
    await app.state.engine.dispose()


def _redis_then_postgres_down_and_back(base_url: str, world: World, test_env: dict[str, str]) -> None:
    root = Path(test_env["PLACECAST_VAR_DIR"]).parent
    redis = RedisServer(root / "redis", int(test_env["PLACECAST_REDIS_PORT"]))
    pg = PgCluster(
        root / "pg",
        int(test_env["PLACECAST_PG_PORT"]),
        "placecast",
        test_env["PLACECAST_PG_PASSWORD"],
        test_env["PLACECAST_PG_DATABASE"],
        fast_unsafe=True,
    )
    with httpx.Client(base_url=base_url, timeout=10) as http:
        registered = http.post("/v1/devices", headers=world.enrolment, json={"platform": "android"})
        device = {"Authorization": f"Bearer {registered.json()['credential']}"}
        assert http.post("/v1/fixes", json=fix_body(120), headers=device).status_code == 202

        redis.stop()
        try:
            down = http.post("/v1/fixes", json=fix_body(110), headers=device)
            assert down.status_code == 503 and down.json()["error"] == "unavailable"
            assert "Retry-After" in down.headers
            ready = http.get("/ready")
            assert ready.status_code == 503 and "redis" in ready.json()["down"]
            assert http.get("/health").status_code == 200
        finally:
            redis.start()
        assert until_accepted(http, device) < 20

        pg.stop()
        try:
            down = http.post("/v1/fixes", json=fix_body(50), headers=device)
            assert down.status_code == 503 and down.json()["error"] == "unavailable"
            assert "postgres" in http.get("/ready").json()["down"]
        finally:
            pg.start()
        assert until_accepted(http, device) < 20

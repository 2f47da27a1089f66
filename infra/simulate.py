"""Walk simulated phones along routes through the real HTTP API and show what the server made of it."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from geofences.geodesy import EARTH_RADIUS_M


@dataclass(frozen=True)
class Route:
    name: str
    role: str
    team: str | None
    waypoints: list[tuple[float, float]]  # (lon, lat)
    pause_at: int | None = None  # index of a waypoint where the walker stays a while
    pause_s: float = 0.0


ROUTES = {
    # From the central station across Kansalaistori into Oodi, a look around, then out towards Musiikkitalo.
    "visitor-oodi": Route(
        "visitor-oodi",
        "visitor",
        None,
        [
            (24.9414, 60.1716),
            (24.9398, 60.1733),
            (24.93805, 60.17394),
            (24.9398, 60.1750),
            (24.9420, 60.1760),
        ],
        pause_at=2,
        pause_s=330,
    ),
    # A facilities worker walking down from Esplanadi to the Erottaja fire station.
    "staff-fire-station": Route(
        "staff-fire-station",
        "staff",
        "facilities",
        [(24.9470, 60.1675), (24.9460, 60.1660), (24.94522, 60.16514)],
        pause_at=2,
        pause_s=60,
    ),
}


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat = math.radians((a[1] + b[1]) / 2)
    dx = math.radians(b[0] - a[0]) * math.cos(lat) * EARTH_RADIUS_M
    dy = math.radians(b[1] - a[1]) * EARTH_RADIUS_M
    return math.hypot(dx, dy)


def walk(
    route: Route, speed_mps: float, interval_s: float, noise_m: float, seed: int = 1
) -> Iterator[tuple[float, float, float, float]]:
    """(seconds from start, lon, lat, accuracy) every `interval_s`, with Gaussian GPS noise."""
    rng = random.Random(seed)
    t = 0.0
    for i, (a, b) in enumerate(zip(route.waypoints, route.waypoints[1:], strict=False)):
        steps = max(1, int(distance_m(a, b) / (speed_mps * interval_s)))
        for s in range(steps):
            f = s / steps
            yield (t, *_noisy(a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, noise_m, rng))
            t += interval_s
        if route.pause_at == i + 1:
            for _ in range(int(route.pause_s / interval_s)):
                yield (t, *_noisy(b[0], b[1], noise_m, rng))
                t += interval_s
    last = route.waypoints[-1]
    yield (t, *_noisy(last[0], last[1], noise_m, rng))


def _noisy(lon: float, lat: float, noise_m: float, rng: random.Random) -> tuple[float, float, float]:
    dx, dy = rng.gauss(0, noise_m), rng.gauss(0, noise_m)
    dlat = math.degrees(dy / EARTH_RADIUS_M)
    dlon = math.degrees(dx / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lon + dlon, lat + dlat, max(3.0, noise_m * 1.5)


def run_route(
    http: httpx.Client,
    enrolment_key: str,
    route: Route,
    *,
    speed_mps: float,
    interval_s: float,
    noise_m: float,
    realtime: bool,
    on_event: Callable[[str, dict[str, Any]], None],
) -> list[dict[str, Any]]:
    registered = http.post(
        "/v1/devices",
        headers={"X-Enrolment-Key": enrolment_key},
        json={
            "platform": "android",
            "role": route.role,
            "team": route.team,
            "fcm_token": f"sim-{route.name}-{time.time_ns()}",
            "consents": {"offers": True, "tasks": True, "analytics": True},
        },
    )
    registered.raise_for_status()
    auth = {"Authorization": f"Bearer {registered.json()['credential']}"}
    points = list(walk(route, speed_mps, interval_s, noise_m))
    start = datetime.now(UTC) - (timedelta(0) if realtime else timedelta(seconds=points[-1][0] + 1))
    events: list[dict[str, Any]] = []
    for offset, lon, lat, accuracy in points:
        if realtime:
            time.sleep(max(0.0, (start + timedelta(seconds=offset) - datetime.now(UTC)).total_seconds()))
        ts = start + timedelta(seconds=offset)
        answer = http.post(
            "/v1/fixes",
            headers=auth,
            json={
                "lon": lon,
                "lat": lat,
                "accuracy_m": accuracy,
                "ts": ts.isoformat(),
                "speed_mps": speed_mps,
            },
        )
        answer.raise_for_status()
        for event in answer.json()["events"]:
            events.append(event)
            on_event(route.name, event)
    return events

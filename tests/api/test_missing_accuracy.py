"""Fixes without an accuracy (Traccar/OsmAnd URL templates often leave `accuracy` out; OwnTracks may omit `acc`;
the native `accuracy_m` is optional) are judged with the protocol's assumed accuracy (`assumed_accuracy_m` in
infra/settings.py, 30 m for every protocol by default), not as infinitely coarse: a walk in enters once.

An assumed accuracy coarser than `max_accuracy_m` (100 m) makes such fixes coarse, and coarse fixes never enter:
that is how an operator says "never trust this client's unreported fixes" for one protocol.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from infra.settings import Settings
from tests.world import World, register

M_PER_DEG_LAT = 111_320.0
M_PER_DEG_LON = M_PER_DEG_LAT * 0.4976  # cos(60.174°): metres per degree of longitude at the block
SOUTH_WALL = 60.1735  # tests/world.py BLOCK: 24.9370 .. 24.9406, 60.1735 .. 60.1745 (~200 m x 111 m)
MIDDLE_LON = 24.9388  # ~100 m from the east and west walls


def north_of_wall(metres: float, east_m: float = 0.0) -> tuple[float, float]:
    """A point `metres` north of the block's south wall (negative: south of it, outside)."""
    return MIDDLE_LON + east_m / M_PER_DEG_LON, SOUTH_WALL + metres / M_PER_DEG_LAT


# One far fix outside, then fixes 10 s apart 25-31 m inside: no single one is deep enough to enter alone with 30 m
# accuracy (that takes 2 accuracies: 60 m), so entering needs the accumulated evidence of several of them.
OUTSIDE = north_of_wall(-150)
JITTER_M = [(0, 0), (3, -2), (-3, 2), (2, 3), (-2, -3), (0, 1), (1, -1)]
INSIDE_WALK = [north_of_wall(28 + dy, dx) for dx, dy in JITTER_M]

Sender = Callable[[tuple[float, float], datetime], Awaitable[None]]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def sender_for(client, world: World, protocol: str) -> tuple[Sender, int]:
    """A new device and how it sends one fix without accuracy over `protocol`; and the device's id."""
    device = await register(client, world)
    device_id = int((await client.get("/v1/devices/me", headers=device)).json()["id"])
    credential = device["Authorization"].removeprefix("Bearer ")

    async def native(lon_lat: tuple[float, float], ts: datetime) -> None:
        body = {"lon": lon_lat[0], "lat": lon_lat[1], "ts": ts.isoformat()}  # no accuracy_m
        answer = await client.post("/v1/fixes", json=body, headers=device)
        assert answer.status_code == 202, answer.text

    async def osmand(lon_lat: tuple[float, float], ts: datetime) -> None:
        # Traccar Client's / OsmAnd's query string, as a URL template without `accuracy` makes it.
        params = {"id": credential, "lat": f"{lon_lat[1]:.7f}", "lon": f"{lon_lat[0]:.7f}"}
        params["timestamp"] = str(int(ts.timestamp()))
        answer = await client.get("/v1/osmand", params=params)
        assert answer.status_code == 200, answer.text

    async def owntracks(lon_lat: tuple[float, float], ts: datetime) -> None:
        body = {"_type": "location", "lat": lon_lat[1], "lon": lon_lat[0], "tst": int(ts.timestamp()), "tid": "ja"}
        headers = {**basic("jane", credential), "X-Limit-U": "jane", "X-Limit-D": "phone"}
        answer = await client.post("/v1/owntracks", json=body, headers=headers)
        assert answer.status_code == 200, answer.text

    return {"native": native, "osmand": osmand, "owntracks": owntracks}[protocol], device_id


async def walk_in(app, client, world: World, protocol: str) -> tuple[list[str], list[float | None]]:
    """The walk over `protocol`: the events it made and the accuracies stored with its fixes."""
    send, device_id = await sender_for(client, world, protocol)
    # Whole seconds (OsmAnd and OwnTracks send epoch seconds), in the past, 10 s apart.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    await send(OUTSIDE, start)
    for n, point in enumerate(INSIDE_WALK, start=1):
        await send(point, start + timedelta(seconds=10 * n))
    async with app.state.resources.session_factory() as session:
        of_device = {"d": device_id}
        kinds = await session.execute(text("SELECT kind FROM events WHERE device_id = :d ORDER BY id"), of_device)
        fixes = await session.execute(
            text("SELECT accuracy_m, source FROM fixes WHERE device_id = :d ORDER BY device_ts"), of_device
        )
        rows = fixes.all()
    assert {r.source for r in rows} == {protocol}
    return list(kinds.scalars()), [r.accuracy_m for r in rows]


@pytest.mark.parametrize("protocol", ["osmand", "native", "owntracks"])
async def test_a_walk_in_without_accuracy_enters_once(app, client, world: World, protocol: str) -> None:
    events, accuracies = await walk_in(app, client, world, protocol)
    assert accuracies == [None] * (1 + len(INSIDE_WALK)), "stored as sent: unknown, not the assumed value"
    assert events == ["enter"]


@pytest.mark.parametrize("protocol", ["osmand", "native"])
async def test_an_assumed_accuracy_coarser_than_the_limit_makes_such_fixes_coarse(
    app, client, world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """Per protocol: the other protocol's fixes without accuracy still enter."""
    assert app.state.settings is settings
    assert settings.assumed_accuracy_m[protocol] <= settings.max_accuracy_m
    monkeypatch.setitem(settings.assumed_accuracy_m, protocol, settings.max_accuracy_m + 50)

    assert await walk_in(app, client, world, protocol) == ([], [None] * (1 + len(INSIDE_WALK)))
    other = "native" if protocol == "osmand" else "osmand"
    assert (await walk_in(app, client, world, other))[0] == ["enter"]


def test_the_assumed_accuracy_is_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLACECAST_ASSUMED_ACCURACY_M", '{"osmand": 150, "native": 20.5}')
    # Protocols not named keep their default.
    assert Settings(_env_file=None).assumed_accuracy_m == {"osmand": 150.0, "native": 20.5, "owntracks": 30.0}
    for bad in ('{"carrier-pigeon": 5}', '{"osmand": 0}', '{"osmand": -3}'):
        monkeypatch.setenv("PLACECAST_ASSUMED_ACCURACY_M", bad)
        with pytest.raises(ValueError, match=r"protocol|positive"):
            Settings(_env_file=None)
    monkeypatch.delenv("PLACECAST_ASSUMED_ACCURACY_M")
    defaults = Settings(_env_file=None).assumed_accuracy_m
    assert defaults == {"native": 30.0, "owntracks": 30.0, "osmand": 30.0}

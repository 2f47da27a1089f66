"""Whatever JSON arrives, no endpoint answers 500: hypothesis throws arbitrary JSON at every POST/PUT/PATCH body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.world import World, register

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)
# Bodies shaped like the real ones, with any value in any field: these reach deeper than random JSON.
field_names = st.sampled_from(
    [
        "lat",
        "lon",
        "ts",
        "accuracy_m",
        "speed_mps",
        "batch_id",
        "fixes",
        "place_id",
        "qr_token",
        "name",
        "kind",
        "fences",
        "geometry",
        "radius_m",
        "type",
        "coordinates",
        "features",
        "platform",
        "consents",
        "timezone",
        "fcm_token",
        "title",
        "body",
        "trigger",
        "schedule",
        "quiet_hours",
        "place_kind",
        "url",
        "event_types",
        "note",
        "_type",
        "tst",
        "device_id",
        "location",
        "coords",
        "latitude",
        "longitude",
        "timestamp",
        "email",
        "password",
    ]
)
shaped = st.dictionaries(field_names, json_values, max_size=8)

MOBILE = [
    "/v1/fixes",
    "/v1/fixes/batch",
    "/v1/checkins",
    "/v1/checkouts",
    "/v1/owntracks",
    "/v1/osmand",
    "/v1/devices",
    "/v1/tasks/1/complete",
]
MOBILE_PUT = ["/v1/devices/me/consents", "/v1/devices/me/fcm-token"]
ADMIN = [
    "/admin/v1/places",
    "/admin/v1/import/geojson",
    "/admin/v1/content",
    "/admin/v1/tasks",
    "/admin/v1/webhooks",
    "/admin/v1/session",
]


@pytest.fixture
async def loop() -> asyncio.AbstractEventLoop:
    """The session's event loop (the app and its pools live on it); hypothesis drives it from a sync test."""
    return asyncio.get_running_loop()


@pytest.fixture
async def auth(client, world: World) -> dict[str, dict[str, str]]:
    device = await register(client, world, role="staff")
    return {"device": device, "admin": world.admin, "enrol": world.enrolment}


@pytest.mark.parametrize("path", MOBILE + MOBILE_PUT + ADMIN + ["/admin/v1/places/1"])
def test_no_body_makes_a_500(client, auth, loop, path: str) -> None:
    headers = {**auth["device"], **auth["enrol"], **auth["admin"]}
    method = "PUT" if path in MOBILE_PUT else "PATCH" if path.endswith("/places/1") else "POST"

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=json_values | shaped)
    def check(body: Any) -> None:
        raw = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity too: Python's JSON accepts them
        answer = loop.run_until_complete(
            client.request(method, path, content=raw, headers={**headers, "content-type": "application/json"})
        )
        assert answer.status_code < 500, (path, body, answer.text)

    check()


query_values = (
    st.text(max_size=20)
    | st.integers(-(2**70), 2**70).map(str)
    | st.sampled_from(["nan", "inf", "-1", "0", "1e400", "24.9,60.1,25,60.2", "2026-02-30", "", "%00"])
)
QUERIES = {
    "/admin/v1/places": ["bbox", "kind", "q", "cursor", "limit"],
    "/admin/v1/analytics": ["from", "to", "tz"],
    "/admin/v1/tasks": ["status"],
    "/v1/osmand": ["id", "lat", "lon", "timestamp", "speed", "accuracy", "location", "batt"],
    "/v1/inbox": ["cursor", "limit"],
}


@pytest.mark.parametrize("path", sorted(QUERIES))
def test_no_query_string_makes_a_500(client, auth, loop, path: str) -> None:
    headers = {**auth["device"], **auth["admin"]}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(params=st.dictionaries(st.sampled_from(QUERIES[path]), query_values, max_size=5))
    def check(params: dict[str, str]) -> None:
        answer = loop.run_until_complete(client.get(path, params=params, headers=headers))
        assert answer.status_code < 500, (path, params, answer.text)

    check()

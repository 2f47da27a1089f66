"""Limits and input over HTTP: free-form properties, bounded dates and ids, private webhook targets however
spelled, a batch id replayed with other fixes, and fences given as [lat, lon]."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.world import BLOCK, INSIDE, World, fix, register


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def feature(ref: str, ring: list[list[float]], **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": ref,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"name": ref, **props},
    }


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


RING: list[list[float]] = [
    [24.9370, 60.1735],
    [24.9406, 60.1735],
    [24.9406, 60.1745],
    [24.9370, 60.1745],
    [24.9370, 60.1735],
]
# The same block 300 m east: near Oodi, not on it.
EAST = [[lon + 0.005, lat] for lon, lat in RING]
SWAPPED = [[lat, lon] for lon, lat in EAST]


def fields(answer: httpx.Response) -> list[str]:
    return [p["field"] for p in answer.json()["detail"]]


# ---- properties ----


async def test_an_import_with_properties_300_deep_is_refused_and_listing_keeps_working(client, world: World) -> None:
    body = collection(feature("deep", EAST, notes=nested(300)), feature("big", EAST, n=2**70))
    answer = await client.post("/admin/v1/import/geojson", json=body, headers=world.admin)
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["created"] == 0
    deep, big = summary["refused"]
    assert deep["problems"][0]["code"] == "too_deep"
    assert deep["problems"][0]["field"].startswith("features[0].properties.notes.k.k.k")
    assert big["problems"][0] == {
        "field": "features[1].properties.n",
        "reason": "integers must fit in 64 bits (use a string for longer numbers)",
        "code": "out_of_range",
    }
    assert (await client.get("/admin/v1/places", headers=world.admin)).status_code == 200
    assert (await client.get("/admin/v1/export/geojson", headers=world.admin)).status_code == 200


async def test_creating_or_patching_a_place_with_deep_properties_is_a_422_with_the_path(client, world: World) -> None:
    body = {"name": "Deep", "kind": "library", "fences": [{"geometry": BLOCK}], "properties": {"a": nested(300)}}
    created = await client.post("/admin/v1/places", json=body, headers=world.admin)
    assert created.status_code == 422, created.text
    assert fields(created)[0].startswith("properties.a.k.k")
    patched = await client.patch(
        f"/admin/v1/places/{world.place_id}",
        json={"properties": {"ok": 1, "huge": "x" * 40_000}},
        headers=world.admin,
    )
    assert patched.status_code == 422, patched.text
    assert patched.json()["detail"][0]["code"] == "too_large"
    fine = await client.patch(
        f"/admin/v1/places/{world.place_id}", json={"properties": {"floors": [1, 2]}}, headers=world.admin
    )
    assert fine.status_code == 200 and fine.json()["properties"] == {"floors": [1, 2]}


# ---- dates and ids ----


@pytest.mark.parametrize(
    ("query", "field"),
    [("from=9999-12-01&to=9999-12-31", "from"), ("to=9999-12-31", "to"), ("from=1999-12-31&to=2000-01-05", "from")],
)
async def test_analytics_days_outside_2000_2099_are_a_422(client, world: World, query: str, field: str) -> None:
    answer = await client.get(f"/admin/v1/analytics?{query}", headers=world.admin)
    assert answer.status_code == 422, answer.text
    assert fields(answer) == [field]
    edge = await client.get("/admin/v1/analytics?from=2099-12-01&to=2099-12-31", headers=world.admin)
    assert edge.status_code == 200, edge.text


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/admin/v1/places/9223372036854775808", "place_id"),
        ("/admin/v1/places?cursor=9223372036854775808", "cursor"),
        ("/admin/v1/webhooks/9223372036854775808/deliveries", "subscription_id"),
        ("/admin/v1/webhooks/1/deliveries?cursor=9223372036854775808", "cursor"),
        ("/admin/v1/events?cursor=9223372036854775808", "cursor"),
        ("/admin/v1/visits?place_id=9223372036854775808", "place_id"),
    ],
)
async def test_ids_beyond_bigint_are_a_422_naming_the_parameter(client, world: World, url: str, field: str) -> None:
    answer = await client.get(url, headers=world.admin)
    assert answer.status_code == 422, answer.text
    assert fields(answer) == [field]


def _int_path_routes(app: Any) -> list[tuple[str, str, list[str]]]:
    """(method, path, integer path parameters) of every API operation, from the OpenAPI document."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            names = [
                p["name"]
                for p in operation.get("parameters", [])
                if p["in"] == "path" and p.get("schema", {}).get("type") == "integer"
            ]
            if names and path.startswith(("/admin/v1", "/v1")):
                routes.append((method.upper(), path, names))
    return routes


async def test_no_route_answers_500_for_an_id_beyond_bigint(app, world: World) -> None:
    routes = _int_path_routes(app)
    assert len(routes) >= 10
    # Answers, not raised exceptions: a 500 is what this test looks for.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        device = await register(http, world)
        for method, path, names in routes:
            for value in ("9223372036854775808", "99999999999999999999999", "-1", "0"):
                url = path
                for name in names:
                    url = url.replace("{" + name + "}", value)
                headers = device if path.startswith("/v1") else world.admin
                answer = await http.request(method, url, json={}, headers=headers)
                assert answer.status_code < 500, (method, url, answer.text)


# ---- webhooks ----


@pytest.mark.parametrize(
    "url",
    ["http://[::127.0.0.1]/", "http://[::ffff:10.0.0.1]/", "http://[64:ff9b::169.254.169.254]/", "http://0x7f.1/"],
)
async def test_a_webhook_to_a_private_address_in_any_spelling_is_a_422(
    app, client, world: World, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setattr(app.state.settings, "webhook_allow_private_networks", False)
    answer = await client.post("/admin/v1/webhooks", json={"url": url}, headers=world.admin)
    assert answer.status_code == 422, answer.text
    assert fields(answer) == ["url"]


async def test_delivery_refuses_an_ipv6_spelling_of_loopback() -> None:
    from notifications.egress import webhook_client

    async with webhook_client(allow_private_networks=False) as http:
        with pytest.raises(httpx.ConnectError, match="not a public address"):
            await http.post("http://[::127.0.0.1]:9/hook", content=b"{}")
        with pytest.raises(httpx.ConnectError, match="not a public address"):
            await http.post("http://[2002:7f00:1::1]:9/hook", content=b"{}")


# ---- batch ids ----


async def _stored_fixes(app: Any, batch_id: str) -> int:
    from sqlalchemy import text

    from kernel.uow import unit_of_work

    async with unit_of_work(app.state.resources.session_factory) as uow:
        query = text("SELECT count(*) FROM fixes WHERE batch_id = :b")
        return int((await uow.session.execute(query, {"b": batch_id})).scalar_one())


async def test_a_batch_id_replayed_with_other_fixes_is_a_409_and_stores_nothing(app, client, world: World) -> None:
    device = await register(client, world)
    fixes = [fix(INSIDE), fix(INSIDE)]
    first = await client.post("/v1/fixes/batch", json={"batch_id": "b-409", "fixes": fixes}, headers=device)
    assert first.status_code == 202 and first.json()["duplicate"] is False

    same = await client.post("/v1/fixes/batch", json={"batch_id": "b-409", "fixes": fixes[::-1]}, headers=device)
    assert same.status_code == 202, same.text
    assert same.json() == {"accepted": 2, "duplicate": True, "events": []}

    moved = [fixes[0], {**fixes[1], "lat": fixes[1]["lat"] + 0.001}]
    for other in (moved, [fixes[0]], [*fixes, fix(INSIDE)]):
        answer = await client.post("/v1/fixes/batch", json={"batch_id": "b-409", "fixes": other}, headers=device)
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == "conflict" and fields(answer) == ["batch_id"]
    assert await _stored_fixes(app, "b-409") == 2


# ---- fences given as [lat, lon] ----


async def test_a_fence_given_as_lat_lon_is_a_422_when_the_organisations_fences_say_so(client, world: World) -> None:
    body = {"name": "Annex", "kind": "library", "fences": [{"geometry": {"type": "Polygon", "coordinates": [SWAPPED]}}]}
    answer = await client.post("/admin/v1/places", json=body, headers=world.admin)
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["field"] == "fences[0].geometry.coordinates" and problem["code"] == "swapped_coordinates"
    assert "[lat, lon]" in problem["reason"]

    body["fences"] = [{"geometry": {"type": "Polygon", "coordinates": [EAST]}}]

    annex = await client.post("/admin/v1/places", json=body, headers=world.admin)
    assert annex.status_code == 201, annex.text
    patched = await client.patch(  # judged against the other places' fences (Oodi), not its own
        f"/admin/v1/places/{annex.json()['id']}",
        json={"fences": [{"geometry": {"type": "Point", "coordinates": [60.1740, 24.9400]}, "radius_m": 30}]},
        headers=world.admin,
    )
    assert patched.status_code == 422 and patched.json()["detail"][0]["code"] == "swapped_coordinates"


async def test_an_import_refuses_the_swapped_feature_and_keeps_the_others(client, world: World) -> None:
    body = collection(feature("east", EAST), feature("swapped", SWAPPED))
    answer = await client.post("/admin/v1/import/geojson", json=body, headers=world.admin)
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["created"] == 1
    [refused] = summary["refused"]
    assert refused["index"] == 1 and refused["external_ref"] == "swapped"
    assert refused["problems"][0]["field"] == "features[1].geometry.coordinates"
    assert refused["problems"][0]["code"] == "swapped_coordinates"


async def test_a_first_place_cannot_be_judged_and_correcting_it_later_is_accepted(client, org) -> None:
    _, headers = org
    body = {"name": "Only", "kind": "library", "fences": [{"geometry": {"type": "Polygon", "coordinates": [SWAPPED]}}]}
    created = await client.post("/admin/v1/places", json=body, headers=headers)
    assert created.status_code == 201, created.text
    fixed = await client.patch(
        f"/admin/v1/places/{created.json()['id']}",
        json={"fences": [{"geometry": {"type": "Polygon", "coordinates": [EAST]}}]},
        headers=headers,
    )
    assert fixed.status_code == 200, fixed.text

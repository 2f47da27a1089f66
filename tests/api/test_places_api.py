"""Admin places API over HTTP: CRUD, validation answers, paging, bbox, scoping between organisations."""

from __future__ import annotations

import math
from typing import Any

import pytest

OODI = {
    "type": "Polygon",
    "coordinates": [
        [[24.9375, 60.1737], [24.9395, 60.1737], [24.9395, 60.1747], [24.9375, 60.1747], [24.9375, 60.1737]]
    ],
}


def place_body(name: str = "Oodi", geometry: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "library", "fences": [{"geometry": geometry or OODI}], **extra}


async def test_create_read_update_delete(client, org) -> None:
    _, headers = org
    created = await client.post("/admin/v1/places", json=place_body(opening_hours="Mo-Fr 08:00-22:00"), headers=headers)
    assert created.status_code == 201, created.text
    place = created.json()
    assert place["name"] == "Oodi" and place["opening_hours"] == "Mo-Fr 08:00-22:00"
    assert place["fences"][0]["kind"] == "polygon"

    got = await client.get(f"/admin/v1/places/{place['id']}", headers=headers)
    assert got.json()["fences"][0]["geometry"]["type"] == "Polygon"

    circle = {"geometry": {"type": "Point", "coordinates": [24.94, 60.17]}, "radius_m": 50}
    patched = await client.patch(
        f"/admin/v1/places/{place['id']}", json={"name": "Oodi library", "fences": [circle]}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Oodi library"
    assert [f["kind"] for f in patched.json()["fences"]] == ["circle"]
    assert patched.json()["fences"][0]["radius_m"] == 50

    deleted = await client.delete(f"/admin/v1/places/{place['id']}", headers=headers)
    assert deleted.status_code == 204
    assert (await client.get(f"/admin/v1/places/{place['id']}", headers=headers)).status_code == 404


async def test_requires_a_valid_key(client) -> None:
    assert (await client.get("/admin/v1/places")).status_code == 401
    answer = await client.get("/admin/v1/places", headers={"X-API-Key": "pck_nope"})
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"


async def test_other_organisation_cannot_read_or_change(client, org, app) -> None:
    from kernel.uow import unit_of_work
    from services.orgs import create_api_key, create_organisation

    _, headers = org
    place = (await client.post("/admin/v1/places", json=place_body(), headers=headers)).json()
    async with unit_of_work(app.state.resources.session_factory) as uow:
        other = await create_organisation(uow.session, name="other", slug=f"other-{place['id']}")
        other_key = await create_api_key(uow.session, organisation_id=other, name="x")
    intruder = {"X-API-Key": other_key}
    assert (await client.get(f"/admin/v1/places/{place['id']}", headers=intruder)).status_code == 404
    assert (
        await client.patch(f"/admin/v1/places/{place['id']}", json={"name": "pwned"}, headers=intruder)
    ).status_code == 404
    assert (await client.delete(f"/admin/v1/places/{place['id']}", headers=intruder)).status_code == 404
    listed = (await client.get("/admin/v1/places", headers=intruder)).json()
    assert listed["items"] == []
    still = (await client.get(f"/admin/v1/places/{place['id']}", headers=headers)).json()
    assert still["name"] == "Oodi"


async def test_viewer_key_cannot_change(client, org, app) -> None:
    from kernel.uow import unit_of_work
    from services.models import Role
    from services.orgs import create_api_key

    organisation_id, _headers = org
    async with unit_of_work(app.state.resources.session_factory) as uow:
        viewer = await create_api_key(uow.session, organisation_id=organisation_id, name="v", role=Role.viewer)
    refused = await client.post("/admin/v1/places", json=place_body(), headers={"X-API-Key": viewer})
    assert refused.status_code == 403
    assert (await client.get("/admin/v1/places", headers={"X-API-Key": viewer})).status_code == 200


async def test_list_pages_and_filters_by_bbox(client, org) -> None:
    _, headers = org
    for i in range(5):
        lon = 24.90 + i * 0.01
        square = {
            "type": "Polygon",
            "coordinates": [[[lon, 60.17], [lon + 0.001, 60.17], [lon + 0.001, 60.171], [lon, 60.171], [lon, 60.17]]],
        }
        assert (
            await client.post("/admin/v1/places", json=place_body(f"p{i}", square), headers=headers)
        ).status_code == 201
    first = (await client.get("/admin/v1/places?limit=2", headers=headers)).json()
    assert [p["name"] for p in first["items"]] == ["p0", "p1"]
    second = (await client.get(f"/admin/v1/places?limit=2&cursor={first['next_cursor']}", headers=headers)).json()
    assert [p["name"] for p in second["items"]] == ["p2", "p3"]
    third = (await client.get(f"/admin/v1/places?limit=2&cursor={second['next_cursor']}", headers=headers)).json()
    assert [p["name"] for p in third["items"]] == ["p4"] and third["next_cursor"] is None

    boxed = (await client.get("/admin/v1/places?bbox=24.905,60.16,24.925,60.18", headers=headers)).json()
    assert sorted(p["name"] for p in boxed["items"]) == ["p1", "p2"]


async def test_bbox_circle_counts_its_radius(client, org) -> None:
    _, headers = org
    circle = {"geometry": {"type": "Point", "coordinates": [24.95, 60.17]}, "radius_m": 500}
    body = {"name": "ring", "kind": "school", "fences": [circle]}
    assert (await client.post("/admin/v1/places", json=body, headers=headers)).status_code == 201
    # The box starts ~280 m east of the centre: only the radius reaches into it.
    near = (await client.get("/admin/v1/places?bbox=24.955,60.165,24.96,60.175", headers=headers)).json()
    far = (await client.get("/admin/v1/places?bbox=24.97,60.165,24.98,60.175", headers=headers)).json()
    assert [p["name"] for p in near["items"]] == ["ring"] and far["items"] == []


BOWTIE = {
    "type": "Polygon",
    "coordinates": [[[24.93, 60.17], [24.94, 60.18], [24.94, 60.17], [24.93, 60.18], [24.93, 60.17]]],
}


@pytest.mark.parametrize(
    ("geometry", "radius", "code", "field_part"),
    [
        (
            {
                "type": "Polygon",
                "coordinates": [[[24.93, 60.17], [24.94, 60.17], [24.94, 60.18], [24.93, 60.18]]],
            },
            None,
            "ring_not_closed",
            "coordinates[0]",
        ),
        (BOWTIE, None, "self_intersection", "geometry"),
        (
            {"type": "Polygon", "coordinates": [[[200, 60.17], [201, 60.17], [201, 60.18], [200, 60.17]]]},
            None,
            "out_of_range",
            "coordinates[0]",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [[[60.17, 124.93], [60.17, 124.94], [60.18, 124.94], [60.17, 124.93]]],
            },
            None,
            "swapped_coordinates",
            "coordinates[0]",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [90, 0], [90, 60], [0, 60], [0, 0]]]},
            None,
            "area_too_large",
            "geometry",
        ),
        ({"type": "Point", "coordinates": [24.94, 60.17]}, 0.5, "radius_out_of_range", "radius"),
        ({"type": "Point", "coordinates": [24.94, 60.17]}, 1e9, "radius_out_of_range", "radius"),
        ({"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.17]]}, None, "wrong_type", "type"),
    ],
)
async def test_bad_geometry_is_a_422_naming_field_and_reason(client, org, geometry, radius, code, field_part) -> None:
    _, headers = org
    body = {"name": "bad", "kind": "library", "fences": [{"geometry": geometry, "radius_m": radius}]}
    answer = await client.post("/admin/v1/places", json=body, headers=headers)
    assert answer.status_code == 422, answer.text
    problems = answer.json()["detail"]
    matching = [p for p in problems if p["code"] == code]
    assert matching, problems
    assert matching[0]["field"].startswith("fences[0].")
    assert field_part in matching[0]["field"]
    assert matching[0]["reason"]


async def test_self_intersection_reports_the_crossing_point(client, org) -> None:
    _, headers = org
    answer = await client.post("/admin/v1/places", json=place_body(geometry=BOWTIE), headers=headers)
    problem = next(p for p in answer.json()["detail"] if p["code"] == "self_intersection")
    assert problem["point"] == pytest.approx([24.935, 60.175], abs=1e-6)


async def test_too_many_vertices(client, org, settings) -> None:
    _, headers = org
    n = settings.max_vertices + 10
    ring = [
        [24.94 + 0.001 * math.cos(2 * math.pi * i / n), 60.17 + 0.0005 * math.sin(2 * math.pi * i / n)]
        for i in range(n)
    ]
    ring.append(ring[0])
    answer = await client.post(
        "/admin/v1/places",
        json=place_body(geometry={"type": "Polygon", "coordinates": [ring]}),
        headers=headers,
    )
    assert answer.status_code == 422
    assert any(p["code"] == "too_many_vertices" for p in answer.json()["detail"])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name":"x","kind":"library","fences":[{"geometry":{"type":"Point","coordinates":[NaN,60.1]},"radius_m":50}]}',
        b'{"name":"x","kind":"library","fences":[{"geometry":{"type":"Point","coordinates":[Infinity,60.1]},"radius_m":50}]}',
        b'{"name":"x","kind":"library","fences":[{"geometry":{"type":"Point","coordinates":[24.9,60.1]},"radius_m":NaN}]}',
    ],
)
async def test_nan_and_infinity_are_refused(client, org, raw) -> None:
    _, headers = org
    answer = await client.post("/admin/v1/places", content=raw, headers={**headers, "content-type": "application/json"})
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5, "kind": "library", "fences": [{"geometry": OODI}]},
        {"name": "x", "kind": "library", "fences": "nope"},
        {"name": "x", "kind": "library", "fences": []},
        {"name": "x", "kind": "library", "fences": [{"geometry": OODI}], "timezone": "Mars/Olympus"},
        {"name": "x", "kind": "Library With Spaces", "fences": [{"geometry": OODI}]},
        {"name": "x", "kind": "library", "fences": [{"geometry": [1, 2]}]},
        {"name": "x", "kind": "library", "fences": [{"geometry": {"type": "Polygon", "coordinates": "abc"}}]},
        [1, 2, 3],
    ],
)
async def test_wrong_types_are_422_not_500(client, org, body) -> None:
    _, headers = org
    answer = await client.post("/admin/v1/places", json=body, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"]


async def test_huge_body_is_413(client, org, settings) -> None:
    _, headers = org
    blob = b'{"name":"' + b"x" * (settings.max_body_bytes + 10) + b'"}'
    answer = await client.post(
        "/admin/v1/places", content=blob, headers={**headers, "content-type": "application/json"}
    )
    assert answer.status_code == 413


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", "10,10,0,0", "0,0,200,10", "nan,0,1,1"])
async def test_bad_bbox_is_422(client, org, bbox) -> None:
    _, headers = org
    answer = await client.get(f"/admin/v1/places?bbox={bbox}", headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "bbox"


async def test_geojson_round_trip_through_the_api(client, org) -> None:
    _, headers = org
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "lib-1",
                "geometry": OODI,
                "properties": {
                    "name": "Oodi",
                    "kind": "library",
                    "opening_hours": "Mo-Su 10:00-20:00",
                    "floors": 3,
                },
            },
            {
                "type": "Feature",
                "id": "fs-1",
                "geometry": {"type": "Point", "coordinates": [24.944, 60.165]},
                "properties": {"name": "Station", "kind": "fire_station", "radius_m": 40},
            },
        ],
    }
    summary = (await client.post("/admin/v1/import/geojson", json=collection, headers=headers)).json()
    assert summary == {"created": 2, "updated": 0, "refused": []}
    again = (await client.post("/admin/v1/import/geojson", json=collection, headers=headers)).json()
    assert again["created"] == 0 and again["updated"] == 2

    exported = (await client.get("/admin/v1/export/geojson", headers=headers)).json()
    assert exported["type"] == "FeatureCollection" and len(exported["features"]) == 2
    reimport = (await client.post("/admin/v1/import/geojson", json=exported, headers=headers)).json()
    assert reimport == {"created": 0, "updated": 2, "refused": []}
    exported_again = (await client.get("/admin/v1/export/geojson", headers=headers)).json()
    assert exported_again == exported
    by_name = {f["properties"]["name"]: f for f in exported["features"]}
    assert by_name["Oodi"]["properties"]["floors"] == 3
    assert by_name["Station"]["geometry"]["type"] == "Point"


async def test_geojson_import_reports_refused_features(client, org) -> None:
    _, headers = org
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": BOWTIE,
                "properties": {"name": "bad", "kind": "library", "external_ref": "b"},
            },
            {
                "type": "Feature",
                "geometry": OODI,
                "properties": {"name": "good", "kind": "library", "external_ref": "g"},
            },
        ],
    }
    summary = (await client.post("/admin/v1/import/geojson", json=collection, headers=headers)).json()
    assert summary["created"] == 1
    assert summary["refused"][0]["index"] == 0
    assert summary["refused"][0]["problems"][0]["code"] == "self_intersection"
    not_fc = await client.post("/admin/v1/import/geojson", json={"type": "Feature"}, headers=headers)
    assert not_fc.status_code == 422


@pytest.mark.parametrize(
    "path", ["/admin/v1/places/9223372036854775808", "/admin/v1/places?cursor=9223372036854775808"]
)
async def test_ids_beyond_bigint_are_422(client, org, path) -> None:
    _, headers = org
    answer = await client.get(path, headers=headers)
    assert answer.status_code == 422, answer.text

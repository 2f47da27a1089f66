from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Point

from geofences.domain import FenceSpec, GeometryLimits, PlaceSpec
from geofences.geojson_io import (
    RESERVED_PROPERTIES,
    FeatureCollectionError,
    features_to_places,
    places_to_feature_collection,
)
from geofences.validation import validate_fence_geometry

LIMITS = GeometryLimits()
SHELL = [[24.937, 60.173], [24.938, 60.173], [24.938, 60.174], [24.937, 60.174], [24.937, 60.173]]
HOLE = [[24.9373, 60.1733], [24.9373, 60.1737], [24.9377, 60.1737], [24.9377, 60.1733], [24.9373, 60.1733]]
OTHER = [[x + 0.01, y] for x, y in SHELL]


def feature(geometry: Any, **properties: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {"name": "Oodi", "kind": "library", **properties},
    }


def collection(*features: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def sample() -> dict[str, Any]:
    return collection(
        feature(
            {"type": "Polygon", "coordinates": [SHELL, HOLE]},
            external_ref="osm:way/596937289",
            address="Töölönlahdenkatu 4",
            opening_hours="Mo-Fr 08:00-22:00",
            approach_m=25,
            wikidata="Q18659999",
            floors=[1, 2, 3],
        ),
        feature({"type": "MultiPolygon", "coordinates": [[SHELL], [OTHER]]}, name="Campus", kind="university"),
        {**feature({"type": "Point", "coordinates": [24.94, 60.17]}, name="Kiosk", radius_m=40), "id": 42},
        feature(
            {
                "type": "GeometryCollection",
                "geometries": [
                    {"type": "Polygon", "coordinates": [SHELL]},
                    {"type": "Point", "coordinates": [24.95, 60.17], "radius_m": 15},
                    {"type": "Point", "coordinates": [24.96, 60.17]},  # takes properties.radius_m
                ],
            },
            name="Two doors",
            radius_m=60,
            timezone="Europe/Stockholm",
            external_ref="doors",
        ),
    )


def roundtrip(places: list[PlaceSpec]) -> list[PlaceSpec]:
    exported = json.loads(json.dumps(places_to_feature_collection((i, p) for i, p in enumerate(places))))
    again, refused = features_to_places(exported, LIMITS)
    assert refused == []
    return again


def test_import_reads_every_fence_kind_and_property() -> None:
    places, refused = features_to_places(sample(), LIMITS)
    assert refused == []
    oodi, campus, kiosk, doors = places
    assert oodi.name == "Oodi" and oodi.kind == "library" and oodi.external_ref == "osm:way/596937289"
    assert (oodi.address, oodi.opening_hours, oodi.approach_m) == (
        "Töölönlahdenkatu 4",
        "Mo-Fr 08:00-22:00",
        25.0,
    )
    assert oodi.timezone == "Europe/Helsinki"
    assert oodi.properties == {"wikidata": "Q18659999", "floors": [1, 2, 3]}
    assert len(oodi.fences[0].geometry.interiors) == 1
    assert isinstance(campus.fences[0].geometry, MultiPolygon)
    assert kiosk.fences == [FenceSpec("circle", Point(24.94, 60.17), 40.0)]
    assert kiosk.external_ref == "42"  # the Feature id stands in for a missing external_ref
    assert [f.kind for f in doors.fences] == ["polygon", "circle", "circle"]
    assert [f.radius_m for f in doors.fences] == [None, 15.0, 60.0]
    assert doors.timezone == "Europe/Stockholm"


def test_round_trip_gives_equal_places() -> None:
    places, _ = features_to_places(sample(), LIMITS)
    assert roundtrip(places) == places


def test_export_shape() -> None:
    places, _ = features_to_places(sample(), LIMITS)
    fc = places_to_feature_collection([(7, places[0]), (None, places[2]), (9, places[3])])
    oodi, kiosk, doors = fc["features"]
    assert oodi["id"] == "osm:way/596937289" and oodi["properties"]["place_id"] == 7
    assert oodi["geometry"]["type"] == "Polygon"
    assert kiosk["geometry"] == {"type": "Point", "coordinates": [24.94, 60.17]}
    assert kiosk["properties"]["radius_m"] == 40.0 and "place_id" not in kiosk["properties"]
    assert [g.get("radius_m") for g in doors["geometry"]["geometries"]] == [None, 15.0, 60.0]
    # The exporter's own id never becomes a property of the re-imported place.
    assert "place_id" not in features_to_places(fc, LIMITS)[0][0].properties


def test_bad_features_are_refused_one_by_one_with_where() -> None:
    unclosed = {"type": "Polygon", "coordinates": [SHELL[:-1]]}
    fc = collection(
        feature({"type": "Polygon", "coordinates": [SHELL]}),
        feature(unclosed, external_ref="broken"),
        feature({"type": "Polygon", "coordinates": [SHELL]}, name="", timezone="Mars/Olympus", approach_m=-5),
        "not a feature",
        feature(None),
        feature({"type": "GeometryCollection", "geometries": []}),
        feature({"type": "Polygon", "coordinates": [SHELL]}, radius_m=30),
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]}, "properties": [1]},
        {**feature({"type": "Point", "coordinates": [24.9, 60.1]}, radius_m=30, name=5), "id": 1.5},
    )
    places, refused = features_to_places(fc, LIMITS)
    assert [p.name for p in places] == ["Oodi"]
    by_index = {r.index: {(p.field, p.code) for p in r.problems} for r in refused}
    assert by_index == {
        1: {("features[1].geometry.coordinates[0]", "ring_not_closed")},
        2: {
            ("features[2].properties.name", "missing"),
            ("features[2].properties.timezone", "unknown_timezone"),
            ("features[2].properties.approach_m", "out_of_range"),
        },
        3: {("features[3]", "wrong_type")},
        4: {("features[4].geometry", "missing")},
        5: {("features[5].geometry.geometries", "wrong_type")},
        6: {("features[6].properties.radius_m", "unexpected_radius")},
        7: {
            ("features[7].properties", "wrong_type"),
            ("features[7].properties.name", "missing"),
            ("features[7].properties.radius_m", "radius_required"),
        },
        8: {("features[8].id", "wrong_type"), ("features[8].properties.name", "wrong_type")},
    }
    assert refused[0].external_ref == "broken"
    assert refused[0].problems[0].point == tuple(SHELL[-2])


def test_duplicate_external_ref_is_refused() -> None:
    square = {"type": "Polygon", "coordinates": [SHELL]}
    places, refused = features_to_places(
        collection(feature(square, external_ref="a"), feature(square, external_ref="a"))
    )
    assert len(places) == 1
    assert [(r.index, r.external_ref, r.problems[0].code) for r in refused] == [(1, "a", "duplicate_external_ref")]


@pytest.mark.parametrize(
    ("document", "fields"),
    [
        ([], {""}),
        ({"type": "Feature", "features": []}, {"type"}),
        ({"type": "FeatureCollection"}, {"features"}),
        ({"type": "FeatureCollection", "features": {"0": {}}}, {"features"}),
        ({"features": None}, {"type", "features"}),
    ],
)
def test_top_level_shape(document: object, fields: set[str]) -> None:
    with pytest.raises(FeatureCollectionError) as info:
        features_to_places(document, LIMITS)
    assert {p.field for p in info.value.errors} == fields


def test_empty_collection_is_fine() -> None:
    assert features_to_places(collection(), LIMITS) == ([], [])


def _star(lon: float, lat: float, radii: list[float], phase: float, jitter: list[float]) -> list[list[float]]:
    """A star-shaped (hence simple) ring around (lon, lat) with radii in metres."""
    n = len(radii)
    metres_per_deg_lat = 111_320.0
    metres_per_deg_lon = metres_per_deg_lat * math.cos(math.radians(lat))
    ring = []
    for k, (r, j) in enumerate(zip(radii, jitter, strict=True)):
        angle = phase + (k + j) * 2 * math.pi / n
        ring.append([lon + r * math.cos(angle) / metres_per_deg_lon, lat + r * math.sin(angle) / metres_per_deg_lat])
    return [*ring, ring[0]]


@st.composite
def star_polygons(draw: st.DrawFn, lon: float, lat: float) -> list[list[list[float]]]:
    n = draw(st.integers(5, 12))
    radii = draw(st.lists(st.floats(40, 80), min_size=n, max_size=n))
    jitter = draw(st.lists(st.floats(0, 0.3), min_size=n, max_size=n))
    rings = [_star(lon, lat, radii, draw(st.floats(0, 2 * math.pi)), jitter)]
    if draw(st.booleans()):
        # A small square inside the disk every such star is guaranteed to contain.
        rings.append(_star(lon, lat, [8.0] * 4, 0.0, [0.0] * 4)[::-1])
    return rings


@st.composite
def places(draw: st.DrawFn) -> PlaceSpec:
    lon, lat = draw(st.floats(-170, 170)), draw(st.floats(-80, 80))
    shape = draw(st.sampled_from(["polygon", "multipolygon", "circle", "collection"]))
    geometries: list[tuple[dict[str, Any], float | None]]
    if shape == "circle":
        geometries = [({"type": "Point", "coordinates": [lon, lat]}, draw(st.floats(5, 5000)))]
    else:
        first = draw(star_polygons(lon, lat))
        second = draw(star_polygons(lon + 0.01, lat))
        multi: dict[str, Any] = {"type": "MultiPolygon", "coordinates": [first, second]}
        geometries = [({"type": "Polygon", "coordinates": first}, None)] if shape == "polygon" else [(multi, None)]
        if shape == "collection":
            geometries.append(({"type": "Point", "coordinates": [lon, lat]}, draw(st.floats(5, 5000))))
    fences = [validate_fence_geometry(g, r, LIMITS) for g, r in geometries]
    text = st.text(min_size=1, max_size=12)
    # What free-form properties may hold (validation.properties_problems): text PostgreSQL stores, 64-bit integers.
    stored = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=12)
    integers = st.integers(-(2**63), 2**63 - 1)
    values = st.none() | st.booleans() | integers | st.floats(allow_nan=False, allow_infinity=False) | stored
    extra = draw(
        st.dictionaries(stored.filter(lambda k: k not in RESERVED_PROPERTIES), values | st.lists(values), max_size=4)
    )
    return PlaceSpec(
        name=draw(text.filter(str.strip)),
        kind=draw(text),
        fences=fences,
        address=draw(st.none() | text),
        timezone=draw(st.sampled_from(["Europe/Helsinki", "UTC", "America/New_York"])),
        opening_hours=draw(st.none() | text),
        external_ref=draw(st.none() | st.uuids().map(str)),
        approach_m=draw(st.none() | st.floats(0, 500)),
        properties=extra,
    )


@settings(max_examples=80, deadline=None)
@given(generated=st.lists(places(), max_size=3))
def test_round_trip_property(generated: list[PlaceSpec]) -> None:
    assert roundtrip(generated) == generated

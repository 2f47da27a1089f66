from __future__ import annotations

import json
import math
from typing import Any

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Point, Polygon

from geofences.domain import FenceSpec, GeometryLimits
from geofences.index import ZONE_BUILDING, FenceIndex
from geofences.validation import (
    MAX_PROBLEMS,
    GeometryProblem,
    GeometryValidationError,
    geodesic_area_m2,
    validate_fence_geometry,
    validate_lon_lat,
)

LIMITS = GeometryLimits()
# About 55 m x 111 m around Oodi, drawn clockwise on purpose.
SQUARE_CW = [[24.937, 60.173], [24.937, 60.174], [24.938, 60.174], [24.938, 60.173], [24.937, 60.173]]
HOLE = [[24.9373, 60.1733], [24.9377, 60.1733], [24.9377, 60.1737], [24.9373, 60.1737], [24.9373, 60.1733]]


def polygon(*rings: list[list[Any]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def problems_of(
    geometry: object, radius: object | None = None, limits: GeometryLimits = LIMITS
) -> list[GeometryProblem]:
    with pytest.raises(GeometryValidationError) as info:
        validate_fence_geometry(geometry, radius, limits)
    return info.value.errors


def only(geometry: object, radius: object | None = None, limits: GeometryLimits = LIMITS) -> GeometryProblem:
    errors = problems_of(geometry, radius, limits)
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_polygon_with_hole_is_oriented_and_two_dimensional() -> None:
    shell_3d = [[x, y, 12.5] for x, y in SQUARE_CW]
    fence = validate_fence_geometry(polygon(shell_3d, HOLE), None, LIMITS)
    assert fence.kind == "polygon" and fence.radius_m is None
    assert isinstance(fence.geometry, Polygon)
    assert not fence.geometry.has_z
    assert fence.geometry.exterior.is_ccw  # RFC 7946: exterior counter-clockwise
    assert not fence.geometry.interiors[0].is_ccw
    assert len(fence.geometry.interiors) == 1
    assert fence.geometry.equals(Polygon(SQUARE_CW, [HOLE]))


def test_valid_multipolygon_and_circle() -> None:
    other = [[x + 0.01, y] for x, y in SQUARE_CW]
    fence = validate_fence_geometry({"type": "MultiPolygon", "coordinates": [[SQUARE_CW], [other]]}, None, LIMITS)
    assert isinstance(fence.geometry, MultiPolygon) and len(fence.geometry.geoms) == 2
    circle = validate_fence_geometry({"type": "Point", "coordinates": [24.94, 60.17, 3.0]}, 30, LIMITS)
    assert circle == FenceSpec(kind="circle", geometry=Point(24.94, 60.17), radius_m=30.0)


def test_geodesic_area_of_a_small_square_at_60_north() -> None:
    # 0.001° of latitude is 111.195 m on the sphere; 0.001° of longitude at 60.1735° is cos(lat) of that.
    expected = 111.19508 * 111.19508 * math.cos(math.radians(60.1735))
    assert geodesic_area_m2(Polygon(SQUARE_CW)) == pytest.approx(expected, rel=1e-4)
    hole_area = geodesic_area_m2(Polygon(HOLE))
    assert geodesic_area_m2(Polygon(SQUARE_CW, [HOLE])) == pytest.approx(expected - hole_area, rel=1e-4)


def test_unclosed_ring_names_the_ring() -> None:
    problem = only(polygon(SQUARE_CW, HOLE[:-1]))
    assert (problem.code, problem.field) == ("ring_not_closed", "geometry.coordinates[1]")
    assert problem.point == tuple(HOLE[-2])


def test_bow_tie_reports_the_crossing_point() -> None:
    bow_tie = [[24.94, 60.17], [24.942, 60.172], [24.942, 60.17], [24.94, 60.172], [24.94, 60.17]]
    problem = only(polygon(bow_tie))
    assert (problem.code, problem.field) == ("self_intersection", "geometry.coordinates[0]")
    assert problem.point == pytest.approx((24.941, 60.171), abs=1e-9)
    assert "24.9410000, 60.1710000" in problem.reason


def test_hole_outside_shell() -> None:
    outside = [[x + 0.01, y] for x, y in HOLE]
    problem = only(polygon(SQUARE_CW, outside))
    assert (problem.code, problem.field) == ("hole_outside_shell", "geometry.coordinates[1]")
    assert problem.point is not None and Polygon(outside).exterior.distance(Point(problem.point)) < 1e-9


def test_overlapping_multipolygon_parts() -> None:
    shifted = [[x + 0.0005, y + 0.0005] for x, y in SQUARE_CW]
    problem = only({"type": "MultiPolygon", "coordinates": [[SQUARE_CW], [shifted]]})
    assert problem.code == "overlapping_polygons"
    assert problem.field == "geometry.coordinates[0]"
    assert problem.point is not None


def test_coordinates_out_of_range_and_swapped() -> None:
    ring = [list(p) for p in SQUARE_CW]
    ring[2] = [200.0, 60.174]
    problem = only(polygon(ring))
    assert (problem.code, problem.field, problem.point) == (
        "out_of_range",
        "geometry.coordinates[0][2]",
        (200.0, 60.174),
    )
    # Tokyo written [lat, lon]: latitude 139.7 cannot be, but it fits as a longitude.
    problem = only({"type": "Point", "coordinates": [35.68, 139.69]}, 30)
    assert (problem.code, problem.field) == ("swapped_coordinates", "geometry.coordinates")
    assert "GeoJSON is [lon, lat]" in problem.reason


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("NaN", "not_finite"),
        ("Infinity", "not_finite"),
        ("true", "wrong_type"),
        ('"60.1"', "wrong_type"),
        ("null", "wrong_type"),
    ],
)
def test_non_numbers_in_positions(text: str, code: str) -> None:
    geometry = json.loads('{"type": "Point", "coordinates": [24.94, ' + text + "]}")
    problem = only(geometry, 30)
    assert (problem.code, problem.field) == (code, "geometry.coordinates")


def test_every_bad_position_is_listed_with_its_index() -> None:
    ring: list[Any] = [list(p) for p in SQUARE_CW]
    ring[1] = [24.937, math.nan]
    ring[3] = "x"
    ring.insert(2, [1, 2, 3, 4])
    fields = {(p.field, p.code) for p in problems_of(polygon(ring))}
    assert fields == {
        ("geometry.coordinates[0][1]", "not_finite"),
        ("geometry.coordinates[0][2]", "bad_position"),
        ("geometry.coordinates[0][4]", "wrong_type"),
    }


def test_too_few_points() -> None:
    problem = only(polygon([[24.937, 60.173], [24.938, 60.174], [24.937, 60.173]]))
    assert (problem.code, problem.field) == ("too_few_points", "geometry.coordinates[0]")
    assert only(polygon()).code == "too_few_points"


def test_too_many_vertices_is_refused_before_the_rest_is_examined() -> None:
    ring: list[Any] = [[24.937 + i * 1e-5, 60.173 + (i % 2) * 1e-5] for i in range(11)] + ["junk"]
    problem = only(polygon(ring), limits=GeometryLimits(max_vertices=10))
    assert (problem.code, problem.field) == ("too_many_vertices", "geometry.coordinates")


def test_absurd_areas() -> None:
    huge = [[24.0, 60.0], [24.1, 60.0], [24.1, 60.1], [24.0, 60.1], [24.0, 60.0]]  # ~62 km²
    problem = only(polygon(huge))
    assert (problem.code, problem.field) == ("area_too_large", "geometry")
    tiny = [[24.0, 60.0], [24.000001, 60.0], [24.000001, 60.000001], [24.0, 60.000001], [24.0, 60.0]]
    assert only(polygon(tiny)).code == "area_too_small"
    assert validate_fence_geometry(polygon(tiny), None, GeometryLimits(min_area_m2=0.001)).kind == "polygon"


@pytest.mark.parametrize(
    ("radius", "code"),
    [
        (None, "radius_required"),
        (3, "radius_out_of_range"),
        (6000.0, "radius_out_of_range"),
        (True, "wrong_type"),
        (math.inf, "not_finite"),
    ],
)
def test_circle_radius(radius: object, code: str) -> None:
    problem = only({"type": "Point", "coordinates": [24.94, 60.17]}, radius)
    assert (problem.code, problem.field) == (code, "radius_m")


def test_radius_on_a_polygon_is_refused() -> None:
    assert only(polygon(SQUARE_CW), 30).code == "unexpected_radius"


@pytest.mark.parametrize(
    ("geometry", "field"),
    [
        ([1, 2], "geometry"),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "geometry.type"),
        ({"type": ["Polygon"]}, "geometry.type"),
        ({"type": "Polygon", "coordinates": {"a": 1}}, "geometry.coordinates"),
        ({"type": "MultiPolygon", "coordinates": [SQUARE_CW]}, "geometry.coordinates[0][0][0]"),
    ],
)
def test_wrong_types(geometry: object, field: str) -> None:
    problem = problems_of(geometry)[0]
    assert (problem.code, problem.field) == ("wrong_type", field)


def test_missing_coordinates() -> None:
    assert only({"type": "Polygon"}).code == "missing"


def test_custom_field_prefix_and_problem_cap() -> None:
    ring = [[24.937, 500.0 + i] for i in range(200)]
    with pytest.raises(GeometryValidationError) as info:
        validate_fence_geometry(polygon(ring), None, LIMITS, field="features[3].geometry")
    errors = info.value.errors
    assert len(errors) == MAX_PROBLEMS + 1 and errors[-1].code == "too_many_problems"
    assert errors[0].field == "features[3].geometry.coordinates[0][0]"
    assert "features[3].geometry.coordinates[0][0]" in str(info.value)


def test_validate_lon_lat() -> None:
    assert validate_lon_lat(24.94, 60.17) == []
    assert [p.code for p in validate_lon_lat(100.0, 95.0)] == ["out_of_range"]
    assert [(p.field, p.code) for p in validate_lon_lat(181, -91)] == [
        ("lon", "out_of_range"),
        ("lat", "out_of_range"),
    ]
    assert [(p.field, p.code) for p in validate_lon_lat(60.17, 124.94)] == [("lat", "swapped_coordinates")]
    assert [(p.field, p.code) for p in validate_lon_lat("24", math.nan)] == [
        ("lon", "wrong_type"),
        ("lat", "not_finite"),
    ]
    assert [p.field for p in validate_lon_lat(10**400, 0, lon_field="fix.lon")] == ["fix.lon"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=30,
)
number = st.floats() | st.integers(min_value=-(10**400), max_value=10**400) | st.sampled_from([24.94, 60.17, 0])
position = st.lists(number, min_size=0, max_size=4) | json_values
ring = st.lists(position, max_size=8) | st.just(SQUARE_CW)
geometry_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "GeometryCollection"]) | json_values,
        "coordinates": st.one_of(
            position,
            st.lists(ring, max_size=3),
            st.lists(st.lists(ring, max_size=3), max_size=3),
            json_values,
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(geometry=json_values | geometry_like, radius=st.none() | number | json_values)
def test_any_json_gives_a_fence_or_a_validation_error(geometry: object, radius: object) -> None:
    try:
        fence = validate_fence_geometry(geometry, radius, LIMITS)
    except GeometryValidationError as exc:
        assert exc.errors and all(isinstance(p, GeometryProblem) and p.field is not None for p in exc.errors)
        json.dumps([p.point for p in exc.errors], allow_nan=False)  # points are JSON-safe for a 422
    else:
        assert shapely.is_valid(fence.geometry)


def test_a_polygon_across_the_antimeridian_is_refused_with_where_and_how_to_fix_it() -> None:
    # Drawn across the line near Fiji: in lon/lat (and in PostGIS) this box goes the long way round.
    across = [[179.999, -16.75], [-179.999, -16.75], [-179.999, -16.749], [179.999, -16.749], [179.999, -16.75]]
    problem = only(polygon(across))
    assert (problem.code, problem.field, problem.point) == (
        "crosses_antimeridian",
        "geometry.coordinates[0][1]",
        (-179.999, -16.75),
    )
    assert "crosses the antimeridian" in problem.reason and "split it into two polygons at ±180°" in problem.reason
    problem = only({"type": "MultiPolygon", "coordinates": [[SQUARE_CW], [across[::-1]]]})
    assert (problem.code, problem.field) == ("crosses_antimeridian", "geometry.coordinates[1][0][2]")


def test_a_polygon_split_at_the_antimeridian_and_circles_across_it_or_around_a_pole_are_accepted() -> None:
    west = [[179.999, -16.75], [180.0, -16.75], [180.0, -16.749], [179.999, -16.749], [179.999, -16.75]]
    east = [[-180.0, -16.75], [-179.999, -16.75], [-179.999, -16.749], [-180.0, -16.749], [-180.0, -16.75]]
    fence = validate_fence_geometry({"type": "MultiPolygon", "coordinates": [[west], [east]]}, None, LIMITS)
    assert isinstance(fence.geometry, MultiPolygon) and len(fence.geometry.geoms) == 2
    assert validate_fence_geometry({"type": "Point", "coordinates": [179.99, -16.75]}, 3000, LIMITS).kind == "circle"
    assert validate_fence_geometry({"type": "Point", "coordinates": [30.0, 89.99]}, 3000, LIMITS).kind == "circle"


def test_what_validation_accepts_across_the_antimeridian_the_index_matches() -> None:
    circle = validate_fence_geometry({"type": "Point", "coordinates": [179.99, -16.75]}, 3000, LIMITS)
    west = [[179.999, -16.75], [180.0, -16.75], [180.0, -16.749], [179.999, -16.749], [179.999, -16.75]]
    east = [[-180.0, -16.75], [-179.999, -16.75], [-179.999, -16.749], [-180.0, -16.749], [-180.0, -16.75]]
    split = validate_fence_geometry({"type": "MultiPolygon", "coordinates": [[west], [east]]}, None, LIMITS)
    index = FenceIndex.build([(1, 1, circle), (2, 2, split)])
    assert index.zones_at(-179.995, -16.75) == {(1, ZONE_BUILDING)}  # 1.6 km from the centre, across the line
    assert index.zones_at(-179.96, -16.75) == set()  # 5.3 km
    assert index.zones_at(-179.9995, -16.7495) == {(1, ZONE_BUILDING), (2, ZONE_BUILDING)}
    assert index.zones_at(179.9995, -16.7495) == {(1, ZONE_BUILDING), (2, ZONE_BUILDING)}

"""The spatial index: containment as shapely sees it in lon/lat, circles and distances in metres."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofences.domain import FenceSpec
from geofences.geodesy import haversine_m_array
from geofences.index import ZONE_APPROACH, ZONE_BUILDING, FenceIndex

LON0, LAT0 = 24.94, 60.17
M_PER_DEG_LAT = math.radians(1.0) * 6371008.8


def offset(metres_east: Any, metres_north: Any, lon: float = LON0, lat: float = LAT0) -> tuple[Any, Any]:
    """A point (or points) this many metres east and north of (lon, lat), on the local tangent plane."""
    return (
        lon + metres_east / (M_PER_DEG_LAT * math.cos(math.radians(lat))),
        lat + metres_north / M_PER_DEG_LAT,
    )


def square(east: float, north: float, side: float, lon: float = LON0, lat: float = LAT0) -> shapely.Polygon:
    corners = [(east, north), (east + side, north), (east + side, north + side), (east, north + side)]
    return shapely.Polygon([offset(x, y, lon, lat) for x, y in corners])


def star(
    centre: tuple[float, float], radius_m: float, jitter: list[float], factors: list[float]
) -> list[tuple[float, float]]:
    """A star-shaped ring around `centre`, so always simple: vertex i stays in sector i."""
    k = len(jitter)
    angles = [(i + 0.8 * j) * 2 * math.pi / k for i, j in enumerate(jitter)]
    return [
        offset(f * radius_m * math.cos(a), f * radius_m * math.sin(a), *centre)
        for a, f in zip(angles, factors, strict=True)
    ]


@st.composite
def polygons(draw: st.DrawFn) -> shapely.Polygon | shapely.MultiPolygon:
    def one(east: float) -> shapely.Polygon:
        k = draw(st.integers(3, 40))
        angles = draw(st.lists(st.floats(0, 1), min_size=k, max_size=k))
        factors = draw(st.lists(st.floats(0.5, 1), min_size=k, max_size=k))
        radius = draw(st.floats(10, 3000))
        centre = offset(east, 0)
        shell = star(centre, radius, angles, factors)
        if draw(st.booleans()):  # a courtyard: the same star shrunk, strictly inside
            return shapely.Polygon(shell, [star(centre, radius * 0.3, angles, factors)])
        return shapely.Polygon(shell)

    first = one(0.0)
    return shapely.MultiPolygon([first, one(7000.0)]) if draw(st.booleans()) else first


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(polygons(), st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=60))
def test_polygon_hits_are_exactly_shapelys_containment_in_lon_lat(
    polygon: shapely.Geometry, unit_points: list[tuple[float, float]]
) -> None:
    index = FenceIndex.build([(7, 1, FenceSpec("polygon", polygon))])
    x0, y0, x1, y1 = polygon.bounds
    lons = np.array([x0 + u * (x1 - x0) for u, _ in unit_points])
    lats = np.array([y0 + v * (y1 - y0) for _, v in unit_points])
    expected = shapely.contains_xy(polygon, lons, lats)
    clear_of_edge = shapely.distance(polygon.boundary, shapely.points(lons, lats)) > 1e-9
    hits = index.query_bulk(lons, lats)
    got = np.zeros(lons.size, dtype=bool)
    got[hits.fix_idx] = True
    assert (got == expected)[clear_of_edge].all()
    assert set(hits.fence_ids.tolist()) <= {7}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-1200, 1200), st.floats(-1200, 1200)), min_size=1, max_size=40))
def test_one_point_lookup_agrees_with_the_bulk_query(points: list[tuple[float, float]]) -> None:
    """`zones_at` (the single-fix path) and `query_bulk` give the same (fence, zone) pairs, approach zones too."""
    entries = [
        (1, 1, FenceSpec("polygon", square(0, 0, 300))),
        (2, 2, FenceSpec("polygon", square(400, -200, 120))),
        (3, 3, FenceSpec("circle", shapely.Point(offset(-500, 500)), 80.0)),
    ]
    index = FenceIndex.build(entries, approach_m={1: 60.0, 3: 40.0})
    lons, lats = offset(np.array([e for e, _ in points]), np.array([n for _, n in points]))
    hits = index.query_bulk(lons, lats)
    bulk: list[set[tuple[int, int]]] = [set() for _ in points]
    for i, fence_id, zone in zip(hits.fix_idx.tolist(), hits.fence_ids.tolist(), hits.zones.tolist(), strict=True):
        bulk[i].add((fence_id, zone))
    assert [index.zones_at(float(lon), float(lat)) for lon, lat in zip(lons, lats, strict=True)] == bulk


def test_many_fences_of_all_sizes_match_brute_force() -> None:
    """Fences from 5 m to 10 km across land in different grid levels; every one must still be found."""
    rng = np.random.default_rng(3)
    entries = []
    for fence_id in range(1, 1501):
        east, north = rng.uniform(-20_000, 20_000, 2)
        size = 5 * 10 ** rng.uniform(0, 3.3)
        if fence_id % 5 == 0:
            entries.append((fence_id, fence_id, FenceSpec("circle", shapely.Point(offset(east, north)), size / 2)))
        else:
            entries.append((fence_id, fence_id, FenceSpec("polygon", square(east, north, size))))
    index = FenceIndex.build(entries)
    lons, lats = offset(rng.uniform(-21_000, 21_000, 20_000), rng.uniform(-21_000, 21_000, 20_000))
    hits = index.query_bulk(lons, lats)
    got = set(zip(hits.fix_idx.tolist(), hits.fence_ids.tolist(), strict=True))

    polygon_entries = [(fence_id, spec) for fence_id, _, spec in entries if spec.kind == "polygon"]
    tree = shapely.STRtree([spec.geometry for _, spec in polygon_entries])
    point, polygon = tree.query(shapely.points(lons, lats), predicate="intersects")
    expected = {(int(i), polygon_entries[j][0]) for i, j in zip(point, polygon, strict=True)}
    for fence_id, _, spec in entries:
        if spec.kind == "circle":
            inside = haversine_m_array(spec.geometry.x, spec.geometry.y, lons, lats) <= (spec.radius_m or 0.0)
            expected |= {(int(i), fence_id) for i in np.flatnonzero(inside)}
    assert got == expected
    assert len(got) > 500  # the points really do land in fences


@pytest.mark.parametrize("lat", [0.0, 60.17, 69.5])
@pytest.mark.parametrize("bearing_deg", [0, 45, 90, 200, 270])
def test_circles_are_matched_by_metres_on_the_sphere_not_degrees(lat: float, bearing_deg: float) -> None:
    centre = (LON0, lat)
    # A second fence far south moves the reference latitude away from this circle's.
    index = FenceIndex.build(
        [
            (1, 1, FenceSpec("circle", shapely.Point(centre), 200.0)),
            (2, 2, FenceSpec("polygon", square(0, 0, 50))),
        ]
    )
    bearing = math.radians(bearing_deg)
    for metres, inside in ((199.0, True), (201.0, False)):
        lon, lat_ = offset(metres * math.sin(bearing), metres * math.cos(bearing), *centre)
        assert abs(haversine_m_array(centre[0], centre[1], lon, lat_) - metres) < 0.05
        assert [hit.fence_id for hit in index.query(lon, lat_)] == ([1] if inside else [])


def test_approach_zone_is_the_footprint_widened_by_metres() -> None:
    index = FenceIndex.build(
        [
            (1, 10, FenceSpec("polygon", square(0, 0, 100))),
            (2, 20, FenceSpec("circle", shapely.Point(offset(1000, 0)), 50.0)),
            (3, 30, FenceSpec("polygon", square(0, 1000, 100))),  # its place has no approach zone
        ],
        approach_m={10: 40.0, 20: 40.0},
    )

    def zones(east: float, north: float) -> set[tuple[int, str]]:
        return {(hit.fence_id, hit.zone) for hit in index.query(*offset(east, north))}

    assert zones(50, 50) == {(1, "building"), (1, "approach")}
    assert zones(135, 50) == {(1, "approach")}  # 35 m east of the wall
    assert zones(145, 50) == set()
    assert zones(128, 128) == {(1, "approach")}  # 28*sqrt(2) = 39.6 m from the corner: a round buffer
    assert zones(130, 130) == set()  # 42.4 m from the corner
    assert zones(1085, 0) == {(2, "approach")}  # 85 m from the centre: radius + approach = 90
    assert zones(1095, 0) == set()
    assert zones(135, 1050) == set()


def test_distance_is_in_local_metres_even_far_from_the_reference_latitude() -> None:
    north = (LON0, 69.5)  # ~1000 km north of the other fence: the reference lies in between
    index = FenceIndex.build(
        [
            (1, 1, FenceSpec("polygon", square(0, 0, 100, *north))),
            (2, 2, FenceSpec("polygon", square(0, 0, 100))),
            (3, 3, FenceSpec("circle", shapely.Point(north), 30.0)),
        ],
        approach_m={1: 20.0},
    )
    lon, lat = offset(150, 50, *north)  # 50 m east of fence 1's east wall
    far_lon, far_lat = offset(0, 200, *north)  # 200 m north of fence 3's centre
    got = index.distance_m([1, 1, 3, 99], [lon, lon, far_lon, lon], [lat, lat, far_lat, lat], [0, 1, 0, 0])
    assert got[0] == pytest.approx(50.0, rel=2e-3)
    assert got[1] == pytest.approx(30.0, rel=4e-3)  # the approach zone is 20 m nearer
    assert got[2] == pytest.approx(170.0, rel=1e-3)
    assert got[3] == math.inf  # unknown fence
    inside = index.distance_m([1, 2, 3], *offset(50, 50, *north), zones=[ZONE_APPROACH, ZONE_BUILDING, ZONE_BUILDING])
    assert inside[0] == 0.0 and inside[2] == pytest.approx(50 * math.sqrt(2) - 30, rel=1e-3)
    assert index.distance_m([2], [math.nan], [LAT0])[0] == math.inf
    assert index.distance_m([2], [LON0], [LAT0], [ZONE_APPROACH])[0] == math.inf  # place 2 has none


def test_fences_near_lists_building_zones_within_the_radius_nearest_first() -> None:
    index = FenceIndex.build(
        [
            (1, 1, FenceSpec("polygon", square(100, 0, 50))),
            (2, 2, FenceSpec("polygon", square(30, 0, 20))),
            (3, 3, FenceSpec("circle", shapely.Point(offset(0, 300)), 50.0)),
            (4, 4, FenceSpec("polygon", square(2000, 0, 50))),
        ],
        approach_m={1: 500.0},
    )
    near = index.fences_near(*offset(0, 10), 260.0)
    assert [(fence.fence_id, fence.zone) for fence, _ in near] == [
        (2, "building"),
        (1, "building"),
        (3, "building"),
    ]
    assert [round(d) for _, d in near] == [30, 100, 240]
    assert index.fences_near(math.nan, LAT0, 100.0) == []


def test_holes_and_multipolygon_parts() -> None:
    shell = square(0, 0, 300)
    courtyard = square(100, 100, 100)
    donut = shapely.Polygon(shell.exterior, [courtyard.exterior])
    index = FenceIndex.build([(1, 1, FenceSpec("polygon", shapely.MultiPolygon([donut, square(1000, 0, 50)])))])
    assert [hit.fence_id for hit in index.query(*offset(50, 50))] == [1]
    assert index.query(*offset(150, 150)) == []  # in the courtyard
    assert [hit.fence_id for hit in index.query(*offset(1025, 25))] == [1]
    assert index.distance_m([1], *offset(150, 150))[0] == pytest.approx(50.0, rel=1e-3)


def test_bad_coordinates_match_nothing_and_never_raise() -> None:
    index = FenceIndex.build([(1, 1, FenceSpec("polygon", square(-10, -10, 20)))])
    bad = [math.nan, math.inf, -math.inf]
    hits = index.query_bulk([LON0, *bad, LON0, LON0], [LAT0, LAT0, LAT0, LAT0, math.nan, math.inf])
    assert hits.fix_idx.tolist() == [0]
    assert index.query(math.nan, math.nan) == []
    assert index.query(1e308, -1e308) == []


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # shapely, building the NaN ring
def test_unusable_fences_are_skipped_not_fatal() -> None:
    good = FenceSpec("polygon", square(0, 0, 10))
    index = FenceIndex.build(
        [
            (1, 1, good),
            (2, 1, FenceSpec("polygon", shapely.Polygon())),
            (3, 1, FenceSpec("circle", shapely.Point(LON0, LAT0), None)),
            (4, 1, FenceSpec("circle", shapely.Point(LON0, LAT0), -5.0)),
            (5, 1, FenceSpec("polygon", shapely.Point(LON0, LAT0))),
            (6, 1, FenceSpec("polygon", shapely.Polygon([(0, 0), (math.nan, 1), (1, 1)]))),
        ]
    )
    assert len(index) == 1 and index.skipped == (2, 3, 4, 5, 6)
    assert [hit.fence_id for hit in index.query(*offset(5, 5))] == [1]
    with pytest.raises(ValueError, match="twice"):
        FenceIndex.build([(1, 1, good), (1, 2, good)])


def test_an_empty_index_answers_everything() -> None:
    index = FenceIndex.build([], version=4)
    assert len(index) == 0 and index.version == 4
    assert index.query(LON0, LAT0) == []
    assert index.query_bulk([LON0], [LAT0]).fix_idx.size == 0
    assert index.distance_m([1], [LON0], [LAT0])[0] == math.inf
    assert index.fences_near(LON0, LAT0, 1000.0) == []


def test_single_query_describes_each_zone() -> None:
    index = FenceIndex.build(
        [(5, 50, FenceSpec("circle", shapely.Point(LON0, LAT0), 100.0))], approach_m={50: 10.0}, version=2
    )
    hits = index.query(LON0, LAT0)
    assert [(h.fence_id, h.place_id, h.kind, h.zone) for h in hits] == [
        (5, 50, "circle", "building"),
        (5, 50, "circle", "approach"),
    ]

"""The index at its edges: points exactly on a boundary, and fences at longitude ±180° and at the poles.

Boundary points use coordinates on a grid of binary fractions (multiples of 2**-10 degrees around
24.9375, 60.1875), so a vertex, an edge midpoint or a quarter point is exactly representable and
exactly on the boundary in lon/lat, where shapely's `intersects` (PostGIS `ST_Intersects`) says inside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.domain import FenceSpec
from geofences.geodesy import haversine_m_array
from geofences.index import ZONE_APPROACH, ZONE_BUILDING, FenceEntry, FenceIndex

LON0, LAT0 = 24.9375, 60.1875
STEP = 2.0**-10  # ~54 m east, ~109 m north


def grid(u: float, v: float, lon: float = LON0, lat: float = LAT0) -> tuple[float, float]:
    """Grid units -> lon/lat; exact for multiples of 1/64 of a unit."""
    return lon + u * STEP, lat + v * STEP


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(haversine_m_array(np.array([a[0]]), np.array([a[1]]), np.array([b[0]]), np.array([b[1]]))[0])


def every_path(index: FenceIndex, points: list[tuple[float, float]]) -> list[set[tuple[int, int]]]:
    """(fence, zone) per point from `query_bulk`, after checking that `zones_at` and `query` say the same."""
    lons, lats = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    hits = index.query_bulk(lons, lats)
    bulk: list[set[tuple[int, int]]] = [set() for _ in points]
    for i, fence_id, zone in zip(hits.fix_idx.tolist(), hits.fence_ids.tolist(), hits.zones.tolist(), strict=True):
        assert (fence_id, zone) not in bulk[i], "a zone listed twice for one fix"
        bulk[i].add((fence_id, zone))
    assert np.all(np.diff(hits.fix_idx) >= 0)
    for (lon, lat), expected in zip(points, bulk, strict=True):
        assert index.zones_at(lon, lat) == expected
        described = index.query(lon, lat)
        assert len(described) == len(expected)
        assert {(hit.fence_id, ZONE_BUILDING if hit.zone == "building" else ZONE_APPROACH) for hit in described} == (
            expected
        )
    return bulk


# An L-ish shell with horizontal, vertical and two sloped edges, and a square hole.
SHELL = [(0, 0), (8, 0), (8, 2), (6, 6), (4, 8), (0, 8)]
HOLE = [(2, 2), (4, 2), (4, 4), (2, 4)]
ON_BOUNDARY = [
    *SHELL,  # vertices (the bottom-left, top-left ones are corners of horizontal + vertical edges)
    (4, 0),  # horizontal bottom edge
    (2, 8),  # horizontal top edge (the crossing test alone calls this one outside)
    (0, 5),  # vertical left edge
    (8, 1),  # vertical right edge (and this one)
    (7, 4),  # sloped edge (8, 2) -> (6, 6), its midpoint
    (7.5, 3),  # ... a quarter point
    (5, 7),  # sloped edge (6, 6) -> (4, 8)
    (4.5, 7.5),
    *HOLE,  # the hole's vertices and edges: the hole's ring is the polygon's boundary too
    (3, 2),
    (4, 3),
    (3, 4),
    (2, 3.5),
]
OFF_BOUNDARY = {  # a 1/64 of a unit (~0.8 m) beside some boundary points: (point, inside?)
    (2, 8 + 1 / 64): False,
    (8 + 1 / 64, 1): False,
    (7 + 1 / 64, 4): False,
    (5 - 1 / 64, 7): True,
    (3, 4 - 1 / 64): False,  # in the hole
    (3, 4 + 1 / 64): True,
    (2 - 1 / 64, 3): True,
    (4, 0 - 1 / 64): False,
}


@pytest.mark.parametrize("far_fence", [False, True], ids=["alone", "with a fence 2 degrees away"])
def test_points_exactly_on_the_boundary_are_inside_on_every_path(far_fence: bool) -> None:
    polygon = shapely.Polygon([grid(*p) for p in SHELL], [[grid(*p) for p in HOLE]])
    entries: list[FenceEntry] = [(1, 1, FenceSpec("polygon", polygon))]
    if far_fence:  # moves the projection's reference off the polygon: its coordinates round differently
        entries.append((2, 2, FenceSpec("polygon", shapely.box(*grid(2048, -1024), *grid(2050, -1022)))))
    index = FenceIndex.build(entries, approach_m={1: 20.0})
    points = [grid(*p) for p in ON_BOUNDARY]
    assert shapely.intersects_xy(polygon, *np.array(points).T).all()
    assert not shapely.contains_xy(polygon, *np.array(points).T).any()  # on the boundary, not in the interior
    assert every_path(index, points) == [{(1, ZONE_BUILDING), (1, ZONE_APPROACH)}] * len(points)
    lons, lats = np.array(points).T
    assert index.distance_m(np.ones(len(points)), lons, lats).tolist() == [0.0] * len(points)
    assert index.distance_m(np.ones(len(points)), lons, lats, np.full(len(points), ZONE_APPROACH)).max() == 0.0
    for point in points:
        near = index.fences_near(*point, 10.0)
        assert (near[0][0].fence_id, near[0][1]) == (1, 0.0)

    off = [grid(*p) for p in OFF_BOUNDARY]
    assert shapely.intersects_xy(polygon, *np.array(off).T).tolist() == list(OFF_BOUNDARY.values())
    buildings = [(1, ZONE_BUILDING) in zones for zones in every_path(index, off)]
    assert buildings == list(OFF_BOUNDARY.values())
    distance = index.distance_m(np.ones(len(off)), *np.array(off).T)
    assert ((distance > 0.5) == ~np.array(list(OFF_BOUNDARY.values()))).all()


def test_a_point_exactly_radius_metres_from_a_circle_centre_is_inside() -> None:
    centre = grid(0, 0)
    for point in (grid(2, 1), grid(-1.5, 0.25), grid(0, -3), grid(4, 0)):
        radius = metres(centre, point)
        circle = FenceIndex.build([(1, 1, FenceSpec("circle", shapely.Point(centre), radius))])
        assert every_path(circle, [point]) == [{(1, ZONE_BUILDING)}]
        assert circle.distance_m([1], [point[0]], [point[1]])[0] == 0.0
        smaller = FenceIndex.build([(1, 1, FenceSpec("circle", shapely.Point(centre), radius - 1e-6))])
        assert every_path(smaller, [point]) == [set()]


@st.composite
def grid_polygons(draw: st.DrawFn) -> shapely.Polygon:
    """A rectangle or a triangle with corners on the integer grid (in grid units of 2**-10 degrees)."""
    coord = st.integers(-12, 12)
    if draw(st.booleans()):
        u0, u1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
        v0, v1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
        corners = [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
    else:
        corners = draw(st.lists(st.tuples(coord, coord), min_size=3, max_size=3, unique=True))
        (a, b), (c, d), (e, f) = corners
        if (c - a) * (f - b) - (d - b) * (e - a) == 0:  # collinear: no polygon
            corners = [(a, b), (a + 1, b), (a, b + 1)]
    return shapely.Polygon([grid(u, v) for u, v in corners])


@settings(max_examples=150, deadline=None)
@given(
    grid_polygons(),
    st.lists(st.tuples(st.integers(-52, 52), st.integers(-52, 52)), max_size=30),
    st.booleans(),
)
def test_boundary_points_of_grid_polygons_are_inside_as_shapely_intersects_says(
    polygon: shapely.Polygon, quarter_points: list[tuple[int, int]], far_fence: bool
) -> None:
    """Vertices, edge midpoints and quarter points (all exact) are inside; grid points anywhere agree with
    `intersects` too (a grid point off an edge is centimetres off it, never within rounding of it)."""
    entries: list[FenceEntry] = [(7, 1, FenceSpec("polygon", polygon))]
    if far_fence:
        entries.append((8, 2, FenceSpec("circle", shapely.Point(grid(-3000, 700)), 50.0)))
    index = FenceIndex.build(entries)
    ring = np.array(polygon.exterior.coords)
    a, b = ring[:-1], ring[1:]
    on_edges = np.concatenate([a, (a + b) / 2, (3 * a + b) / 4, (a + 3 * b) / 4])
    anywhere = np.array([grid(u / 4, v / 4) for u, v in quarter_points]).reshape(-1, 2)
    points = np.concatenate([on_edges, anywhere])
    expected = shapely.intersects_xy(polygon, points[:, 0], points[:, 1])
    assert expected[: len(on_edges)].all()
    hits = index.query_bulk(points[:, 0], points[:, 1])
    got = np.zeros(len(points), dtype=bool)
    got[hits.fix_idx[hits.fence_ids == 7]] = True
    assert got.tolist() == expected.tolist()
    assert [(7, ZONE_BUILDING) in index.zones_at(lon, lat) for lon, lat in points.tolist()] == expected.tolist()
    distance = index.distance_m(np.full(len(points), 7), points[:, 0], points[:, 1])
    assert ((distance == 0.0) == expected).all()


# ---------------------------------------------------------------- longitude ±180°

FIJI_LAT = -16.75


def across_the_line_index() -> tuple[FenceIndex, dict[int, FenceSpec]]:
    """Circles whose discs cross ±180° from either side, a polygon drawn up to the line on each side
    with an approach zone, and an ordinary fence half the world away (the frame's reference lies between)."""
    specs = {
        1: FenceSpec("circle", shapely.Point(179.99, FIJI_LAT), 3000.0),
        2: FenceSpec("circle", shapely.Point(-179.985, FIJI_LAT + 0.1), 2500.0),
        3: FenceSpec(
            "polygon",
            shapely.MultiPolygon(
                [
                    shapely.box(179.995, FIJI_LAT - 0.1, 180.0, FIJI_LAT - 0.095),
                    shapely.box(-180.0, FIJI_LAT - 0.1, -179.996, FIJI_LAT - 0.095),
                ]
            ),
        ),
        4: FenceSpec("polygon", shapely.box(179.99, FIJI_LAT - 0.2, 179.998, FIJI_LAT - 0.195)),
        5: FenceSpec("circle", shapely.Point(24.94, 60.17), 100.0),
    }
    index = FenceIndex.build([(k, k, spec) for k, spec in specs.items()], approach_m={3: 150.0, 4: 400.0})
    return index, specs


def expected_zones(specs: dict[int, FenceSpec], lon: float, lat: float) -> set[tuple[int, int]]:
    """By brute force: circles by haversine; polygons by shapely on the point's own side of the line and
    on the other (parts on both sides stand for one place), approach zones by metres on the sphere."""
    out = set()
    sides = [(lon, lat), (lon + 360.0, lat), (lon - 360.0, lat)]
    for fence_id, spec in specs.items():
        if spec.kind == "circle":
            distance = metres((spec.geometry.x, spec.geometry.y), (lon, lat)) - (spec.radius_m or 0.0)
        else:
            distance = min(_polygon_metres(spec.geometry, side) for side in sides)
        if distance <= 0:
            out.add((fence_id, ZONE_BUILDING))
        approach = {3: 150.0, 4: 400.0}.get(fence_id)
        if approach is not None and distance <= approach:
            out.add((fence_id, ZONE_APPROACH))
    return out


def _polygon_metres(geometry: shapely.Geometry, point: tuple[float, float]) -> float:
    """Metres from a point to a small polygon, in the polygon's local equirectangular frame."""
    if shapely.intersects_xy(geometry, *point):
        return 0.0
    nearest = shapely.shortest_line(geometry, shapely.Point(point)).coords[0]
    return metres(nearest, point)


def test_circles_and_approach_zones_match_across_the_antimeridian_as_on_the_sphere() -> None:
    index, specs = across_the_line_index()
    rng = np.random.default_rng(5)
    lons = np.concatenate([rng.uniform(179.94, 180.0, 1500), rng.uniform(-180.0, -179.94, 1500), [180.0, -180.0]])
    lats = np.concatenate([rng.uniform(FIJI_LAT - 0.25, FIJI_LAT + 0.15, 3000), [FIJI_LAT, FIJI_LAT]])
    # Fence 3 (a polygon split at the line, as validation asks) from both sides and on the line itself.
    lons = np.concatenate([lons, [179.997, -179.998, 180.0, -180.0, 179.994, -179.995]])
    lats = np.concatenate([lats, np.full(6, FIJI_LAT - 0.0975)])
    points = list(zip(lons.tolist(), lats.tolist(), strict=True))
    got = every_path(index, points)
    # Metres on the sphere vs the index's local frames: allow a metre's disagreement at the zones' edges.
    exact = [
        expected == mine
        for (lon, lat), expected, mine in zip(points, (expected_zones(specs, *p) for p in points), got, strict=True)
    ]
    disputed = [p for p, ok in zip(points, exact, strict=True) if not ok]
    for lon, lat in disputed:
        margin = {fence_id: _zone_margin(specs[fence_id], fence_id, lon, lat) for fence_id in specs}
        assert min(margin.values()) < 1.0, (lon, lat, margin)
    assert len(disputed) < 10, disputed
    east = {fence_id for zones, lon in zip(got, lons.tolist(), strict=True) for fence_id, _ in zones if lon < 0}
    west = {fence_id for zones, lon in zip(got, lons.tolist(), strict=True) for fence_id, _ in zones if lon > 0}
    assert {1, 4} <= east and 2 in west  # fences are matched across the line from either side
    assert {(1, ZONE_BUILDING)} <= got[3000] and {(1, ZONE_BUILDING)} <= got[3001]  # 180 and -180: one meridian
    assert got[-6:] == [{(3, ZONE_BUILDING), (3, ZONE_APPROACH)}] * 4 + [{(3, ZONE_APPROACH)}] * 2


def _zone_margin(spec: FenceSpec, fence_id: int, lon: float, lat: float) -> float:
    """Metres from the point to the nearest boundary of the fence's zones (outside the building)."""
    if spec.kind == "circle":
        distance = metres((spec.geometry.x, spec.geometry.y), (lon, lat)) - (spec.radius_m or 0.0)
    else:
        distance = min(_polygon_metres(spec.geometry, (lon + turn, lat)) for turn in (0.0, 360.0, -360.0))
    approach = {3: 150.0, 4: 400.0}.get(fence_id)
    return min(abs(distance), math.inf if approach is None else abs(distance - approach))


def test_distances_and_nearby_fences_across_the_antimeridian() -> None:
    index, _ = across_the_line_index()
    east = (-179.95, FIJI_LAT)  # 4.3 km east of circle 1's centre, across the line
    got = index.distance_m([1, 2, 4, 3, 5], *([c] * 5 for c in east))
    assert got[0] == pytest.approx(metres((179.99, FIJI_LAT), east) - 3000.0, abs=0.01)
    assert got[1] == pytest.approx(metres((-179.985, FIJI_LAT + 0.1), east) - 2500.0, abs=0.01)
    west_of_polygon_4 = (179.98, FIJI_LAT - 0.1975)  # 0.01 degrees west of fence 4
    assert index.distance_m([4], *west_of_polygon_4)[0] == pytest.approx(
        metres((179.99, FIJI_LAT - 0.1975), west_of_polygon_4), rel=1e-3
    )
    just_across = (-179.999, FIJI_LAT - 0.1975)  # 0.003 degrees east of fence 4's east side, across the line
    assert index.distance_m([4], *just_across)[0] == pytest.approx(
        metres((179.998, FIJI_LAT - 0.1975), just_across), rel=1e-3
    )
    assert index.distance_m([4], *just_across, [ZONE_APPROACH])[0] == 0.0  # its approach zone is 400 m
    assert got[4] > 1e6 and math.isfinite(got[4])

    for lon, lat in ((-179.999, FIJI_LAT - 0.0975), (179.999, FIJI_LAT - 0.15), (-179.97, FIJI_LAT)):
        every = dict(zip(range(1, 6), index.distance_m(range(1, 6), lon, lat).tolist(), strict=True))
        for radius in (100.0, 2000.0, 12000.0):
            near = index.fences_near(lon, lat, radius)
            assert [(fence.fence_id, d) for fence, d in near] == sorted(
                ((k, d) for k, d in every.items() if d <= radius), key=lambda kd: (kd[1], kd[0])
            )
    near = index.fences_near(-179.999, FIJI_LAT - 0.0975, 12000.0)
    # Standing in 3's part east of the line; 1 and 4 lie west of it (2 is 19 km away, north).
    assert [fence.fence_id for fence, _ in near] == [3, 1, 4] and near[0][1] == 0.0


@pytest.mark.parametrize("centre", [(30.0, 89.99), (0.0, 90.0), (-150.0, -89.98), (179.999, 89.995)])
def test_a_circle_around_a_pole_matches_on_every_meridian_and_once(centre: tuple[float, float]) -> None:
    radius = 3000.0
    index = FenceIndex.build(
        [
            (1, 1, FenceSpec("circle", shapely.Point(centre), radius)),
            (2, 2, FenceSpec("circle", shapely.Point(24.9, 60.1), 50.0)),
        ],
        approach_m={1: 500.0},
    )
    pole = 90.0 if centre[1] > 0 else -90.0
    lons = np.linspace(-180.0, 180.0, 73)
    points = [(lon, pole - math.copysign(d, pole)) for lon in lons.tolist() for d in (0.0, 0.005, 0.02, 0.04, 0.06)]
    got = every_path(index, points)
    for (lon, lat), zones in zip(points, got, strict=True):
        distance = metres(centre, (lon, lat))
        if abs(distance - radius) > 0.01 and abs(distance - radius - 500.0) > 0.01:
            assert ((1, ZONE_BUILDING) in zones) == (distance <= radius), (lon, lat, distance)
            assert ((1, ZONE_APPROACH) in zones) == (distance <= radius + 500.0), (lon, lat, distance)
        assert index.distance_m([1], lon, lat)[0] == pytest.approx(max(distance - radius, 0.0), abs=1e-6)
    assert sum((1, ZONE_BUILDING) in zones for zones in got) > 73  # the pole and a ring round it

"""Validation of untrusted GeoJSON fence geometry that says what is wrong and where.

Pure: no I/O. For any JSON value the only exception leaving `validate_fence_geometry` is
GeometryValidationError, so an API handler can turn it straight into a 422 listing each problem.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import shapely
from shapely.errors import ShapelyError
from shapely.geometry import LinearRing, MultiPolygon, Point, Polygon

from geofences.domain import FenceSpec, GeometryLimits
from geofences.geodesy import EARTH_RADIUS_M

# A request with thousands of broken positions should get a readable answer, not a megabyte.
MAX_PROBLEMS = 50
# Mean Earth radius (IUGG); the spherical area is within ~0.5 % of the ellipsoid, plenty for limits.
# is_valid_reason prints the location with ~10 significant digits, so match rings loosely.
_LOCATION_TOLERANCE_DEG = 1e-6

_Ring = list[tuple[float, float]]
_PolygonRings = list[_Ring]


@dataclass(frozen=True, slots=True)
class GeometryProblem:
    field: str  # dotted/indexed path, e.g. "geometry.coordinates[0][3]"
    reason: str  # a sentence for humans
    code: str  # stable machine code, e.g. "ring_not_closed"
    point: tuple[float, float] | None = None  # [lon, lat] where it happens, when known


class GeometryValidationError(ValueError):
    def __init__(self, errors: list[GeometryProblem]) -> None:
        self.errors = errors
        shown = "; ".join(f"{p.field}: {p.reason}" for p in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"invalid geometry: {shown}{more}")


class _Problems:
    def __init__(self) -> None:
        self.items: list[GeometryProblem] = []
        self.omitted = 0

    def add(self, field: str, reason: str, code: str, point: tuple[float, float] | None = None) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(GeometryProblem(field, reason, code, point))
        else:
            self.omitted += 1

    def raise_if_any(self) -> None:
        if self.omitted:
            self.items.append(GeometryProblem("", f"{self.omitted} further problems not listed", "too_many_problems"))
            self.omitted = 0
        if self.items:
            raise GeometryValidationError(self.items)


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_array(value: object) -> bool:
    return isinstance(value, list | tuple)


def _number(value: object, field: str, what: str, problems: _Problems) -> float | None:
    # bool is an int subclass in Python, but `true` is not a coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(field, f"{what} must be a number, got {json_type(value)}", "wrong_type")
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # ints beyond float range: far out of any range, not "not finite"
            return math.inf if value > 0 else -math.inf
    if math.isnan(value) or math.isinf(value):
        problems.add(field, f"{what} must be a finite number, got {value}", "not_finite")
        return None
    return value


def _finite_point(x: float, y: float) -> tuple[float, float] | None:
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def _range_ok(x: float, y: float, lon_field: str, lat_field: str, problems: _Problems, *, geojson: bool) -> bool:
    lon_ok = -180.0 <= x <= 180.0
    lat_ok = -90.0 <= y <= 90.0
    if lon_ok and lat_ok:
        return True
    point = _finite_point(x, y)
    if not lat_ok and -90.0 <= x <= 90.0 and -180.0 <= y <= 180.0:
        hint = "looks like [lat, lon]; GeoJSON is [lon, lat]" if geojson else "lat and lon look swapped"
        problems.add(lat_field, f"latitude {y:g} is outside [-90, 90]; {hint}", "swapped_coordinates", point)
        return False
    if not lon_ok:
        problems.add(lon_field, f"longitude {x:g} is outside [-180, 180]", "out_of_range", point)
    if not lat_ok:
        problems.add(lat_field, f"latitude {y:g} is outside [-90, 90]", "out_of_range", point)
    return False


def validate_lon_lat(lon: object, lat: object, lon_field: str = "lon", lat_field: str = "lat") -> list[GeometryProblem]:
    """Problems with one WGS 84 location (e.g. a device fix); an empty list means it is fine."""
    problems = _Problems()
    x = _number(lon, lon_field, "longitude", problems)
    y = _number(lat, lat_field, "latitude", problems)
    if x is not None and y is not None:
        _range_ok(x, y, lon_field, lat_field, problems, geojson=False)
    return problems.items


def _position(value: object, path: str, problems: _Problems) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple):
        problems.add(path, f"a position must be an array [lon, lat], got {json_type(value)}", "wrong_type")
        return None
    if len(value) not in (2, 3):
        problems.add(path, f"a position must have 2 or 3 numbers [lon, lat(, alt)], got {len(value)}", "bad_position")
        return None
    x = _number(value[0], path, "longitude", problems)
    y = _number(value[1], path, "latitude", problems)
    # Altitude is checked, then dropped: fences are 2D.
    z_ok = len(value) == 2 or _number(value[2], path, "altitude", problems) is not None
    if x is None or y is None or not z_ok:
        return None
    return (x, y) if _range_ok(x, y, path, path, problems, geojson=True) else None


def _ring(value: object, path: str, problems: _Problems) -> _Ring | None:
    if not isinstance(value, list | tuple):
        problems.add(path, f"a linear ring must be an array of positions, got {json_type(value)}", "wrong_type")
        return None
    positions = [_position(v, f"{path}[{k}]", problems) for k, v in enumerate(value)]
    ring = [p for p in positions if p is not None]
    if len(ring) != len(positions):
        return None
    if len(ring) < 4:
        problems.add(
            path,
            f"a ring needs at least 4 positions (3 corners and the first repeated), got {len(ring)}",
            "too_few_points",
            ring[0] if ring else None,
        )
    if len(ring) >= 2 and ring[0] != ring[-1]:
        problems.add(
            path,
            f"ring is not closed: it ends at {list(ring[-1])} but starts at {list(ring[0])}; "
            "repeat the first position at the end",
            "ring_not_closed",
            ring[-1],
        )
        return None
    for k, ((x1, _), (x2, _)) in enumerate(itertools.pairwise(ring), start=1):
        # Edges are straight in lon/lat (RFC 7946, PostGIS geometry): 179.9 -> -179.9 goes the long way
        # round the globe, never the 0.2° across the line the drawer meant. Refused rather than guessed.
        if abs(x2 - x1) > 180.0:
            problems.add(
                f"{path}[{k}]",
                f"edge from {list(ring[k - 1])} to {list(ring[k])} spans {abs(x2 - x1):g}° of longitude, more "
                "than 180°: the polygon crosses the antimeridian (±180° longitude), which is not supported; "
                "split it into two polygons at ±180° (a MultiPolygon)",
                "crosses_antimeridian",
                ring[k],
            )
            return None
    return ring if len(ring) >= 4 else None


def _polygon(value: object, path: str, problems: _Problems) -> _PolygonRings | None:
    if not isinstance(value, list | tuple):
        problems.add(path, f"polygon coordinates must be an array of rings, got {json_type(value)}", "wrong_type")
        return None
    if not value:
        problems.add(path, "a polygon needs at least its exterior ring", "too_few_points")
        return None
    rings = [_ring(r, f"{path}[{i}]", problems) for i, r in enumerate(value)]
    good = [r for r in rings if r is not None]
    return good if len(good) == len(rings) else None


def _vertex_count(gtype: str, coords: object) -> int:
    """Counted before anything else so a huge geometry is refused without walking it."""
    polygons = [coords] if gtype == "Polygon" else coords
    if not _is_array(polygons):
        return 0
    assert isinstance(polygons, list | tuple)
    return sum(
        len(ring)
        for poly in polygons
        if isinstance(poly, list | tuple)
        for ring in poly
        if isinstance(ring, list | tuple)
    )


def _ring_area_m2(coords: Sequence[tuple[float, float]]) -> float:
    # Spherical ring area (Chamberlain & Duquette, as in geojson-area): exact enough for fences.
    total = 0.0
    for (x1, y1), (x2, y2) in itertools.pairwise(coords):
        total += math.radians(x2 - x1) * (2.0 + math.sin(math.radians(y1)) + math.sin(math.radians(y2)))
    return abs(total) * EARTH_RADIUS_M * EARTH_RADIUS_M / 2.0


def geodesic_area_m2(geometry: Polygon | MultiPolygon) -> float:
    """Area on the sphere in square metres of a lon/lat Polygon or MultiPolygon."""
    polygons = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    area = 0.0
    for poly in polygons:
        area += _ring_area_m2(list(poly.exterior.coords))
        area -= sum(_ring_area_m2(list(hole.coords)) for hole in poly.interiors)
    return max(area, 0.0)


_VALIDITY_CODES = {
    "Self-intersection": ("self_intersection", "rings cross or overlap"),
    "Ring Self-intersection": ("ring_self_intersection", "a ring touches itself"),
    "Hole lies outside shell": ("hole_outside_shell", "a hole lies outside its exterior ring"),
    "Holes are nested": ("nested_holes", "a hole lies inside another hole"),
    "Interior is disconnected": ("disconnected_interior", "holes cut the polygon into pieces"),
    "Nested shells": ("nested_shells", "a polygon lies inside another polygon"),
    "Duplicate Rings": ("duplicate_rings", "two rings are identical"),
    "Too few points in geometry component": ("too_few_points", "a ring collapses to fewer than 3 points"),
    "Repeated Point": ("repeated_point", "a ring repeats a point"),
}
_REASON_RE = re.compile(r"^(?P<what>[^\[]*?)\s*(?:\[(?P<x>\S+)\s+(?P<y>\S+)(?:\s+\S+)?\])?$")


def _validity_problem(
    geom: Polygon | MultiPolygon, polygons: list[_PolygonRings], field: str, problems: _Problems
) -> None:
    reason = shapely.is_valid_reason(geom)
    if reason == "Valid Geometry":
        return
    match = _REASON_RE.match(reason)
    what = match.group("what") if match else reason
    code, text = _VALIDITY_CODES.get(what, ("invalid_geometry", what.lower() or "geometry is invalid"))
    point: tuple[float, float] | None = None
    if match and match.group("x"):
        try:
            point = (float(match.group("x")), float(match.group("y")))
        except ValueError:
            point = None
    multi = isinstance(geom, MultiPolygon)
    hits: list[tuple[int, str]] = []
    if point is not None:
        where = Point(point)
        for p, rings in enumerate(polygons):
            for r, ring in enumerate(rings):
                if LinearRing(ring).distance(where) <= _LOCATION_TOLERANCE_DEG:
                    hits.append((p, f"{field}.coordinates[{p}][{r}]" if multi else f"{field}.coordinates[{r}]"))
    target = hits[0][1] if hits else f"{field}.coordinates"
    if code == "self_intersection" and len({p for p, _ in hits}) > 1:
        code, text = "overlapping_polygons", "polygons of the MultiPolygon overlap"
        target = f"{field}.coordinates[{hits[0][0]}]"
    elif len(hits) > 1:
        text += " (" + ", ".join(path for _, path in hits) + ")"
    at = f" at [{point[0]:.7f}, {point[1]:.7f}]" if point else ""
    problems.add(target, f"{text}{at}", code, point)


def _radius(radius_m: object, radius_field: str, limits: GeometryLimits, problems: _Problems) -> float | None:
    if radius_m is None:
        problems.add(radius_field, "a Point fence is a circle and needs radius_m in metres", "radius_required")
        return None
    radius = _number(radius_m, radius_field, "radius_m", problems)
    if radius is None:
        return None
    if not limits.min_radius_m <= radius <= limits.max_radius_m:
        problems.add(
            radius_field,
            f"radius {radius:g} m is outside [{limits.min_radius_m:g}, {limits.max_radius_m:g}] m",
            "radius_out_of_range",
        )
        return None
    return radius


def validate_fence_geometry(
    geometry: object,
    radius_m: object | None,
    limits: GeometryLimits,
    field: str = "geometry",
    radius_field: str = "radius_m",
) -> FenceSpec:
    """Turn an untrusted GeoJSON geometry (Polygon, MultiPolygon, or Point + radius) into a fence.

    Polygons come back oriented per RFC 7946 (exterior counter-clockwise) and without Z. A polygon may
    not cross the antimeridian (an edge spanning more than 180° of longitude; split it at ±180°); a
    circle may, and may enclose a pole: the index matches circles by distance on the sphere.
    """
    problems = _Problems()
    if not isinstance(geometry, dict):
        problems.add(field, f"geometry must be a GeoJSON object, got {json_type(geometry)}", "wrong_type")
        problems.raise_if_any()
    assert isinstance(geometry, dict)
    gtype = geometry.get("type")
    if gtype not in ("Polygon", "MultiPolygon", "Point"):
        shown = repr(gtype) if isinstance(gtype, str) else json_type(gtype)
        problems.add(
            f"{field}.type",
            f"geometry type {shown} is not a fence; use Polygon, MultiPolygon or Point with radius_m",
            "wrong_type",
        )
        problems.raise_if_any()
    if "coordinates" not in geometry:
        problems.add(f"{field}.coordinates", "coordinates are missing", "missing")
        problems.raise_if_any()
    coords = geometry["coordinates"]
    path = f"{field}.coordinates"

    if gtype == "Point":
        centre = _position(coords, path, problems)
        radius = _radius(radius_m, radius_field, limits, problems)
        problems.raise_if_any()
        assert centre is not None and radius is not None
        return FenceSpec(kind="circle", geometry=Point(centre), radius_m=radius)

    if radius_m is not None:
        problems.add(radius_field, f"radius_m only applies to a Point, not a {gtype}", "unexpected_radius")
    vertices = _vertex_count(str(gtype), coords)
    if vertices > limits.max_vertices:
        problems.add(path, f"{vertices} vertices, more than the limit {limits.max_vertices}", "too_many_vertices")
        problems.raise_if_any()

    polygons: list[_PolygonRings] = []
    if gtype == "Polygon":
        rings = _polygon(coords, path, problems)
        polygons = [rings] if rings is not None else []
    elif not isinstance(coords, list | tuple):
        problems.add(
            path,
            f"MultiPolygon coordinates must be an array of polygons, got {json_type(coords)}",
            "wrong_type",
        )
    elif not coords:
        problems.add(path, "a MultiPolygon needs at least one polygon", "too_few_points")
    else:
        parts = [_polygon(c, f"{path}[{p}]", problems) for p, c in enumerate(coords)]
        polygons = [p for p in parts if p is not None]
    problems.raise_if_any()

    try:
        shapes = [Polygon(rings[0], rings[1:]) for rings in polygons]
        geom: Polygon | MultiPolygon = shapes[0] if gtype == "Polygon" else MultiPolygon(shapes)
        _validity_problem(geom, polygons, field, problems)
        if not problems.items:
            geom = shapely.orient_polygons(geom, exterior_cw=False)
            area = geodesic_area_m2(geom)
            where = geom.representative_point()
    except (ShapelyError, ValueError, TypeError) as exc:  # belt and braces: never a 500
        problems.add(field, f"geometry could not be built: {exc}", "invalid_geometry")
    problems.raise_if_any()
    point = (where.x, where.y)
    if area > limits.max_area_m2:
        problems.add(field, f"area {area:,.0f} m² is larger than {limits.max_area_m2:,.0f} m²", "area_too_large", point)
    elif area < limits.min_area_m2:
        problems.add(
            field,
            f"area {area:,.3f} m² is smaller than {limits.min_area_m2:,.3f} m²",
            "area_too_small",
            point,
        )
    problems.raise_if_any()
    return FenceSpec(kind="polygon", geometry=geom)


# A place's free-form `properties` are echoed in every listing and export: a value the JSON encoders cannot write
# (nested past their depth limits, an integer beyond 64 bits) would make those answer 500 for the whole
# organisation, so it is refused where it enters. The limits are far above what building metadata needs.
MAX_PROPERTIES_DEPTH = 16  # objects and arrays inside one another, `properties` itself being 1
MAX_PROPERTIES_BYTES = 32_768  # as compact UTF-8 JSON
_INT64 = (-(2**63), 2**63 - 1)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_:@\-]{1,60}")


def _member_path(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    return f"{path}.{text}" if _PLAIN_KEY.fullmatch(text) else f"{path}[{json.dumps(text[:60])}]"


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character, which PostgreSQL cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate escape)"
    return None


def properties_problems(value: object, field: str = "properties") -> list[GeometryProblem]:
    """What is wrong with a place's free-form properties, each at its path (e.g. `properties.a.b[2]`).

    A JSON object, at most MAX_PROPERTIES_DEPTH levels deep and MAX_PROPERTIES_BYTES as JSON, holding only finite
    numbers, 64-bit integers and storable text. Walked without recursion, so any depth is answered.
    """
    problems = _Problems()
    if not isinstance(value, dict):
        problems.add(field, f"properties must be an object, got {json_type(value)}", "wrong_type")
        return problems.items
    stack: list[tuple[object, str, int]] = [(value, field, 1)]
    while stack and len(problems.items) < MAX_PROBLEMS:
        node, path, depth = stack.pop()
        if isinstance(node, dict | list | tuple):
            if depth > MAX_PROPERTIES_DEPTH:
                problems.add(
                    path, f"nested deeper than {MAX_PROPERTIES_DEPTH} levels of objects and arrays", "too_deep"
                )
                continue
            members = node.items() if isinstance(node, dict) else enumerate(node)
            for key, member in reversed(list(members)):
                if isinstance(node, dict) and not isinstance(key, str):
                    problems.add(path, f"keys must be strings, got {json_type(key)}", "wrong_type")
                    continue
                if isinstance(key, str) and (why := _text_problem(key)):
                    problems.add(_member_path(path, key), f"the key {why}", "bad_text")
                    continue
                stack.append((member, _member_path(path, key), depth + 1))
        elif isinstance(node, str):
            if why := _text_problem(node):
                problems.add(path, f"the text {why}", "bad_text")
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not _INT64[0] <= node <= _INT64[1]:
                problems.add(path, "integers must fit in 64 bits (use a string for longer numbers)", "out_of_range")
        elif isinstance(node, float):
            if not math.isfinite(node):
                problems.add(path, f"numbers must be finite, got {node}", "not_finite")
        else:
            problems.add(path, f"{json_type(node)} is not a JSON value", "wrong_type")
    if problems.items:
        return problems.items
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_PROPERTIES_BYTES:
        largest = max(value, key=lambda k: len(json.dumps(value[k], ensure_ascii=False)), default=None)
        hint = f"; the largest member is {_member_path(field, largest)}" if largest is not None else ""
        problems.add(field, f"{size:,} bytes as JSON, more than the limit {MAX_PROPERTIES_BYTES:,}{hint}", "too_large")
    return problems.items


# A fence typed as [lat, lon] inside both ranges (Helsinki's 60.17, 24.94 read as lon 60.17, lat 24.94 lands in
# Iran) passes every range check. It is refused (422 `swapped_coordinates`) when the organisation's other fences say
# so: read as given it is over SWAP_FAR_M from all of them, read the other way round within SWAP_NEAR_M of one.
# A genuinely remote place is accepted (nothing lies near its mirror image), and so is an organisation's first.
SWAP_NEAR_M = 50_000.0
SWAP_FAR_M = 500_000.0
# Whether any of the organisation's other fences lies within `radius_m` of (lon, lat): the caller's query.
FencesNear = Callable[[float, float, float], Awaitable[bool]]


async def swapped_axes_problem(fence: FenceSpec, field: str, fences_near: FencesNear) -> GeometryProblem | None:
    """The problem of a fence that looks like [lat, lon] to the organisation's other fences, or None."""
    where = fence.geometry if fence.kind == "circle" else fence.geometry.representative_point()
    lon, lat = float(where.x), float(where.y)
    if not -90.0 <= lon <= 90.0:
        return None  # read the other way round it would be no place at all
    if not await fences_near(lat, lon, SWAP_NEAR_M) or await fences_near(lon, lat, SWAP_FAR_M):
        return None
    return GeometryProblem(
        f"{field}.coordinates",
        f"the fence lies at lon {lon:.5f}, lat {lat:.5f}, over {SWAP_FAR_M / 1000:,.0f} km from every other fence "
        f"of the organisation, but read as [lat, lon] it is within {SWAP_NEAR_M / 1000:,.0f} km of them: "
        "GeoJSON positions are [lon, lat]; swap them",
        "swapped_coordinates",
        (lon, lat),
    )

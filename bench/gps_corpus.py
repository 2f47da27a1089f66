"""Realistic GPS traces around real buildings, with the truth a person would agree with.

Each trace is one phone near one building of the Helsinki extract (tests/data/osm, © OpenStreetMap
contributors, ODbL): a true path sampled every second, and the fixes the phone reports along it. Phone
error is modelled as phones show it, not as independent noise: per axis an Ornstein-Uhlenbeck drift with a
correlation time of tens of seconds (the error wanders, so several fixes in a row sit on the same wrong side
of a wall), scaled so that the reported accuracy is the radius of 68 % confidence (Android's definition:
sigma per axis = accuracy / 1.51); the reported accuracy itself is off by up to 25 %. On top: multipath
outliers (a fix 50-200 m off that claims 10-30 m), network fixes (accuracy 0.5-3 km, that far off), indoor
accuracy of 20-60 m drifting over minutes, clients that send no accuracy at all, and offline batches that
arrive hours after they were measured.

Deterministic per seed. `corpus()` returns every scenario; `bench.flap` runs the rules over it.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import shapely
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import nearest_points

from geofences.domain import FenceSpec
from geofences.geodesy import EARTH_RADIUS_M

OSM_EXTRACT = Path(__file__).resolve().parent.parent / "tests" / "data" / "osm" / "helsinki-centre.osm.pbf"
SIGMA_PER_ACCURACY = 1 / 1.51  # 68 % of a 2-D Gaussian lies within 1.51 sigma


@dataclass(frozen=True, slots=True)
class Building:
    place_id: int
    fence_id: int
    name: str
    lon0: float
    lat0: float
    shape: Polygon  # in local metres around (lon0, lat0)

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        k = math.radians(1.0) * EARTH_RADIUS_M
        return self.lon0 + x / (k * math.cos(math.radians(self.lat0))), self.lat0 + y / k


@dataclass(frozen=True, slots=True)
class TraceFix:
    ts: float  # device time, seconds from the trace's start
    x: float
    y: float
    accuracy_m: float | None
    late_s: float = 0.0  # how long after `ts` the server receives it


@dataclass
class Trace:
    scenario: str
    building: Building
    true_path: list[tuple[float, float]]  # one point per second
    fixes: list[TraceFix]
    walk: bool = False  # a real walk in and out: enter delay and misses are measured on these
    notes: dict[str, float] = field(default_factory=dict)

    @property
    def hours(self) -> float:
        return len(self.true_path) / 3600


def _local(poly: Polygon) -> tuple[float, float, Polygon]:
    lon0, lat0 = poly.centroid.x, poly.centroid.y
    k = math.radians(1.0) * EARTH_RADIUS_M
    kx = k * math.cos(math.radians(lat0))
    return lon0, lat0, shapely.transform(poly, lambda c: (c - [lon0, lat0]) * [kx, k])


@dataclass(frozen=True, slots=True)
class City:
    entries: tuple[tuple[int, int, FenceSpec], ...]  # every fence of the extract: (fence_id, place_id, spec)
    buildings: tuple[Building, ...]  # the polygon buildings traces are made around


@cache
def helsinki(min_area_m2: float = 400.0) -> City:
    """The extract's public buildings; traces go to the polygons of at least `min_area_m2`."""
    from geofences.osm_import import read_osm_places

    result = read_osm_places(OSM_EXTRACT)
    entries: list[tuple[int, int, FenceSpec]] = []
    buildings: list[Building] = []
    for place_id, spec in enumerate(result.places, start=1):
        for fence in spec.fences:
            fence_id = len(entries) + 1
            entries.append((fence_id, place_id, fence))
            if fence.kind != "polygon":
                continue
            for part in getattr(fence.geometry, "geoms", [fence.geometry]):
                lon0, lat0, shape = _local(part)
                if shape.area >= min_area_m2:
                    buildings.append(Building(place_id, fence_id, spec.name, lon0, lat0, shape))
    return City(tuple(entries), tuple(buildings))


class _Drift:
    """Phone position error: an Ornstein-Uhlenbeck process per axis (metres), sigma set per fix."""

    def __init__(self, rng: random.Random, tau_s: float) -> None:
        self.rng, self.tau_s = rng, tau_s
        self.ex, self.ey, self.t = rng.gauss(0, 1), rng.gauss(0, 1), 0.0

    def at(self, t: float, sigma: float) -> tuple[float, float]:
        rho = math.exp(-(t - self.t) / self.tau_s)
        spread = math.sqrt(1 - rho * rho)
        self.ex = rho * self.ex + spread * self.rng.gauss(0, 1)
        self.ey = rho * self.ey + spread * self.rng.gauss(0, 1)
        self.t = t
        return self.ex * sigma, self.ey * sigma


def _observe(
    rng: random.Random,
    path: list[tuple[float, float]],
    interval_s: float,
    accuracy: Callable[[int], float],
    tau_s: float,
    *,
    outliers: float = 0.0,
    network: float = 0.0,
    report_accuracy: bool = True,
) -> list[TraceFix]:
    drift = _Drift(rng, tau_s)
    fixes = []
    t = rng.uniform(0, interval_s)
    while t < len(path):
        second = int(t)
        true_acc = accuracy(second)
        ex, ey = drift.at(t, true_acc * SIGMA_PER_ACCURACY)
        reported = true_acc * rng.uniform(0.8, 1.25)
        x, y = path[second][0] + ex, path[second][1] + ey
        roll = rng.random()
        if roll < network:  # a cell/Wi-Fi fix: kilometres off, and honest about it
            reported = rng.uniform(500, 3000)
            angle, off = rng.uniform(0, 2 * math.pi), reported * rng.uniform(0.3, 1.2)
            x, y = path[second][0] + off * math.cos(angle), path[second][1] + off * math.sin(angle)
        elif roll < network + outliers:  # multipath: far off, claiming to be good
            angle, off = rng.uniform(0, 2 * math.pi), rng.uniform(50, 200)
            x, y, reported = x + off * math.cos(angle), y + off * math.sin(angle), rng.uniform(10, 30)
        fixes.append(TraceFix(t, x, y, reported if report_accuracy else None))
        t += interval_s * rng.uniform(0.9, 1.1)
    return fixes


def _wall_point(rng: random.Random, shape: Polygon, distance: float, inside: bool) -> tuple[float, float] | None:
    """A point `distance` metres from the building's outline, on the chosen side (None if it has no room)."""
    ring = shape.exterior
    for _ in range(50):
        along = rng.uniform(0, ring.length - 0.5)
        a, b = ring.interpolate(along), ring.interpolate(along + 0.5)
        length = math.hypot(b.x - a.x, b.y - a.y)
        if length == 0:
            continue
        normal_x, normal_y = -(b.y - a.y) / length, (b.x - a.x) / length
        for sign in (1, -1):
            point = Point(a.x + sign * normal_x * distance, a.y + sign * normal_y * distance)
            if shape.contains(point) == inside and abs(ring.distance(point) - distance) < 0.5:
                return point.x, point.y
    return None


def _stand(point: tuple[float, float], seconds: int) -> list[tuple[float, float]]:
    return [point] * seconds


def _walk(a: tuple[float, float], b: tuple[float, float], speed: float) -> list[tuple[float, float]]:
    n = max(1, int(math.dist(a, b) / speed))
    return [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(n)]


def _interior(rng: random.Random, shape: Polygon, depth_m: float = 10.0) -> tuple[float, float] | None:
    """A spot a visitor would stay at, at least `depth_m` from the walls (None if the building is narrower)."""
    x0, y0, x1, y1 = shape.bounds
    for _ in range(200):
        point = Point(rng.uniform(x0, x1), rng.uniform(y0, y1))
        if shape.contains(point) and shape.boundary.distance(point) >= depth_m:
            return point.x, point.y
    return None


def _outside_spot(rng: random.Random, shape: Polygon, distance: float) -> tuple[float, float]:
    angle = rng.uniform(0, 2 * math.pi)
    centre = shape.centroid
    far = Point(centre.x + 1000 * math.cos(angle), centre.y + 1000 * math.sin(angle))
    edge = nearest_points(shape.exterior, far)[0]
    return edge.x + distance * math.cos(angle), edge.y + distance * math.sin(angle)


def _walk_in_out(rng: random.Random, building: Building, depth_m: float = 10.0) -> list[tuple[float, float]] | None:
    start = _outside_spot(rng, building.shape, 150)
    spot = _interior(rng, building.shape, depth_m)
    if spot is None:
        return None
    end = _outside_spot(rng, building.shape, 150)
    speed = rng.uniform(1.1, 1.6)
    path = _walk(start, spot, speed) + _stand(spot, int(rng.uniform(300, 1200)))
    return path + _walk(spot, end, speed) + _stand(end, 120)


def _indoor_accuracy(
    shape: Polygon, path: list[tuple[float, float]], outdoor: float, indoor: float
) -> Callable[[int], float]:
    """Outdoor accuracy outside; indoors it degrades towards `indoor` over ~30 s (GPS losing the sky)."""
    inside = [shape.contains(Point(p)) for p in path]
    since = []
    count = 0
    for flag in inside:
        count = count + 1 if flag else 0
        since.append(count)
    return lambda s: outdoor + (indoor - outdoor) * (1 - math.exp(-since[s] / 30))


def _trace(kind: str, rng: random.Random, building: Building) -> Trace | None:
    shape = building.shape
    hour = 3600
    if kind in ("wall_outside", "wall_inside", "wall_no_accuracy"):
        inside = kind == "wall_inside" or (kind == "wall_no_accuracy" and rng.random() < 0.5)
        spot = _wall_point(rng, shape, rng.uniform(1, 30), inside=inside)
        if spot is None:
            return None
        path, acc = _stand(spot, hour), rng.uniform(5, 40) if kind != "wall_no_accuracy" else rng.uniform(5, 30)
        fixes = _observe(rng, path, 10, lambda _: acc, rng.uniform(10, 60), report_accuracy=kind != "wall_no_accuracy")
        return Trace(kind, building, path, fixes, notes={"accuracy_m": acc})
    if kind in ("indoor_drift", "network_fixes"):
        spot = _interior(rng, shape, rng.uniform(0, 10))
        if spot is None:
            return None
        path = _stand(spot, hour)
    if kind == "indoor_drift":
        acc = rng.uniform(20, 60)
        return Trace(kind, building, path, _observe(rng, path, 10, lambda _: acc, rng.uniform(60, 180)))
    if kind == "network_fixes":
        fixes = _observe(rng, path, 10, lambda _: 15.0, 30, network=0.05)
        return Trace(kind, building, path, fixes)
    if kind == "multipath_outside":
        spot = _wall_point(rng, shape, rng.uniform(10, 30), inside=False)
        if spot is None:
            return None
        path = _stand(spot, hour)
        return Trace(kind, building, path, _observe(rng, path, 10, lambda _: 10.0, 30, outliers=0.02))
    if kind in ("walk_in_out", "walk_in_deep", "walk_in_out_no_accuracy", "offline_batch"):
        interval = rng.choice((5.0, 10.0)) if kind in ("walk_in_out", "walk_in_deep") else 10.0
        walked = _walk_in_out(rng, building, 25.0 if kind == "walk_in_deep" else 10.0)
        if walked is None:
            return None
        path = walked
        accuracy = _indoor_accuracy(shape, path, rng.uniform(5, 12), rng.uniform(12, 30))
        fixes = _observe(
            rng, path, interval, accuracy, rng.uniform(15, 40), report_accuracy=kind != "walk_in_out_no_accuracy"
        )
        if kind == "offline_batch":  # measured on the subway, uploaded hours later
            late = rng.uniform(3600, 6 * 3600)
            fixes = [TraceFix(f.ts, f.x, f.y, f.accuracy_m, late) for f in fixes]
        return Trace(kind, building, path, fixes, walk=True)
    if kind in ("walk_past", "walk_along"):
        offset = rng.uniform(5, 30) if kind == "walk_past" else rng.uniform(3, 15)
        line = shape.exterior.parallel_offset(offset, "left", join_style="mitre") if kind == "walk_along" else None
        if line is None or line.is_empty or not isinstance(line, LineString):
            start = _outside_spot(rng, shape, 200)
            middle = _outside_spot(rng, shape, offset)
            end = (2 * middle[0] - start[0], 2 * middle[1] - start[1])
            points = [start, middle, end]
        else:
            points = list(line.coords)
        speed = rng.uniform(1.1, 1.6)
        path = [p for a, b in itertools.pairwise(points) for p in _walk(a, b, speed)]
        if not path or any(shape.contains(Point(p)) for p in path[:: max(1, len(path) // 200)]):
            return None
        acc = rng.uniform(5, 15)
        return Trace(kind, building, path, _observe(rng, path, rng.choice((5.0, 10.0)), lambda _: acc, 30))
    raise ValueError(kind)


SCENARIOS = (
    "wall_outside",
    "wall_inside",
    "wall_no_accuracy",
    "indoor_drift",
    "network_fixes",
    "multipath_outside",
    "walk_in_out",
    "walk_in_deep",
    "walk_in_out_no_accuracy",
    "offline_batch",
    "walk_past",
    "walk_along",
)


def corpus(per_scenario: int = 20, seed: int = 7, scenarios: tuple[str, ...] = SCENARIOS) -> Iterator[Trace]:
    buildings = helsinki().buildings
    for kind in scenarios:
        rng = random.Random(f"{seed}:{kind}")
        made = attempts = 0
        while made < per_scenario and attempts < per_scenario * 5:
            attempts += 1
            trace = _trace(kind, rng, rng.choice(buildings))
            if trace is not None:
                made += 1
                yield trace

"""In-memory spatial index of geofences: pure (no I/O), immutable once built.

Fences arrive in WGS 84 lon/lat. Everything is projected to one metric plane by an affine
equirectangular transform around the fences' centroid. Being affine, it leaves point-in-polygon
answers exactly as they are in lon/lat (what PostGIS `ST_Intersects` on SRID 4326 answers).
Distances (approach zones, exit hysteresis, check-in proximity) are taken in a per-fence frame that
also rescales x by cos(fence latitude) / cos(reference latitude), so metres stay metres even when an
organisation's fences span many degrees of latitude. Circles are matched by haversine distance.

Candidates come from uniform grids over the plane, one per power-of-four cell size, each fence in
the finest grid where its box spans at most 2 x 2 cells: a lookup is arithmetic and two array reads
per grid. That measured ~4x cheaper per fix at 100k fences than creating a shapely point and
querying an STRtree, whose point creation alone costs more than the whole lookup. Candidates are
refined in numpy: each polygon's edges (all rings, all parts) are stored padded to a power-of-two
width, so the even-odd crossing test or the distance to the edges of thousands of candidates is a
handful of array operations, ~4x cheaper per candidate than GEOS `contains_xy`.

The boundary counts as inside, as in `ST_Intersects`: a point exactly on a vertex or an edge (of
the shell or of a hole) is in the fence, and so is a point exactly `radius_m` from a circle's centre.
The crossing test alone calls about half of the boundary outside; the candidates it calls outside
are checked for an edge through the point (within `_ON_EDGE_M`, far above the projection's rounding),
which costs one extra array operation for fixes that are inside their candidates.

Longitude ±180° is no seam: the plane is not wrapped, but where fences (circles, approach zones, a
polygon drawn up to the line) reach past it, points near the line are also looked up at their
longitude ±360°, and distances take the point on the fence's side of the line. Polygons themselves
never cross it: validation refuses an edge spanning more than 180° of longitude.

Immutable after `build`: build a new index beside the old one and swap the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import shapely

from geofences.domain import FenceSpec
from geofences.geodesy import EARTH_RADIUS_M, haversine_m_array

ZONE_BUILDING = 0  # the fence itself
ZONE_APPROACH = 1  # the fence widened by its place's approach distance; it contains the building
ZONE_NAMES = ("building", "approach")
_MIN_WIDTH = 8
_CHUNK_CELLS = 1 << 17  # candidate x edge cells per numpy pass; bounds temporaries to a few MB
_CELL_BUDGET = 1 << 21  # cells of the finest grid: caps its table at 16 MB
_SLACK_DEG = 1e-7  # ~1 cm: candidate boxes err on the side of too many, never too few
# A point this near an edge (plane metres) is on it: projecting lon/lat rounds by ~1e-8 m at most.
_ON_EDGE_M = 1e-6
# Candidates the crossing test calls outside get the exact boundary check only if an edge crosses the
# point's scan line this near it (generous: near-horizontal edges amplify rounding along x).
_NEAR_EDGE_M = 1e-3
_TURN = np.array([360.0, 0.0])  # lon/lat + _TURN: the same place, once round the globe eastwards

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FenceEntry = tuple[int, int, FenceSpec]  # (fence_id, place_id, spec)


@dataclass(frozen=True, slots=True)
class IndexedFence:
    """One zone of one fence: what a hit means to the caller."""

    fence_id: int
    place_id: int
    kind: str  # "polygon" or "circle"
    zone: str  # "building" or "approach"


class ZoneHits(NamedTuple):
    """All (fix, zone) containment pairs of a bulk query, ordered by fix index."""

    fix_idx: IntArray
    fence_ids: IntArray
    zones: npt.NDArray[np.int8]  # ZONE_BUILDING or ZONE_APPROACH


class _EdgeBucket:
    """The edges of every polygon with at most `width` edges, one padded row per polygon.

    Padding is a zero-length edge on the row's first vertex: it never crosses a scan line and is
    never nearer than a real vertex, so neither test needs a mask.
    """

    def __init__(self, x1: FloatArray, y1: FloatArray, x2: FloatArray, y2: FloatArray) -> None:
        self.x1, self.y1, self.x2, self.y2 = x1, y1, x2, y2
        self.width = x1.shape[1]

    def contains(self, rows: IntArray, x: FloatArray, y: FloatArray, boundary: bool = True) -> BoolArray:
        """Inside or on the boundary: the even-odd crossing test, then a boundary check where it says outside
        (left to the caller with `boundary=False`)."""
        px, py = x[:, None], y[:, None]
        y1, y2 = self.y1[rows], self.y2[rows]
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x1 = self.x1[rows]
            rise = py - y1
            across = x1 + rise * (self.x2[rows] - x1) / (y2 - y1)  # where the edge's line meets the scan line
        crosses &= px < across
        inside = np.asarray(np.count_nonzero(crosses, axis=1) % 2 == 1)
        if not boundary or inside.all():  # the common case pays one operation for the boundary
            return inside
        # The crossing test answers for a point just right of (and above) this one, so it calls points on
        # right-hand and top edges, and on some vertices, outside. A point on the boundary has an edge line
        # crossing its scan line right at it, or an edge starting at its height (a vertex, a horizontal
        # edge): projecting keeps equal coordinates equal, so those are exact. Confirm by distance.
        maybe = ~inside & ((np.abs(across - px) <= _NEAR_EDGE_M) | (rise == 0)).any(axis=1)
        if maybe.any():
            near = np.flatnonzero(maybe)
            inside[near] = self.distance(rows[near], x[near], y[near], np.ones(near.size)) <= _ON_EDGE_M
        return inside

    def distance(self, rows: IntArray, x: FloatArray, y: FloatArray, x_scale: FloatArray) -> FloatArray:
        sx = x_scale[:, None]
        ax, ay = (self.x1[rows] - x[:, None]) * sx, self.y1[rows] - y[:, None]
        dx, dy = (self.x2[rows] - self.x1[rows]) * sx, self.y2[rows] - self.y1[rows]
        length2 = dx * dx + dy * dy
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip(-(ax * dx + ay * dy) / length2, 0.0, 1.0)
        t[length2 == 0] = 0.0
        return np.asarray(np.sqrt(np.min((ax + t * dx) ** 2 + (ay + t * dy) ** 2, axis=1)), dtype=np.float64)


def _usable(entries: list[FenceEntry]) -> BoolArray:
    """Which entries can be matched: a finite, non-empty Point with a positive radius for a
    circle, a finite, non-empty Polygon or MultiPolygon for a polygon."""
    geoms = np.empty(len(entries), dtype=object)
    geoms[:] = [spec.geometry for _, _, spec in entries]
    kinds = np.array([spec.kind for _, _, spec in entries], dtype=object)
    radius = np.array([spec.radius_m or math.nan for _, _, spec in entries], dtype=np.float64)
    type_id = shapely.get_type_id(geoms)  # -1 for None, 0 Point, 3 Polygon, 6 MultiPolygon
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    finite = np.bincount(owner, ~np.isfinite(coords).all(axis=1), minlength=geoms.size) == 0
    circle_ok = (kinds == "circle") & (type_id == 0) & np.isfinite(radius) & (radius > 0)
    polygon_ok = (kinds == "polygon") & ((type_id == 3) | (type_id == 6))
    return np.asarray(finite & (type_id >= 0) & ~shapely.is_empty(geoms) & (circle_ok | polygon_ok))


def _joined_across_the_line(geoms: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Fences in parts on both sides of ±180° (a MultiPolygon split at the line, as validation asks) with
    the parts on one side moved by 360°: one compact shape reaching past the line, whose box covers it
    rather than a band round the world. Points near the line are looked up past it, so hits do not change."""
    bounds = shapely.bounds(geoms).reshape(-1, 4)
    wide = np.flatnonzero(bounds[:, 2] - bounds[:, 0] > 180.0)  # never an ordinary fence: a loop is fine
    if not wide.size:
        return geoms
    geoms = geoms.copy()
    for i in wide.tolist():
        if not isinstance(geoms[i], shapely.MultiPolygon):
            continue  # one polygon that wide goes round a pole: nothing to join
        parts = shapely.get_parts(geoms[i])
        part_bounds = shapely.bounds(parts)
        centres = (part_bounds[:, 0] + part_bounds[:, 2]) / 2
        ordered = np.sort(centres)
        gaps = np.diff(ordered)
        cut = int(np.argmax(gaps))
        if gaps[cut] <= ordered[0] + 360.0 - ordered[-1]:  # already most compact as drawn
            continue
        geoms[i] = shapely.MultiPolygon(
            [
                shapely.transform(part, lambda xy: xy + _TURN) if c <= ordered[cut] else part
                for part, c in zip(parts, centres, strict=True)
            ]
        )
    return geoms


def _edges(polygons: npt.NDArray[np.object_], project: _Projection) -> list[npt.NDArray[np.generic]]:
    """[owner, x1, y1, x2, y2]: every edge of every ring of every polygon, projected."""
    pieces = []
    # In chunks: shapely clones every ring on the way, and the freed clones stay in the process
    # heap; 8k polygons at a time keep that residue ~10x smaller than all 100k at once.
    for start in range(0, polygons.size, 8192):
        _, coords, (ring_end, *groups) = shapely.to_ragged_array(polygons[start : start + 8192])
        ring = np.repeat(np.arange(ring_end.size - 1), np.diff(ring_end))
        ring_polygon = np.arange(ring_end.size - 1)
        for group_end in groups:  # rings -> polygons, or rings -> parts -> multipolygons
            ring_polygon = np.repeat(np.arange(group_end.size - 1), np.diff(group_end))[ring_polygon]
        x, y = project(coords[:, 0], coords[:, 1])
        same_ring = ring[1:] == ring[:-1]  # rings are closed: consecutive vertices are edges
        owner = ring_polygon[ring[:-1][same_ring]] + start
        pieces.append([owner, x[:-1][same_ring], y[:-1][same_ring], x[1:][same_ring], y[1:][same_ring]])
    return [np.concatenate(column) for column in zip(*pieces, strict=True)]


def _edge_buckets(
    polygons: npt.NDArray[np.object_], project: _Projection
) -> tuple[list[_EdgeBucket], IntArray, IntArray]:
    """Pad the edges of `polygons` into buckets; return them and each polygon's (bucket, row)."""
    if not polygons.size:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    owner, ex1, ey1, ex2, ey2 = _edges(polygons, project)
    counts = np.bincount(owner, minlength=polygons.size)
    first = np.cumsum(counts) - counts
    position = np.arange(owner.size) - first[owner]
    widths = np.maximum(_MIN_WIDTH, 1 << np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64))
    bucket_of, row_of = np.zeros(polygons.size, np.int64), np.zeros(polygons.size, np.int64)
    buckets = []
    for number, width in enumerate(np.unique(widths).tolist()):
        members = np.flatnonzero(widths == width)
        bucket_of[members], row_of[members] = number, np.arange(members.size)
        pad_x, pad_y = ex1[first[members], None], ey1[first[members], None]
        x1, x2, y1, y2 = (np.repeat(pad, width, axis=1) for pad in (pad_x, pad_x, pad_y, pad_y))
        mine = np.flatnonzero(widths[owner] == width)
        rows, cols = row_of[owner[mine]], position[mine]
        for table, values in ((x1, ex1), (y1, ey1), (x2, ex2), (y2, ey2)):
            table[rows, cols] = values[mine]
        buckets.append(_EdgeBucket(x1, y1, x2, y2))
    return buckets, bucket_of, row_of


class _Projection:
    """The affine lon/lat -> metres map around (lon0, lat0)."""

    def __init__(self, lon0: float, lat0: float) -> None:
        self.lon0, self.lat0 = lon0, lat0
        self.ky = math.radians(1.0) * EARTH_RADIUS_M
        self.kx = self.ky * math.cos(math.radians(lat0))

    def __call__(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        with np.errstate(over="ignore", invalid="ignore"):  # absurd input becomes inf: no hits
            x = (np.asarray(lons, dtype=np.float64) - self.lon0) * self.kx
            return x, (np.asarray(lats, dtype=np.float64) - self.lat0) * self.ky

    def point(self, lon: float, lat: float) -> tuple[float, float]:
        """One point, in plain floats (the same arithmetic; non-finite input gives non-finite output)."""
        try:
            return (float(lon) - self.lon0) * self.kx, (float(lat) - self.lat0) * self.ky
        except OverflowError:
            return math.inf, math.inf


class _Grid:
    """Boxes in uniform grids whose cell size grows 4x per level, each box in the finest level where
    it spans at most 2 x 2 cells. Each level is a dense CSR table: cell -> the boxes touching it."""

    def __init__(self, boxes: FloatArray) -> None:
        self.x0, self.y0, self.x1, self.y1 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
        self.levels: list[tuple[float, int, int, IntArray, IntArray]] = []  # size, nx, ny, offsets, boxes
        if not boxes.shape[0]:
            return
        self.x_origin, self.y_origin = float(self.x0.min()), float(self.y0.min())
        width, height = float(self.x1.max()) - self.x_origin, float(self.y1.max()) - self.y_origin
        extent = np.maximum(self.x1 - self.x0, self.y1 - self.y0)
        # Cells about twice the typical box keep candidates few; the budget caps memory for fences
        # spread over a whole country.
        base = max(2 * float(np.median(extent)), math.sqrt(width * height / _CELL_BUDGET), 1e-3)
        level = np.ceil(np.log(np.maximum(extent / base, 1.0)) / math.log(4)).astype(np.int64)
        for number in np.unique(level).tolist():
            self.levels.append(self._level(np.flatnonzero(level == number), base * 4**number, width, height))

    def _cells(self, x: FloatArray, y: FloatArray, size: float) -> tuple[IntArray, IntArray]:
        cell_x, cell_y = np.floor((x - self.x_origin) / size), np.floor((y - self.y_origin) / size)
        return cell_x.astype(np.int64), cell_y.astype(np.int64)

    def _level(
        self, items: IntArray, size: float, width: float, height: float
    ) -> tuple[float, int, int, IntArray, IntArray]:
        nx, ny = int(width // size) + 1, int(height // size) + 1
        cx0, cy0 = self._cells(self.x0[items], self.y0[items], size)
        cx1, cy1 = self._cells(self.x1[items], self.y1[items], size)
        span_x, count = cx1 - cx0 + 1, (cx1 - cx0 + 1) * (cy1 - cy0 + 1)
        local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        cell_x = np.repeat(cx0, count) + local % np.repeat(span_x, count)
        cell = cell_x * ny + np.repeat(cy0, count) + local // np.repeat(span_x, count)
        offsets = np.zeros(nx * ny + 1, np.int64)
        np.cumsum(np.bincount(cell, minlength=nx * ny), out=offsets[1:])
        return size, nx, ny, offsets, np.repeat(items, count)[np.argsort(cell, kind="stable")]

    def candidates(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        """(point, box) pairs where the box contains the point; points must be finite."""
        points, boxes = [], []
        for size, nx, ny, offsets, members in self.levels:
            cx, cy = self._cells(x, y, size)
            found = np.flatnonzero((cx >= 0) & (cx < nx) & (cy >= 0) & (cy < ny))
            cell = cx[found] * ny + cy[found]
            first, count = offsets[cell], offsets[cell + 1] - offsets[cell]
            point = np.repeat(found, count)
            box = members[np.repeat(first - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))]
            px, py = x[point], y[point]
            inside = (self.x0[box] <= px) & (px <= self.x1[box]) & (self.y0[box] <= py) & (py <= self.y1[box])
            points.append(point[inside])
            boxes.append(box[inside])
        if not points:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(points), np.concatenate(boxes)

    def at(self, x: float, y: float) -> IntArray:
        """Boxes containing one point, looked up without vectorising over a single point."""
        found = []
        for size, nx, ny, offsets, members in self.levels:
            cx, cy = math.floor((x - self.x_origin) / size), math.floor((y - self.y_origin) / size)
            if 0 <= cx < nx and 0 <= cy < ny:
                first, last = offsets[cx * ny + cy], offsets[cx * ny + cy + 1]
                if last > first:
                    found.append(members[first:last])
        if not found:
            return np.zeros(0, np.int64)
        boxes = np.concatenate(found)
        inside = (self.x0[boxes] <= x) & (x <= self.x1[boxes]) & (self.y0[boxes] <= y) & (y <= self.y1[boxes])
        return np.asarray(boxes[inside], dtype=np.int64)

    def in_box(self, x0: float, y0: float, x1: float, y1: float) -> IntArray:
        """Boxes intersecting the query box."""
        found = [np.zeros(0, np.int64)]
        for size, nx, ny, offsets, members in self.levels:
            (cx0, cx1), (cy0, cy1) = self._cells(np.array([x0, x1]), np.array([y0, y1]), size)
            cy0, cy1 = max(int(cy0), 0), min(int(cy1), ny - 1)
            for column in range(max(int(cx0), 0), min(int(cx1), nx - 1) + 1):
                if cy0 <= cy1:  # one column's cells are contiguous in the table
                    found.append(members[offsets[column * ny + cy0] : offsets[column * ny + cy1 + 1]])
        boxes = np.unique(np.concatenate(found))
        hit = (self.x0[boxes] <= x1) & (x0 <= self.x1[boxes]) & (self.y0[boxes] <= y1) & (y0 <= self.y1[boxes])
        return np.asarray(boxes[hit], dtype=np.int64)


class FenceIndex:
    """Which fences (and approach zones) contain a point, and how far a point is from a fence."""

    skipped: tuple[int, ...] = ()  # fence ids `build` could not index
    # fence id -> its place's overrides of the transition rules (places.gps_tuning); set by the registry
    tuning: Mapping[int, Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, entries: list[FenceEntry], approach: FloatArray, version: int) -> None:
        self.version = version
        n = len(entries)
        self._fence_ids = np.array([e[0] for e in entries], dtype=np.int64)
        self._place_ids = np.array([e[1] for e in entries], dtype=np.int64)
        self._circle = np.array([e[2].kind == "circle" for e in entries], dtype=np.bool_)
        self._approach = approach  # NaN where the place has no approach zone
        geoms = _joined_across_the_line(np.array([e[2].geometry for e in entries] or [None], dtype=object)[:n])
        bounds = shapely.bounds(geoms).reshape(n, 4)
        centre_lon, centre_lat = (bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2
        self._project = _Projection(*(float(np.mean(c)) if n else 0.0 for c in (centre_lon, centre_lat)))
        cos0 = math.cos(math.radians(self._project.lat0))
        self._x_scale = np.cos(np.radians(centre_lat)) / cos0  # global-plane x -> fence-local metres
        self._radius = np.array([e[2].radius_m or 0.0 for e in entries], dtype=np.float64)
        self._centre_lon, self._centre_lat = centre_lon, centre_lat
        polygons = np.flatnonzero(~self._circle)
        self._buckets, bucket_of, row_of = _edge_buckets(geoms[polygons], self._project)
        self._bucket = np.full(n, -1, np.int64)
        self._row = np.full(n, -1, np.int64)
        self._bucket[polygons], self._row[polygons] = bucket_of, row_of
        self._grid = _Grid(self._envelopes(bounds))
        self._id_order = np.argsort(self._fence_ids)
        self._sorted_ids = self._fence_ids[self._id_order]

    @classmethod
    def build(
        cls, entries: Iterable[FenceEntry], approach_m: Mapping[int, float] | None = None, version: int = 0
    ) -> FenceIndex:
        """Index `(fence_id, place_id, spec)` entries; `approach_m` maps place_id -> approach distance.

        Fences that cannot be matched (empty, non-finite, wrong kind) are left out and listed in
        `skipped`, so one bad row does not stop an organisation's index from being built.
        """
        listed = list(entries)
        ids = [fence_id for fence_id, _, _ in listed]
        if len(set(ids)) != len(ids):
            raise ValueError("a fence id is listed twice")
        ok = _usable(listed).tolist() if listed else []
        usable = [entry for entry, good in zip(listed, ok, strict=True) if good]
        skipped = [fence_id for fence_id, good in zip(ids, ok, strict=True) if not good]
        approach = np.array([(approach_m or {}).get(e[1], math.nan) for e in usable], dtype=np.float64)
        approach[~(approach > 0)] = math.nan
        index = cls(usable, approach, version)
        index.skipped = tuple(skipped)
        return index

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (the builder process hands indexes over that way) with `tuning` as plain dicts, which pickle
        can write (read-only mappings it cannot); a place's overrides shared by its fences stay shared."""
        state = dict(vars(self))
        if "tuning" in state:
            plain: dict[int, dict[str, Any]] = {}
            state["tuning"] = {f: plain.setdefault(id(o), dict(o)) for f, o in self.tuning.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        tuning = state.pop("tuning", None)
        vars(self).update(state)
        if tuning is not None:
            frozen: dict[int, Mapping[str, Any]] = {}
            self.tuning = MappingProxyType(
                {f: frozen.setdefault(id(o), MappingProxyType(o)) for f, o in tuning.items()}
            )

    def __len__(self) -> int:
        return int(self._fence_ids.size)

    @property
    def nbytes(self) -> int:
        """Bytes held in the index's arrays."""
        arrays = [value for value in vars(self).values() if isinstance(value, np.ndarray)]
        arrays += [a for b in self._buckets for a in (b.x1, b.y1, b.x2, b.y2)]
        arrays += [self._grid.x0, self._grid.y0, self._grid.x1, self._grid.y1]
        arrays += [a for level in self._grid.levels for a in level[3:]]
        return int(sum(a.nbytes for a in arrays))

    def _envelopes(self, bounds: FloatArray) -> FloatArray:
        """Projected boxes, each widened to cover its circle and its approach zone; notes how far they
        reach in longitude."""
        reach = np.where(self._circle, self._radius, 0.0) + np.nan_to_num(self._approach)
        half_lat = np.degrees(reach / EARTH_RADIUS_M) + _SLACK_DEG
        # A spherical cap reaches asin(sin(d)/cos(lat)) in longitude; a pole inside it reaches all.
        ratio = np.sin(np.minimum(reach / EARTH_RADIUS_M, math.pi / 2)) / np.cos(np.radians(self._centre_lat))
        half_lon = np.where(ratio < 1, np.degrees(np.arcsin(np.minimum(ratio, 1.0))), 180.0) + _SLACK_DEG
        lon0, lon1 = bounds[:, 0] - half_lon, bounds[:, 2] + half_lon
        # Boxes reaching past ±180° (circles, approach zones, polygons drawn up to the line): points in
        # [-180, wrap_east] are looked up at lon + 360 too, points in [wrap_west, 180] at lon - 360.
        self._lon_lo = float(lon0.min()) if lon0.size else math.inf
        self._lon_hi = float(lon1.max()) if lon1.size else -math.inf
        self._wrap_east, self._wrap_west = self._lon_hi - 360.0, self._lon_lo + 360.0
        self._wraps = self._lon_hi > 180.0 or self._lon_lo < -180.0
        x0, y0 = self._project(lon0, bounds[:, 1] - half_lat)
        x1, y1 = self._project(lon1, bounds[:, 3] + half_lat)
        return np.stack([x0, y0, x1, y1], axis=1)

    def _items_of(self, fence_ids: npt.ArrayLike) -> IntArray:
        """Internal positions of `fence_ids`, -1 for ids this index does not know."""
        ids = np.asarray(fence_ids, dtype=np.int64)
        if not len(self):
            return np.full(ids.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), self._sorted_ids.size - 1)
        return np.where(self._sorted_ids[pos] == ids, self._id_order[pos], -1)

    def _per_bucket(
        self, items: IntArray, test: Callable[[_EdgeBucket, IntArray, IntArray], npt.NDArray[np.generic]]
    ) -> FloatArray:
        """Apply `test(bucket, rows, chunk)` to polygon candidates, grouped by edge bucket."""
        out = np.empty(items.size, dtype=np.float64)
        buckets = self._bucket[items]
        for number in np.unique(buckets).tolist():
            bucket = self._buckets[number]
            members, step = np.flatnonzero(buckets == number), max(1, _CHUNK_CELLS // bucket.width)
            for chunk in (members[start : start + step] for start in range(0, members.size, step)):
                out[chunk] = test(bucket, self._row[items[chunk]], chunk)
        return out

    def _polygon_contains(self, items: IntArray, x: FloatArray, y: FloatArray) -> BoolArray:
        inside = self._per_bucket(items, lambda bucket, rows, c: bucket.contains(rows, x[c], y[c]))
        return np.asarray(inside == 1.0)

    def _polygon_distance(self, items: IntArray, x: FloatArray, y: FloatArray, outside: bool) -> FloatArray:
        """Local-frame metres to the polygon, 0 inside; `outside`: the caller has found the points outside."""

        def test(bucket: _EdgeBucket, rows: IntArray, c: IntArray) -> FloatArray:
            edges = bucket.distance(rows, x[c], y[c], self._x_scale[items[c]])
            if outside:
                return edges
            inside = bucket.contains(rows, x[c], y[c], boundary=False) | (edges <= _ON_EDGE_M)
            return np.where(inside, 0.0, edges)

        return self._per_bucket(items, test)

    def _beside(self, items: IntArray, lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Points projected on each fence's side of ±180°: longitudes moved by whole turns to within 180° of
        the fence's centre (unchanged for any point less than half the globe away)."""
        return self._project(lons + 360.0 * np.rint((self._centre_lon[items] - lons) * (1 / 360.0)), lats)

    def _building_distance(
        self, items: IntArray, lons: FloatArray, lats: FloatArray, x: FloatArray, y: FloatArray, outside: bool = False
    ) -> FloatArray:
        """Metres to each item's building zone; circles by haversine on (lons, lats), polygons in the
        plane at (x, y), which must be the point on the fence's side of ±180°. `outside`: the points are
        known to be outside their buildings (saves polygons the containment test)."""
        out = np.zeros(items.size, dtype=np.float64)
        circle = self._circle[items]
        ci, pi = np.flatnonzero(circle), np.flatnonzero(~circle)
        if ci.size:  # most fences are polygons: spare them the trigonometry of nothing
            centre = haversine_m_array(self._centre_lon[items[ci]], self._centre_lat[items[ci]], lons[ci], lats[ci])
            out[ci] = np.maximum(centre - self._radius[items[ci]], 0.0)
        if pi.size:
            out[pi] = self._polygon_distance(items[pi], x[pi], y[pi], outside)
        return out

    def _refine(
        self, fix: IntArray, item: IntArray, lons: FloatArray, lats: FloatArray, x: FloatArray, y: FloatArray
    ) -> tuple[IntArray, IntArray, npt.NDArray[np.int8]]:
        """Of the candidate (fix, item) pairs, the zones that contain the fix: (fix, item, zone) by fix.

        `lons`, `lats` are the fixes as given (circles); `x`, `y` the fixes projected on the side of ±180°
        their candidates were found on (polygons)."""
        building = np.zeros(fix.size, dtype=np.bool_)
        circle = self._circle[item]
        ci, pi = np.flatnonzero(circle), np.flatnonzero(~circle)
        if ci.size:
            centre = haversine_m_array(
                self._centre_lon[item[ci]], self._centre_lat[item[ci]], lons[fix[ci]], lats[fix[ci]]
            )
            building[ci] = centre <= self._radius[item[ci]]
        if pi.size:
            building[pi] = self._polygon_contains(item[pi], x[fix[pi]], y[fix[pi]])
        approach = building & ~np.isnan(self._approach[item])
        near = np.flatnonzero(~building & ~np.isnan(self._approach[item]))
        if near.size:
            at = fix[near]
            distance = self._building_distance(item[near], lons[at], lats[at], x[at], y[at], outside=True)
            approach[near] = distance <= self._approach[item[near]]
        fixes = np.concatenate([fix[building], fix[approach]])
        items = np.concatenate([item[building], item[approach]])
        zones = np.repeat(np.array([ZONE_BUILDING, ZONE_APPROACH], np.int8), [building.sum(), approach.sum()])
        order = np.argsort(fixes, kind="stable")
        return fixes[order], items[order], zones[order]

    def query_bulk(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> ZoneHits:
        """Every (fix, zone) containment pair; non-finite coordinates match nothing."""
        lon_arr, lat_arr = np.atleast_1d(np.asarray(lons, np.float64)), np.atleast_1d(np.asarray(lats, np.float64))
        fixes, items, zones = self._bulk(lon_arr, lat_arr)
        return ZoneHits(fixes, self._fence_ids[items], zones)

    def _bulk(self, lons: FloatArray, lats: FloatArray) -> tuple[IntArray, IntArray, npt.NDArray[np.int8]]:
        """(fix, item, zone) of every containment, ordered by fix."""
        x, y = self._project(lons, lats)
        finite = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        point, item = self._grid.candidates(x[finite], y[finite])
        if not self._wraps:
            return self._refine(finite[point], item, lons, lats, x, y)
        # Fences reach past ±180°: fixes near the line are looked up on its other side as well, as extra
        # rows after the fixes; `origin` maps every row to its fix.
        east = finite[(lons[finite] >= -180.0) & (lons[finite] <= self._wrap_east)]
        west = finite[(lons[finite] <= 180.0) & (lons[finite] >= self._wrap_west)]
        origin = np.concatenate([np.arange(lons.size), east, west])
        other_lon = np.concatenate([lons[east] + 360.0, lons[west] - 360.0])
        other_x, other_y = self._project(other_lon, lats[origin[lons.size :]])
        other_point, other_item = self._grid.candidates(other_x, other_y)
        row = np.concatenate([finite[point], lons.size + other_point])
        item = np.concatenate([item, other_item])
        # A circle around a pole reaches all the way round: count it once per fix.
        _, first = np.unique(origin[row] * max(len(self), 1) + item, return_index=True)
        row, item = row[first], item[first]
        rows, items, zones = self._refine(
            row, item, lons[origin], lats[origin], np.concatenate([x, other_x]), np.concatenate([y, other_y])
        )
        fixes = origin[rows]
        order = np.argsort(fixes, kind="stable")
        return fixes[order], items[order], zones[order]

    def query(self, lon: float, lat: float) -> list[IndexedFence]:
        """The zones containing one point, buildings before approach zones."""
        hits = [self._describe(item, zone) for item, zone in self._point_items(lon, lat)]
        return sorted(hits, key=lambda hit: (hit.zone != "building", hit.fence_id))

    def zones_at(self, lon: float, lat: float) -> set[tuple[int, int]]:
        """(fence id, ZONE_*) of the zones containing one point: `query_bulk` for a single fix, ~20x cheaper
        (the fix endpoint's common case)."""
        return {(int(self._fence_ids[item]), zone) for item, zone in self._point_items(lon, lat)}

    def _point_items(self, lon: float, lat: float) -> list[tuple[int, int]]:
        if self._wraps and (-180.0 <= lon <= self._wrap_east or self._wrap_west <= lon <= 180.0):
            _, found, zones = self._bulk(np.array([lon], np.float64), np.array([lat], np.float64))  # both sides
            return list(zip(found.tolist(), zones.tolist(), strict=True))
        x, y = self._project.point(lon, lat)  # plain floats: numpy set-up for one point costs half a lookup
        if not (math.isfinite(x) and math.isfinite(y)):
            return []
        items = self._grid.at(x, y)
        if not items.size:  # most fixes: answered without a numpy pass over anything
            return []
        one = np.zeros(items.size, np.int64)
        _, items, zones = self._refine(one, items, np.array([lon]), np.array([lat]), np.array([x]), np.array([y]))
        return list(zip(items.tolist(), zones.tolist(), strict=True))

    def _describe(self, item: int, zone: int) -> IndexedFence:
        kind = "circle" if self._circle[item] else "polygon"
        return IndexedFence(int(self._fence_ids[item]), int(self._place_ids[item]), kind, ZONE_NAMES[zone])

    def distance_m(
        self, fence_ids: npt.ArrayLike, lons: npt.ArrayLike, lats: npt.ArrayLike, zones: npt.ArrayLike | None = None
    ) -> FloatArray:
        """Metres from each point to its fence's zone (building unless `zones` says), 0 inside.

        Unknown fences (e.g. deleted since a device entered them), approach zones of places without
        one, and non-finite points are infinitely far. An approach distance is the building distance
        less the approach width, which is exact for the true buffer.
        """
        items = self._items_of(fence_ids)
        lon_arr, lat_arr = (np.broadcast_to(np.asarray(a, np.float64), items.shape) for a in (lons, lats))
        out = np.full(items.shape, np.inf)
        known = np.flatnonzero((items >= 0) & np.isfinite(lon_arr) & np.isfinite(lat_arr))
        item, lon_k, lat_k = items[known], lon_arr[known], lat_arr[known]
        distance = self._building_distance(item, lon_k, lat_k, *self._beside(item, lon_k, lat_k))
        if zones is not None:
            approach = np.broadcast_to(np.asarray(zones), items.shape)[known] == ZONE_APPROACH
            width = self._approach[items[known][approach]]  # NaN (no approach zone) -> NaN -> inf below
            distance[approach] = np.maximum(distance[approach] - width, 0.0)
        out[known] = np.where(np.isnan(distance), np.inf, distance)
        return out

    def signed_distance_m(
        self, fence_ids: npt.ArrayLike, lons: npt.ArrayLike, lats: npt.ArrayLike, zones: npt.ArrayLike
    ) -> FloatArray:
        """Metres from each point to its zone's boundary, signed: >= 0 inside (how deep), < 0 outside.

        What the transition rules weigh a fix by. Unknown fences, approach zones of places without one and
        non-finite points are -inf (infinitely far outside). The approach zone's boundary lies the approach
        width beyond the building's, so its signed distance is the building's plus that width.
        """
        items = self._items_of(fence_ids)
        lon_arr, lat_arr = (np.broadcast_to(np.asarray(a, np.float64), items.shape) for a in (lons, lats))
        out = np.full(items.shape, -np.inf)
        known = np.flatnonzero((items >= 0) & np.isfinite(lon_arr) & np.isfinite(lat_arr))
        if not known.size:
            return out
        item, lon_k, lat_k = items[known], lon_arr[known], lat_arr[known]
        signed = np.empty(known.size, dtype=np.float64)
        circle = self._circle[item]
        ci, pi = np.flatnonzero(circle), np.flatnonzero(~circle)
        centre = haversine_m_array(self._centre_lon[item[ci]], self._centre_lat[item[ci]], lon_k[ci], lat_k[ci])
        signed[ci] = self._radius[item[ci]] - centre
        if pi.size:
            x, y = self._beside(item[pi], lon_k[pi], lat_k[pi])
            polygon_items = item[pi]

            def test(bucket: _EdgeBucket, rows: IntArray, c: IntArray) -> FloatArray:
                edges = bucket.distance(rows, x[c], y[c], self._x_scale[polygon_items[c]])
                return np.where(bucket.contains(rows, x[c], y[c]), edges, -edges)

            signed[pi] = self._per_bucket(polygon_items, test)
        approach = np.broadcast_to(np.asarray(zones), items.shape)[known] == ZONE_APPROACH
        signed[approach] += self._approach[item[approach]]  # NaN where the place has none
        out[known] = np.where(np.isnan(signed), -np.inf, signed)
        return out

    def fences_near(self, lon: float, lat: float, radius_m: float) -> list[tuple[IndexedFence, float]]:
        """Building zones within `radius_m` of the point, nearest first, with their distances."""
        x, y = self._project(np.array([lon]), np.array([lat]))
        if not (len(self) and np.isfinite(x[0]) and np.isfinite(y[0]) and radius_m >= 0):
            return []
        # Widen x by the point's own latitude scale (plus room): fences within a few km share it.
        x_scale = math.cos(math.radians(lat)) / math.cos(math.radians(self._project.lat0))
        reach_x, reach_y = radius_m * 1.1 / max(x_scale, 1e-6), radius_m * 1.1
        box = (x[0] - reach_x, y[0] - reach_y, x[0] + reach_x, y[0] + reach_y)
        items = self._grid.in_box(*box)
        reach_lon, turn = reach_x / self._project.kx, 360.0 * self._project.kx
        for side in (1.0, -1.0):  # the same box on the other side of ±180°, where fences reach it
            if lon - reach_lon + 360.0 * side <= self._lon_hi and lon + reach_lon + 360.0 * side >= self._lon_lo:
                x0, y0, x1, y1 = box
                items = np.union1d(items, self._grid.in_box(x0 + side * turn, y0, x1 + side * turn, y1))
        lons, lats = np.full(items.size, lon), np.full(items.size, lat)
        distance = self._building_distance(items, lons, lats, *self._beside(items, lons, lats))
        near = sorted((d, i) for d, i in zip(distance.tolist(), items.tolist(), strict=True) if d <= radius_m)
        return [(self._describe(item, ZONE_BUILDING), d) for d, item in near]

"""Geofence engine benchmark: raw shapely STRtree vs our index and batch engine, same data, same run.

The workload (see docs/performance.md) is a city-shaped synthetic one around Helsinki: building
polygons 20-200 m across and circles of 50-300 m radius scattered over 30 x 30 km, and devices
walking, cycling or driving across the same area, so most fixes are outside every fence. Everything
comes from a fixed seed; `generate_fences` and `generate_fixes` are public so a PostGIS baseline
can run on exactly the same data.

`run_engine_bench` returns plain dicts; `python -m bench.engine` prints a table (and `--json`).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from geofences.builder import hand_over, take_over
from geofences.domain import FenceSpec
from geofences.geodesy import EARTH_RADIUS_M
from geofences.index import FenceIndex
from geofences.transitions import DeviceState, TransitionConfig
from services.tracking import FixRecord, ZoneKey, run_transitions

CENTRE_LON, CENTRE_LAT = 24.94, 60.17  # Helsinki
HALF_SIDE_M = 15_000.0
BLOCK_M = 250.0  # street grid: streets every 250 m both ways
_DIRECTIONS = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # heading ^ 1 reverses
FenceEntry = tuple[int, int, FenceSpec]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FixArrays:
    """Fixes in arrival order (time order, devices interleaved). NaN speed = not reported."""

    device_ids: npt.NDArray[np.int64]
    ts: FloatArray
    lons: FloatArray
    lats: FloatArray
    accuracy_m: FloatArray
    speed_mps: FloatArray

    def __len__(self) -> int:
        return int(self.ts.size)

    def slice(self, start: int, stop: int) -> FixArrays:
        return FixArrays(*(getattr(self, name)[start:stop] for name in self.__slots__))


def to_lonlat(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Metres east/north of the centre -> lon/lat (equirectangular; exact enough at city scale)."""
    k = math.radians(1.0) * EARTH_RADIUS_M
    lon = CENTRE_LON + np.asarray(x, np.float64) / (k * math.cos(math.radians(CENTRE_LAT)))
    return lon, CENTRE_LAT + np.asarray(y, np.float64) / k


def _star_polygons(rng: np.random.Generator, n: int) -> npt.NDArray[np.object_]:
    """Simple star-shaped footprints with 4-12 vertices inside city blocks, clear of the streets."""
    across = 20.0 * 10.0 ** (rng.random(n) ** 2)  # 20-200 m, skewed small like real buildings
    clear = across / 2 + 8.0
    block = rng.integers(0, int(2 * HALF_SIDE_M / BLOCK_M), (2, n)) * BLOCK_M - HALF_SIDE_M
    cx, cy = block + rng.uniform(clear, BLOCK_M - clear, (2, n))
    corners = rng.integers(4, 13, n)
    courtyard = (across > 80) & (rng.random(n) < 0.2)
    out = np.empty(n, dtype=object)
    for k in range(4, 13):
        sel = np.flatnonzero(corners == k)
        # Evenly spread angles with bounded jitter keep every ring simple (valid).
        angle = (np.arange(k) + rng.uniform(0, 0.8, (sel.size, k))) * 2 * np.pi / k + rng.uniform(0, 7, (sel.size, 1))
        radius = across[sel, None] / 2 * rng.uniform(0.6, 1.0, (sel.size, k))
        dx, dy = radius * np.cos(angle), radius * np.sin(angle)
        shell = np.stack(to_lonlat(cx[sel, None] + dx, cy[sel, None] + dy), -1)
        hole = np.stack(to_lonlat(cx[sel, None] + 0.3 * dx, cy[sel, None] + 0.3 * dy), -1)
        out[sel] = shapely.polygons(shell)
        for i in np.flatnonzero(courtyard[sel]).tolist():
            out[sel[i]] = shapely.Polygon(shell[i], [hole[i]])
    return out


def generate_fences(n: int, seed: int = 42, circle_share: float = 0.03) -> list[FenceEntry]:
    """`n` fences as (fence_id, place_id, FenceSpec); fence ids are 1..n, every 10th shares a place.

    Buildings stand inside 250 m street blocks; circles (plazas, campuses) may cover streets.
    """
    rng = np.random.default_rng(seed)
    circle = rng.random(n) < circle_share
    polygons = iter(_star_polygons(rng, n - int(circle.sum())))
    centre_lon, centre_lat = to_lonlat(*rng.uniform(-HALF_SIDE_M, HALF_SIDE_M, (2, int(circle.sum()))))
    radius = 50.0 * 6.0 ** (rng.random(int(circle.sum())) ** 2)  # 50-300 m
    circles = iter(zip(centre_lon.tolist(), centre_lat.tolist(), radius.tolist(), strict=True))
    specs = []
    for is_circle in circle.tolist():
        if is_circle:
            lon, lat, r = next(circles)
            specs.append(FenceSpec("circle", shapely.Point(lon, lat), r))
        else:
            specs.append(FenceSpec("polygon", next(polygons)))
    return [(i + 1, i + 1 - int(i % 10 == 9), spec) for i, spec in enumerate(specs)]


def generate_approach_m(fences: Sequence[FenceEntry], share: float = 0.05, seed: int = 42) -> dict[int, float]:
    """Approach distances of 25-100 m for a `share` of the places."""
    rng = np.random.default_rng(seed + 1)
    places = sorted({place_id for _, place_id, _ in fences})
    chosen = [p for p, pick in zip(places, rng.random(len(places)) < share, strict=True) if pick]
    return dict(zip(chosen, rng.uniform(25, 100, len(chosen)).tolist(), strict=True))


def _walk_streets(rng: np.random.Generator, pace: FloatArray, dt: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Positions of devices following the street grid, turning at random at crossings, and now and
    then stepping 15-100 m into a block (a building, most likely) for 1-10 minutes."""
    steps, n = dt.shape
    x = rng.integers(0, int(2 * HALF_SIDE_M / BLOCK_M), n) * BLOCK_M - HALF_SIDE_M
    y = rng.integers(0, int(2 * HALF_SIDE_M / BLOCK_M), n) * BLOCK_M - HALF_SIDE_M
    heading: npt.NDArray[np.int64] = np.asarray(rng.integers(0, 4, n), dtype=np.int64)
    to_crossing = np.full(n, BLOCK_M)
    visit_left, visit_x, visit_y = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    visit_chance = np.where(pace < 2, 0.01, 0.002)
    out_x, out_y = np.empty((steps, n)), np.empty((steps, n))
    for t in range(steps):
        moving = visit_left == 0
        travel = np.where(moving, pace * dt[t], 0.0)
        turn = travel >= to_crossing
        first = np.minimum(travel, to_crossing)
        x, y = x + first * _DIRECTIONS[heading, 0], y + first * _DIRECTIONS[heading, 1]
        heading = np.where(turn, rng.integers(0, 4, n), heading)
        # A heading out of the area at its edge is reversed.
        outward = (np.abs(x + BLOCK_M * _DIRECTIONS[heading, 0]) > HALF_SIDE_M) | (
            np.abs(y + BLOCK_M * _DIRECTIONS[heading, 1]) > HALF_SIDE_M
        )
        heading = np.where(turn & outward, heading ^ 1, heading)
        rest = np.where(turn, travel - to_crossing, 0.0)
        x, y = x + rest * _DIRECTIONS[heading, 0], y + rest * _DIRECTIONS[heading, 1]
        to_crossing = np.where(turn, BLOCK_M - rest, to_crossing - travel)
        start = moving & (rng.random(n) < visit_chance)
        side = rng.choice([-1.0, 1.0], n) * rng.uniform(15, 100, n)
        visit_x = np.where(start, x - side * _DIRECTIONS[heading, 1], visit_x)
        visit_y = np.where(start, y + side * _DIRECTIONS[heading, 0], visit_y)
        visit_left = np.where(start, rng.integers(6, 61, n), np.maximum(visit_left - 1, 0))
        inside = visit_left > 0
        out_x[t], out_y[t] = np.where(inside, visit_x, x), np.where(inside, visit_y, y)
    return out_x, out_y


def _walk_anywhere(rng: np.random.Generator, pace: FloatArray, dt: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Random walks straight through buildings: a stress case, far more transitions than a city."""
    heading = rng.uniform(0, 2 * np.pi, dt.shape[1]) + np.cumsum(rng.normal(0, 0.35, dt.shape), axis=0)
    start = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M, (2, dt.shape[1]))
    x = start[0] + np.cumsum(pace * dt * np.cos(heading), axis=0)
    y = start[1] + np.cumsum(pace * dt * np.sin(heading), axis=0)
    fold = 4 * HALF_SIDE_M  # reflect at the edges of the area
    return (HALF_SIDE_M - np.abs((x + 3 * HALF_SIDE_M) % fold - 2 * HALF_SIDE_M)), (
        HALF_SIDE_M - np.abs((y + 3 * HALF_SIDE_M) % fold - 2 * HALF_SIDE_M)
    )


def generate_fixes(
    m: int, seed: int = 42, n_devices: int = 1000, interval_s: float = 10.0, movement: str = "streets"
) -> FixArrays:
    """`m` fixes of `n_devices` pedestrians, cyclists and cars, one fix each per ~`interval_s`.

    `movement` is "streets" (the city workload) or "anywhere" (the stress case). 5 % of fixes are
    network positions (100-1000 m accuracy) and 0.5 % replay the device's previous fix.
    """
    rng = np.random.default_rng(seed + 2)
    steps = max(1, math.ceil(m / n_devices))
    pace = rng.choice([1.4, 4.0, 12.0], n_devices, p=[0.6, 0.25, 0.15]) * rng.uniform(0.7, 1.3, n_devices)
    dt = interval_s * rng.uniform(0.8, 1.2, (steps, n_devices))
    x, y = (_walk_streets if movement == "streets" else _walk_anywhere)(rng, pace, dt)
    accuracy = np.where(
        rng.random(dt.shape) < 0.05, rng.uniform(100, 1000, dt.shape), rng.lognormal(2.1, 0.6, dt.shape)
    )
    lon, lat = to_lonlat(x + rng.normal(0, accuracy / 3), y + rng.normal(0, accuracy / 3))
    speed = np.where(rng.random(dt.shape) < 0.3, np.nan, np.maximum(pace + rng.normal(0, 0.5, dt.shape), 0))
    ts = 1.8e9 + rng.uniform(0, interval_s, n_devices) + np.cumsum(dt, axis=0)
    columns = [np.broadcast_to(np.arange(1, n_devices + 1), dt.shape), ts, lon, lat, accuracy, speed]
    replay = np.flatnonzero(rng.random(dt.shape)[1:].reshape(-1) < 0.005) + n_devices
    flat = [np.array(c, dtype=c.dtype).reshape(-1) for c in columns]
    for column in flat:
        column[replay] = column[replay - n_devices]
    return FixArrays(flat[0].astype(np.int64), *flat[1:]).slice(0, m)


def _circle_polygon(spec: FenceSpec) -> Any:
    """A 64-gon of the circle, built in metres around its centre, for the raw STRtree baseline."""
    lon, lat, radius = spec.geometry.x, spec.geometry.y, float(spec.radius_m or 0)
    angle = np.linspace(0, 2 * np.pi, 65)
    k = math.radians(1.0) * EARTH_RADIUS_M
    return shapely.Polygon(
        np.c_[lon + radius * np.cos(angle) / (k * math.cos(math.radians(lat))), lat + radius * np.sin(angle) / k]
    )


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def _records(fixes: FixArrays) -> dict[Any, list[FixRecord]]:
    """The batch's fixes per device, as the fix endpoints hand them to `run_transitions`."""
    out: dict[Any, list[FixRecord]] = {}
    for device, ts, lon, lat, accuracy in zip(
        fixes.device_ids.tolist(),
        fixes.ts.tolist(),
        fixes.lons.tolist(),
        fixes.lats.tolist(),
        fixes.accuracy_m.tolist(),
        strict=True,
    ):
        out.setdefault(device, []).append(FixRecord(datetime.fromtimestamp(ts, UTC), lon, lat, accuracy))
    return out


def _stream(index: FenceIndex, fixes: FixArrays, batch_size: int) -> dict[str, int]:
    """Feed all fixes through what the fix path runs (`services.tracking.run_transitions`: lookup, transitions,
    state), one device's part of each arrival-order batch at a time, carrying device state along."""
    states: dict[Any, DeviceState[ZoneKey]] = {}
    config = TransitionConfig()
    events = 0
    for start in range(0, len(fixes), batch_size):
        for device, records in _records(fixes.slice(start, start + batch_size)).items():
            states[device], happened = run_transitions(index, states.get(device, DeviceState()), records, config)
            events += len(happened)
    return {"events": events}


def _side_by_side(
    fences: list[FenceEntry], index: FenceIndex, fixes: FixArrays, repeats: int, batch_size: int
) -> dict[str, Any]:
    """Raw STRtree and our engine, alternated run by run on the same fixes; medians and ratios."""
    m = len(fixes)
    tree = shapely.STRtree([_circle_polygon(s) if s.kind == "circle" else s.geometry for _, _, s in fences])
    points = shapely.points(fixes.lons, fixes.lats)
    runs: dict[str, list[float]] = {"raw": [], "raw_points": [], "query": [], "engine": []}
    for _ in range(repeats):  # interleaved, so a noisy minute hits all of them alike
        runs["raw"].append(_timed(lambda: tree.query(points, predicate="intersects")))
        runs["raw_points"].append(
            _timed(lambda: tree.query(shapely.points(fixes.lons, fixes.lats), predicate="intersects"))
        )
        runs["query"].append(_timed(lambda: index.query_bulk(fixes.lons, fixes.lats)))
        runs["engine"].append(_timed(lambda: _stream(index, fixes, batch_size)))
    counts = _stream(index, fixes, batch_size)
    median = {name: statistics.median(times) for name, times in runs.items()}
    return {
        "fixes": m,
        "inside_any_share": float(np.unique(tree.query(points, predicate="intersects")[0]).size / m),
        "raw_strtree_fixes_per_s": m / median["raw"],
        "raw_strtree_with_points_fixes_per_s": m / median["raw_points"],
        "index_bulk_fixes_per_s": m / median["query"],
        "engine_fixes_per_s": m / median["engine"],
        "engine_vs_raw": statistics.median(r / e for r, e in zip(runs["raw"], runs["engine"], strict=True)),
        "engine_vs_raw_with_points": statistics.median(
            r / e for r, e in zip(runs["raw_points"], runs["engine"], strict=True)
        ),
        "events_per_fix": counts["events"] / m,
    }


def _latencies_us(run: Callable[[int], object], n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter_ns()
        run(i)
        times.append((time.perf_counter_ns() - start) / 1000)
    return times


def _bench_size(
    fences: list[FenceEntry], fixes: FixArrays, repeats: int, batch_size: int, seed: int = 42
) -> dict[str, Any]:
    gc.collect()
    rss_before = rss_bytes()
    index = FenceIndex.build(fences)
    gc.collect()
    rss_delta = rss_bytes() - rss_before
    out = {"fences": len(fences), **_side_by_side(fences, index, fixes, repeats, batch_size)}
    lons, lats = fixes.lons.tolist(), fixes.lats.tolist()
    out["single_query_p50_us"] = statistics.median(_latencies_us(lambda i: index.query(lons[i], lats[i]), 2000))
    one = [fixes.slice(i, i + 1) for i in range(2000)]
    singles = [next(iter(_records(f).values())) for f in one]
    out["engine_single_fix_p50_us"] = statistics.median(
        _latencies_us(lambda i: run_transitions(index, DeviceState(), singles[i], TransitionConfig()), 2000)
    )
    out["index_build_s"] = statistics.median(_timed(lambda: FenceIndex.build(fences)) for _ in range(repeats))
    out.update(_rebuild_while_querying(fences, index, lons, lats))
    out.update(_rebuild_in_process_while_querying(len(fences), seed, index, lons, lats))
    out["index_rss_delta_mb"] = rss_delta / 1e6
    out["process_rss_mb"] = rss_bytes() / 1e6
    return out


_generated: dict[tuple[int, int], list[FenceEntry]] = {}  # in the builder process


def _generate_there(n: int, seed: int) -> int:
    _generated[(n, seed)] = generate_fences(n, seed)
    return n


def _generated_index(n: int, seed: int, version: int) -> str:
    """In a builder process: the same fences, built there and handed over as the API's builder does (which reads
    them from PostGIS first; here they were generated before the clock started)."""
    return hand_over(FenceIndex.build(_generated[(n, seed)], version=version))


def _rebuild_in_process_while_querying(
    n: int, seed: int, index: FenceIndex, lons: list[float], lats: list[float]
) -> dict[str, float]:
    """As the API rebuilds (geofences/builder.py): in a spawned process, while this one keeps answering."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_generate_there, n, seed).result()  # spawned and imported beforehand, as the API's builder
        start = time.perf_counter()
        future = pool.submit(_generated_index, n, seed, index.version + 1)
        latencies, i = [], 0
        while not future.done():
            begin = time.perf_counter_ns()
            index.query(lons[i % len(lons)], lats[i % len(lats)])
            latencies.append((time.perf_counter_ns() - begin) / 1000)
            i += 1
        rebuilt = take_over(future.result())
        elapsed = time.perf_counter() - start
    assert len(rebuilt) == len(index)
    return {
        "rebuild_process_s": elapsed,
        "queries_during_process_rebuild": len(latencies),
        "query_p99_during_process_rebuild_us": float(np.percentile(latencies, 99)) if latencies else math.nan,
    }


def _rebuild_while_querying(
    fences: list[FenceEntry], index: FenceIndex, lons: list[float], lats: list[float]
) -> dict[str, float]:
    """Rebuild in a thread while this one keeps answering single queries on the old index."""
    rebuilt: list[FenceIndex] = []
    worker = threading.Thread(target=lambda: rebuilt.append(FenceIndex.build(fences, version=index.version + 1)))
    start = time.perf_counter()
    worker.start()
    latencies, i = [], 0
    while worker.is_alive():
        begin = time.perf_counter_ns()
        index.query(lons[i % len(lons)], lats[i % len(lats)])
        latencies.append((time.perf_counter_ns() - begin) / 1000)
        i += 1
    worker.join()
    return {
        "rebuild_concurrent_s": time.perf_counter() - start,
        "queries_during_rebuild": len(latencies),
        "query_p99_during_rebuild_us": float(np.percentile(latencies, 99)) if latencies else math.nan,
    }


def run_engine_bench(
    sizes: Sequence[int] = (1000, 10000, 100000),
    n_fixes: int = 200_000,
    seed: int = 42,
    repeats: int = 3,
    batch_size: int = 10_000,
    n_devices: int = 1000,
) -> dict[str, Any]:
    """Every size on the same city fixes; then the largest with approach zones, and with the
    stress walk (devices straight through buildings: ~5x the transitions)."""
    fixes = generate_fixes(n_fixes, seed, n_devices)
    results: dict[str, Any] = {"seed": seed, "batch_size": batch_size, "devices": n_devices, "sizes": {}}
    for n in sizes:
        results["sizes"][str(n)] = _bench_size(generate_fences(n, seed), fixes, repeats, batch_size, seed)
    largest = generate_fences(max(sizes), seed)
    approach = generate_approach_m(largest, seed=seed)
    with_approach = FenceIndex.build(largest, approach)
    results["approach_zones"] = {
        "fences": len(largest),
        "places_with_approach": len(approach),
        "build_s": statistics.median(_timed(lambda: FenceIndex.build(largest, approach)) for _ in range(repeats)),
        **_side_by_side(largest, with_approach, fixes, repeats, batch_size),
    }
    stress = generate_fixes(n_fixes, seed, n_devices, movement="anywhere")
    results["stress"] = {
        "fences": len(largest),
        **_side_by_side(largest, FenceIndex.build(largest), stress, repeats, batch_size),
    }
    return results


def _print_table(results: dict[str, Any]) -> None:
    rows = [
        ("fixes inside any fence", "inside_any_share", "{:.1%}"),
        ("raw STRtree query(points, intersects)", "raw_strtree_fixes_per_s", "{:,.0f}/s"),
        ("  same, creating the points too", "raw_strtree_with_points_fixes_per_s", "{:,.0f}/s"),
        ("index.query_bulk", "index_bulk_fixes_per_s", "{:,.0f}/s"),
        ("engine, transitions included", "engine_fixes_per_s", "{:,.0f}/s"),
        ("engine / raw STRtree", "engine_vs_raw", "{:.0%}"),
        ("engine / raw incl. points", "engine_vs_raw_with_points", "{:.0%}"),
        ("events per fix", "events_per_fix", "{:.3f}"),
        ("single query p50", "single_query_p50_us", "{:.0f} us"),
        ("engine, batch of one fix, p50", "engine_single_fix_p50_us", "{:.0f} us"),
        ("index build", "index_build_s", "{:.3f} s"),
        ("  in a thread, queries meanwhile", "queries_during_rebuild", "{:,}"),
        ("  their p99", "query_p99_during_rebuild_us", "{:.0f} us"),
        ("RSS delta of the index", "index_rss_delta_mb", "{:.0f} MB"),
        ("process RSS", "process_rss_mb", "{:.0f} MB"),
    ]
    columns = {f"{n} fences": row for n, row in results["sizes"].items()}
    largest = max(results["sizes"], key=int)
    columns[f"{largest} +approach"] = results["approach_zones"]
    columns[f"{largest} stress walk"] = results["stress"]
    print(f"{'':40}" + "".join(f"{name:>19}" for name in columns))
    for label, key, fmt in rows:
        cells = (fmt.format(row[key]) if key in row else "" for row in columns.values())
        print(f"{label:40}" + "".join(f"{cell:>19}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--fixes", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = run_engine_bench(args.sizes, args.fixes, args.seed, args.repeats)
    _print_table(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()

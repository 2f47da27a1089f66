"""The PostGIS baseline: the same fences and fixes as bench/engine.py, one `ST_Intersects` query per fix
over a GiST index, through asyncpg — what a service without an in-memory index would do."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import shapely

from bench.engine import FenceEntry, FixArrays, _circle_polygon
from infra.stack import PgCluster, free_port

QUERY = "SELECT id FROM bench_fences WHERE ST_Intersects(geom, ST_SetSRID(ST_MakePoint($1, $2), 4326))"


@contextmanager
def private_postgis() -> Iterator[str]:
    """A throw-away cluster on a free loopback port; yields an asyncpg DSN."""
    root = Path(tempfile.mkdtemp(prefix="placecast-bench-pg-"))
    os.chmod(root, 0o755)
    pg = PgCluster(root / "pg", free_port(), "placecast", "bench-password", "bench")
    try:
        pg.start()
        yield f"postgresql://placecast:bench-password@127.0.0.1:{pg.port}/bench"
    finally:
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


async def load_fences(dsn: str, fences: Sequence[FenceEntry]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_fences")
        await conn.execute("CREATE TABLE bench_fences (id bigint PRIMARY KEY, geom geometry(Geometry, 4326))")
        # Circles as 64-gons, exactly as the raw STRtree baseline sees them.
        rows = [
            (fence_id, shapely.to_wkb(_circle_polygon(spec) if spec.kind == "circle" else spec.geometry))
            for fence_id, _, spec in fences
        ]
        await conn.executemany("INSERT INTO bench_fences VALUES ($1, ST_SetSRID(ST_GeomFromWKB($2), 4326))", rows)
        await conn.execute("CREATE INDEX ON bench_fences USING gist (geom)")
        await conn.execute("ANALYZE bench_fences")
    finally:
        await conn.close()


async def _per_fix(dsn: str, lons: list[float], lats: list[float]) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(QUERY)
        times = []
        for lon, lat in zip(lons, lats, strict=True):
            start = time.perf_counter()
            await statement.fetch(lon, lat)
            times.append(time.perf_counter() - start)
        return times
    finally:
        await conn.close()


async def measure(dsn: str, fixes: FixArrays, n: int = 5000, connections: Sequence[int] = (1, 8)) -> dict[str, Any]:
    lons, lats = fixes.lons[:n].tolist(), fixes.lats[:n].tolist()
    await _per_fix(dsn, lons[:500], lats[:500])  # warm the cache and the plan
    out: dict[str, Any] = {"fixes": len(lons)}
    for c in connections:
        share = len(lons) // c
        start = time.perf_counter()
        parts = await asyncio.gather(
            *(_per_fix(dsn, lons[i * share : (i + 1) * share], lats[i * share : (i + 1) * share]) for i in range(c))
        )
        elapsed = time.perf_counter() - start
        times = [t for part in parts for t in part]
        out[f"connections_{c}"] = {"fixes_per_s": len(times) / elapsed, "p50_us": statistics.median(times) * 1e6}
    return out


def run_postgis_baseline(dsn: str, fences: Sequence[FenceEntry], fixes: FixArrays, n: int = 5000) -> dict[str, Any]:
    asyncio.run(load_fences(dsn, fences))
    return asyncio.run(measure(dsn, fixes, n))

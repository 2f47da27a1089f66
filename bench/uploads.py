"""How an upload's bytes are kept in PostgreSQL (services/imports.py): measured, not guessed.

`python -m bench.uploads [--mb 64]` writes a file of the upload limit's size (random bytes, as incompressible as
an .osm.pbf, and GeoJSON-like text), then stores and reads it back in a private PostGIS three ways, each in its
own process so the peak resident memory (ru_maxrss) is that method's alone:

- `bytea-whole`: one row, one value (the file held whole in memory on both sides);
- `bytea-chunks`: 1 MiB rows (`import_upload_chunks`), written and read one at a time, storage EXTERNAL or the
  default EXTENDED (pglz tried on every chunk);
- `large-object`: `lo_create` + `lo_put` of 1 MiB pieces, read back with `lo_get`.

It prints seconds to write and to read (into a file, as the worker does), the process's peak RSS and the space
on disk, per method and payload.
"""

# ruff: noqa: ASYNC230, ASYNC240 (a one-task measuring process: its file I/O blocks nobody)
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

CHUNK = 1 << 20
METHODS = ("bytea-whole", "bytea-chunks-external", "bytea-chunks-extended", "large-object")


def _pieces(path: Path):  # type: ignore[no-untyped-def]
    with path.open("rb") as source:
        while piece := source.read(CHUNK):
            yield piece


async def _measure(method: str, dsn: str, source: Path) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    sink = Path(tempfile.mkstemp(prefix="placecast-bench-upload-")[1])
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS bench_whole, bench_chunks;"
            " CREATE TABLE bench_whole (id int PRIMARY KEY, data bytea);"
            " CREATE TABLE bench_chunks (id int, seq int, data bytea, PRIMARY KEY (id, seq));"
        )
        if method.endswith("external"):
            await conn.execute("ALTER TABLE bench_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
        oid = 0
        started = time.perf_counter()
        async with conn.transaction():
            if method == "bytea-whole":
                await conn.execute("INSERT INTO bench_whole VALUES (1, $1)", source.read_bytes())
            elif method.startswith("bytea-chunks"):
                for seq, piece in enumerate(_pieces(source)):
                    await conn.execute("INSERT INTO bench_chunks VALUES (1, $1, $2)", seq, piece)
            else:
                oid = await conn.fetchval("SELECT lo_create(0)")
                for seq, piece in enumerate(_pieces(source)):
                    await conn.execute("SELECT lo_put($1, $2, $3)", oid, seq * CHUNK, piece)
        wrote = time.perf_counter() - started
        started = time.perf_counter()
        with sink.open("wb") as out:
            if method == "bytea-whole":
                out.write(await conn.fetchval("SELECT data FROM bench_whole WHERE id = 1"))
            elif method.startswith("bytea-chunks"):
                count = await conn.fetchval("SELECT count(*) FROM bench_chunks WHERE id = 1")
                for seq in range(count):
                    out.write(await conn.fetchval("SELECT data FROM bench_chunks WHERE id = 1 AND seq = $1", seq))
            else:
                offset = 0
                while piece := await conn.fetchval("SELECT lo_get($1, $2, $3)", oid, offset, CHUNK):
                    out.write(piece)
                    offset += len(piece)
        read = time.perf_counter() - started
        assert sink.stat().st_size == source.stat().st_size
        if method == "large-object":
            disk = await conn.fetchval("SELECT pg_total_relation_size('pg_largeobject')")
        elif method == "bytea-whole":
            disk = await conn.fetchval("SELECT pg_total_relation_size('bench_whole')")
        else:
            disk = await conn.fetchval("SELECT pg_total_relation_size('bench_chunks')")
        if oid:
            await conn.execute("SELECT lo_unlink($1)", oid)
        await conn.execute("DROP TABLE bench_whole, bench_chunks")
    finally:
        await conn.close()
        sink.unlink()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"write_s": wrote, "read_s": read, "peak_rss_mb": peak_mb, "disk_mb": disk / 1e6}


def _write_payloads(folder: Path, megabytes: int) -> dict[str, Path]:
    binary, text = folder / "random.bin", folder / "geojson.txt"
    with binary.open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(CHUNK))
    feature = '{"type":"Feature","id":"osm:way/%d","properties":{"name":"Place %d","kind":"library"},'
    feature += '"geometry":{"type":"Polygon","coordinates":[[[24.9%d,60.1%d],[24.94,60.17],[24.9%d,60.1%d]]]}},\n'
    with text.open("w") as out:
        n = 0
        while out.tell() < megabytes * CHUNK:
            out.write(feature % (n, n, n % 97, n % 89, n % 83, n % 79))
            n += 1
    return {"random (pbf-like)": binary, "GeoJSON text": text}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "DSN", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, dsn, file = args.one
        print(json.dumps(asyncio.run(_measure(method, dsn, Path(file)))))
        return
    from bench.postgis_baseline import private_postgis

    idle = subprocess.run(
        [sys.executable, "-c", "import asyncpg, resource; print(resource.getrusage(0).ru_maxrss / 1024)"],
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"upload of {args.mb} MiB; a process that only imports asyncpg peaks at {float(idle.stdout):.0f} MB RSS")
    print(f"{'payload':18} {'method':22} {'write s':>8} {'read s':>8} {'peak RSS MB':>12} {'on disk MB':>11}")
    with tempfile.TemporaryDirectory() as folder, private_postgis() as dsn:
        for payload, path in _write_payloads(Path(folder), args.mb).items():
            for method in METHODS:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.uploads", "--one", method, dsn, str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(done.stdout)
                print(
                    f"{payload:18} {method:22} {r['write_s']:8.2f} {r['read_s']:8.2f}"
                    f" {r['peak_rss_mb']:12.0f} {r['disk_mb']:11.1f}"
                )


if __name__ == "__main__":
    main()

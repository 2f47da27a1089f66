"""What one PostgreSQL primary sustains of the fix path's own transaction, measured with pgbench.

A private PostGIS cluster (fsync and synchronous_commit on, as in production) migrated to the real schema, one
organisation and N devices with their `device_states` rows; then pgbench runs the statements one fix request runs
(`services/tracking_repository.py`, `services/device_repository.py`), in one transaction:

    BEGIN;
    SELECT … FROM devices WHERE credential_hash = … FOR KEY SHARE;         -- the device's credential
    [INSERT INTO fix_batches … ON CONFLICT DO NOTHING;]                      -- batches only: claim the batch id
    WITH stored AS (INSERT INTO fixes …) SELECT … FROM device_states … FOR UPDATE;   -- STORE_AND_LOCK
    UPDATE device_states SET state = … WHERE device_id = …;                 -- SAVE_STATE
    COMMIT;

with one fix, or 100 in one statement, at 1, 8 and 40 connections, for 10k and 1M devices. Beside pgbench's rate
it reads the server's own counters: commits, WAL bytes and WAL syncs (fsyncs) per second, WAL per fix, and the
server's CPU per fix (the postmaster's process tree), and pg_test_fsync's rate for the data folder's disk — the
ceiling a commit per request meets. Events, visits and outbox rows (written only on a crossing) are not included.

Run: `placecast bench --only pgbench` (or `python -m bench.pgbench_fix [--quick]`); docs/scaling.md reads it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from infra.stack import PgCluster, private_stack

PG15 = Path("/usr/lib/postgresql/15/bin")
# A device's state as the fix path saves it (`tracking_rules.dump_state` + remembered places): inside one fence.
STATE = json.dumps(
    {
        "last_ts": 1796217600.0,
        "last_lon": 24.941234,
        "last_lat": 60.170456,
        "rejected_jumps": 0,
        "last_accuracy_m": 12.0,
        "last_seen_ts": 1796217600.0,
        "smoothed": [24.941201, 60.170433, 10.5, 1796217600.0],
        "last_depths": {"1204:0": 7.25, "1205:1": -3.5},
        "fences": {"1204:0": [1796217500.0, 1796217540.0, True], "1205:1": [1796217520.0, None, False]},
        "places": {"1204": 311, "1205": 311},
    },
    separators=(",", ":"),
)
AUTH = (
    "SELECT id, organisation_id, role FROM devices"
    " WHERE credential_hash = encode(sha256(convert_to('cred-' || :device, 'UTF8')), 'hex')"
    " AND revoked_at IS NULL FOR KEY SHARE;"
)
CLAIM = (
    "INSERT INTO fix_batches (device_id, batch_id, fix_count)"
    " VALUES (:device, 'b-' || :client_id || '-' || :batch, 100) ON CONFLICT DO NOTHING RETURNING fix_count;"
)
STORE_AND_LOCK = (
    "WITH stored AS ("
    " INSERT INTO fixes (organisation_id, device_id, device_ts, lon, lat, accuracy_m, speed_mps, batch_id, source)"
    " SELECT 1, :device, t, x, y, a, v, {batch_id}, 'native'"
    " FROM unnest({ts}::timestamptz[], {lon}::float8[], {lat}::float8[], {acc}::float8[], {speed}::float8[])"
    " AS u(t, x, y, a, v))"
    " SELECT ds.state, o.late_fix_after_s FROM device_states ds, organisations o"
    " WHERE ds.device_id = :device AND o.id = 1 FOR UPDATE OF ds;"
)
SAVE_STATE = f"UPDATE device_states SET state = '{STATE}'::jsonb, updated_at = now() WHERE device_id = :device;"


def _array(values: Sequence[object]) -> str:
    return "ARRAY[" + ",".join(str(v) for v in values) + "]"


def script(batch: int) -> str:
    """The pgbench script of one request with `batch` fixes (1: `POST /v1/fixes`; more: `/v1/fixes/batch`)."""
    ts = _array([f"'2026-12-02T10:{i // 60 % 60:02d}:{i % 60:02d}Z'" for i in range(batch)])
    lon = _array([f"{24.935 + (i * 0.000137) % 0.018:.6f}" for i in range(batch)])
    lat = _array([f"{60.164 + (i * 0.000091) % 0.015:.6f}" for i in range(batch)])
    acc = _array([f"{8 + i % 20}.0" for i in range(batch)])
    speed = _array([f"{(i % 15) / 10:.1f}" for i in range(batch)])
    batch_id = "NULL" if batch == 1 else "'b-' || :client_id || '-' || :batch"
    store = STORE_AND_LOCK.format(batch_id=batch_id, ts=ts, lon=lon, lat=lat, acc=acc, speed=speed)
    lines = ["\\set device random(1, :devices)"]
    if batch > 1:
        lines.append("\\set batch random(1, 1000000000000)")
    lines += ["BEGIN;", AUTH, *([CLAIM] if batch > 1 else []), store, SAVE_STATE, "COMMIT;"]
    return "\n".join(lines) + "\n"


def _dsn(env: dict[str, str], user: str = "placecast", password: str | None = None) -> str:
    password = password or env["PLACECAST_PG_PASSWORD"]
    return (
        f"host=127.0.0.1 port={env['PLACECAST_PG_PORT']} user={user} password={password}"
        f" dbname={env['PLACECAST_PG_DATABASE']}"
    )


def _grow(dsn: str, devices: int) -> dict[str, Any]:
    """Devices 1..`devices` (credential `cred-<id>`) and their states, in organisation 1; table sizes after."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM organisations").fetchone() == (0,):
            conn.execute("INSERT INTO organisations (id, name, slug) VALUES (1, 'bench', 'bench')")
        have = int(conn.execute("SELECT coalesce(max(id), 0) FROM devices").fetchone()[0])  # type: ignore[index]
        step = 200_000
        for first in range(have + 1, devices + 1, step):
            last = min(first + step - 1, devices)
            conn.execute(
                "INSERT INTO devices (id, organisation_id, platform, role, credential_hash)"
                " SELECT g, 1, 'android', 'visitor', encode(sha256(convert_to('cred-' || g, 'UTF8')), 'hex')"
                " FROM generate_series(%s::bigint, %s::bigint) g",
                (first, last),
            )
            conn.execute(
                "INSERT INTO device_states (device_id, state)"
                " SELECT g, %s::jsonb FROM generate_series(%s::bigint, %s::bigint) g",
                (STATE, first, last),
            )
        conn.execute("SELECT setval(pg_get_serial_sequence('devices', 'id'), %s)", (devices,))
        conn.execute("VACUUM ANALYZE devices")
        conn.execute("VACUUM ANALYZE device_states")
        sizes = conn.execute(
            "SELECT pg_total_relation_size('devices'), pg_total_relation_size('device_states')"
        ).fetchone()
    assert sizes is not None
    return {
        "devices": devices,
        "load_s": round(time.monotonic() - started, 1),
        "devices_table_mb": round(sizes[0] / 2**20, 1),
        "device_states_table_mb": round(sizes[1] / 2**20, 1),
    }


def _cpu_ticks(pid: int) -> int:
    """utime + stime of the postmaster, its reaped children (exited backends) and its live children."""

    def fields(p: int | str) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    own = fields(pid)
    total = sum(int(x) for x in own[11:15])  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                f = fields(entry.name)
            except OSError:
                continue
            if int(f[1]) == pid:  # ppid
                total += int(f[11]) + int(f[12])
    return total


def _counters(conn: psycopg.Connection[Any]) -> dict[str, float]:
    row = conn.execute(
        "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, d.xact_commit, w.wal_sync, w.wal_write, w.wal_fpi"
        " FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()"
    ).fetchone()
    assert row is not None
    return dict(zip(("wal_bytes", "commits", "wal_syncs", "wal_writes", "wal_fpi"), map(float, row), strict=True))


def _pgbench(env: dict[str, str], script_file: Path, devices: int, clients: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [
            str(PG15 / "pgbench"),
            "-n",
            "-M",
            "prepared",
            "-h",
            "127.0.0.1",
            "-p",
            env["PLACECAST_PG_PORT"],
            "-U",
            "placecast",
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(seconds),
            "-D",
            f"devices={devices}",
            "-f",
            str(script_file),
            env["PLACECAST_PG_DATABASE"],
        ],
        env={**os.environ, "PGPASSWORD": env["PLACECAST_PG_PASSWORD"]},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    ).stdout
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", out).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return {"tps": tps, "latency_ms": latency, "failed": int(failed.group(1)) if failed else 0}


def _measure(
    env: dict[str, str], pg_pid: int, script_file: Path, devices: int, batch: int, clients: int, seconds: int
) -> dict[str, Any]:
    with psycopg.connect(_dsn(env), autocommit=True) as conn:
        before, ticks = _counters(conn), _cpu_ticks(pg_pid)
        run = _pgbench(env, script_file, devices, clients, seconds)
        time.sleep(0.3)  # the backends exit and are reaped: their CPU moves into the postmaster's cutime
        after, cpu_s = _counters(conn), (_cpu_ticks(pg_pid) - ticks) / os.sysconf("SC_CLK_TCK")
    elapsed = float(seconds)  # the counters moved during pgbench's -T; set-up and the pause add nothing to them
    delta = {k: after[k] - before[k] for k in before}
    fixes = run["tps"] * batch * seconds  # pgbench's own count over -T (connection set-up excluded)
    return {
        "batch": batch,
        "connections": clients,
        "requests_per_s": round(run["tps"], 1),
        "fixes_per_s": round(run["tps"] * batch, 1),
        "latency_ms": run["latency_ms"],
        "failed": run["failed"],
        "commits_per_s": round(delta["commits"] / elapsed, 1),
        "wal_syncs_per_s": round(delta["wal_syncs"] / elapsed, 1),
        "commits_per_wal_sync": round(delta["commits"] / max(delta["wal_syncs"], 1), 2),
        "wal_mb_per_s": round(delta["wal_bytes"] / elapsed / 2**20, 2),
        "wal_bytes_per_fix": round(delta["wal_bytes"] / max(fixes, 1)),
        "full_page_images": int(delta["wal_fpi"]),
        "server_cpu_us_per_fix": round(cpu_s / max(fixes, 1) * 1e6, 1),
        "server_cores_busy": round(cpu_s / elapsed, 2),
    }


def _fsync_rate(folder: Path) -> dict[str, float]:
    """pg_test_fsync on the data folder's disk: one 8 kB write + fdatasync, per second (a commit's floor)."""
    out = subprocess.run(
        [str(PG15 / "pg_test_fsync"), "-s", "2", "-f", str(folder / "fsync.test")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    section = out.split("Compare file sync methods using one 8kB write", 1)[1].split("Compare", 1)[0]
    rates = {m: float(v) for m, v in re.findall(r"^\s+(\w+)\s+([\d.]+) ops/sec", section, re.MULTILINE)}
    return {"fdatasync_per_s": rates.get("fdatasync", float("nan")), "fsync_per_s": rates.get("fsync", float("nan"))}


def run_pgbench_bench(
    sizes: Sequence[int] = (10_000, 1_000_000),
    connections: Sequence[int] = (1, 8, 40),
    batches: Sequence[int] = (1, 100),
    seconds: int = 20,
) -> dict[str, Any]:
    results: dict[str, Any] = {"cores": os.cpu_count(), "seconds": seconds, "sizes": {}}
    with private_stack("placecast-pgbench-") as (root, env):
        subprocess.run([sys.executable, "-m", "infra.cli", "migrate"], env={**os.environ, **env}, check=True)
        settings = psycopg.connect(_dsn(env), autocommit=True)
        with settings:
            results["settings"] = {
                name: settings.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("fsync", "synchronous_commit", "wal_level", "shared_buffers", "max_wal_size")
            }
        data_dir = root / "pg"
        results["disk"] = _fsync_rate(root)
        pg_pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        scripts = {}
        for batch in batches:
            scripts[batch] = root / f"fix_{batch}.sql"
            scripts[batch].write_text(script(batch))
        for devices in sorted(sizes):
            table = _grow(_dsn(env), devices)
            runs = []
            for batch in batches:
                with psycopg.connect(_dsn(env), autocommit=True) as conn:
                    conn.execute("TRUNCATE fixes, fix_batches")
                _checkpoint(data_dir, env)
                series = [
                    _measure(env, pg_pid, scripts[batch], devices, batch, clients, seconds) for clients in connections
                ]
                stored = _fixes_bytes(_dsn(env))
                for run in series:  # the table and its indexes per fix stored, over the series
                    run["fixes_bytes_per_fix"] = round(stored / sum(r["fixes_per_s"] * seconds for r in series))
                    print(json.dumps({"devices": devices, **run}), file=sys.stderr)
                runs += series
            results["sizes"][str(devices)] = {**table, "runs": runs}
    return results


def _fixes_bytes(dsn: str) -> int:
    """Heap and indexes of every partition of `fixes`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i"
            " WHERE i.inhparent = 'fixes'::regclass"
        ).fetchone()
    return int(row[0]) if row else 0


def _checkpoint(data_dir: Path, env: dict[str, str]) -> None:
    """A checkpoint before each series, so each starts with the same (full-page-write) debt."""
    pg = PgCluster(data_dir, int(env["PLACECAST_PG_PORT"]), "placecast", env["PLACECAST_PG_PASSWORD"], "placecast")
    with psycopg.connect(pg._superuser_dsn(env["PLACECAST_PG_DATABASE"]), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(json.dumps(run_pgbench_bench(seconds=8 if quick else 20), indent=2))

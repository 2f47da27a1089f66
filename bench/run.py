"""`placecast bench`: every benchmark in one run, side by side, as a table and as JSON.

Ratios are what to read: the engine and its PostGIS baseline run on the same data in the same run.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def run(parts: Sequence[str], quick: bool, console: Console) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "machine": platform.node(),
        "cores": __import__("os").cpu_count(),
        "quick": quick,
    }
    sizes = (1000, 10000) if quick else (1000, 10000, 100000)
    if "engine" in parts:
        from bench.engine import generate_fences, generate_fixes, run_engine_bench
        from bench.postgis_baseline import private_postgis, run_postgis_baseline

        console.print("engine: our index + transitions vs raw STRtree (same fixes, same process)…")
        n_fixes = 50_000 if quick else 200_000
        results["engine"] = run_engine_bench(sizes=sizes, n_fixes=n_fixes)
        console.print("engine: the PostGIS per-fix baseline on the same fences and fixes…")
        fixes = generate_fixes(n_fixes)
        baseline: dict[str, Any] = {}
        with private_postgis() as dsn:
            for n in sizes:
                baseline[str(n)] = run_postgis_baseline(dsn, generate_fences(n), fixes, n=2000 if quick else 5000)
        results["postgis"] = baseline
    if "flap" in parts:
        from bench.flap import run_flap_bench

        console.print("flap: the transition rules, old and new, on realistic GPS traces around Helsinki's buildings…")
        results["flap"] = run_flap_bench(per_scenario=8 if quick else 20)
    if "http" in parts:
        from bench.http_ingest import run_http_bench

        console.print("http: the API as `infra/run.sh` starts it, driven by wrk on loopback…")
        results["http"] = run_http_bench(seconds=8 if quick else 15)
    if "push" in parts:
        from bench.push import run_push_bench

        console.print("push: firebase-admin's send paths alone against the local FCM-compatible server…")
        results["push"] = run_push_bench(n=1000 if quick else 2000)
    if "pipeline" in parts:
        from bench.pipeline import run_pipeline_bench

        console.print("pipeline: outbox → arq → rules → firebase-admin, and latency at 1,000 fixes/s…")
        results["pipeline"] = run_pipeline_bench(quick=quick)
    if "pgbench" in parts:
        from bench.pgbench_fix import run_pgbench_bench

        console.print("pgbench: the fix path's transaction on one PostgreSQL primary, single and batched…")
        quick_sizes = (10_000, 100_000)
        results["pgbench"] = run_pgbench_bench(
            sizes=quick_sizes if quick else (10_000, 1_000_000), seconds=8 if quick else 20
        )
    results["finished"] = datetime.now(UTC).isoformat()
    return results


def print_tables(results: dict[str, Any], console: Console) -> None:
    if "flap" in results:
        _flap_table(results["flap"], console)
    if "engine" in results:
        table = Table(title="Geofence engine (fixes/s, one core) vs PostGIS per-fix ST_Intersects, same data")
        for column in (
            "fences",
            "raw STRtree",
            "engine (transitions)",
            "engine / raw",
            "PostGIS 1 conn",
            "PostGIS 8 conns",
            "engine / PostGIS 1",
            "index build s",
            "rebuild under load s, thread / process",
            "index RSS MB",
        ):
            table.add_column(column, justify="right")
        for n, row in results["engine"]["sizes"].items():
            pg = results.get("postgis", {}).get(n, {})
            one = pg.get("connections_1", {}).get("fixes_per_s", float("nan"))
            eight = pg.get("connections_8", {}).get("fixes_per_s", float("nan"))
            table.add_row(
                f"{int(n):,}",
                f"{row['raw_strtree_fixes_per_s']:,.0f}",
                f"{row['engine_fixes_per_s']:,.0f}",
                f"{row['engine_vs_raw']:.0%}",
                f"{one:,.0f}",
                f"{eight:,.0f}",
                f"{row['engine_fixes_per_s'] / one:,.0f}x",
                f"{row['index_build_s']:.2f}",
                f"{row['rebuild_concurrent_s']:.2f} / {row.get('rebuild_process_s', float('nan')):.2f}",
                f"{row['index_rss_delta_mb']:.0f}",
            )
        console.print(table)
    if "http" in results:
        http = results["http"]
        table = Table(title=f"HTTP ingest, API with {http['workers']} worker processes, {http['devices']} devices")
        for column in ("requests", "fixes/s", "p50 ms", "p99 ms", "non-2xx"):
            table.add_column(column, justify="right")
        for name, key in (("single fix", "single"), ("batches of 100", "batch_100")):
            row = http[key]
            table.add_row(
                name,
                f"{row['fixes_per_s']:,.0f}",
                f"{row['p50_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                " ".join([str(row["non_2xx"]), *(f"({n} x {c})" for c, n in row.get("non_2xx_statuses", {}).items())]),
            )
        console.print(table)
    if "pgbench" in results:
        _pgbench_table(results["pgbench"], console)
    if "pipeline" in results:
        _pipeline_tables(results["pipeline"], console)
    if "push" in results:
        console.print("[bold]push[/bold]")
        console.print_json(json.dumps(results["push"], default=str))


def _flap_table(flap: dict[str, Any], console: Console) -> None:
    table = Table(
        title="GPS truth: old rules vs new, same traces (targets: <= 0.05 false/device-h near walls, "
        "0 missed walks in, median enter delay <= 15 s)"
    )
    for column in ("measure", "old rules", "new rules"):
        table.add_column(column, justify="right")
    rows = [
        ("false transitions / device-hour near walls", "near_walls", "false_per_device_hour"),
        ("false enters near walls", "near_walls", "false_enters"),
        ("false exits near walls", "near_walls", "false_exits"),
        ("walks in: true enters", "walks_in", "true_enters"),
        ("walks in: missed enters", "walks_in", "missed_enters"),
        ("walks in: enters later than 15 s", "walks_in", "late_enters_over_15s"),
        ("walks in: median enter delay s", "walks_in", "median_enter_delay_s"),
        ("walks in: p90 enter delay s", "walks_in", "p90_enter_delay_s"),
        ("walks: false transitions", "walks_in", "false_enters"),
        ("pushes from late (offline) fixes", "all", "pushes_from_late_fixes"),
    ]
    for label, group, key in rows:
        table.add_row(label, str(flap["old"][group][key]), str(flap["new"][group][key]))
    for scenario in ("walk_in_out", "walk_in_deep", "walk_in_out_no_accuracy", "offline_batch"):
        old, new = (flap[rules]["scenarios"].get(scenario) for rules in ("old", "new"))
        if old and new:
            for label, key in (("missed", "missed_enters"), ("median delay s", "median_enter_delay_s")):
                table.add_row(f"{scenario}: {label}", str(old[key]), str(new[key]))
    console.print(table)


def _pgbench_table(pgb: dict[str, Any], console: Console) -> None:
    disk = pgb["disk"]
    table = Table(
        title=f"The fix path's transaction on one PostgreSQL primary (pgbench, {pgb['cores']} cores, fsync and"
        f" synchronous_commit on; disk: {disk['fdatasync_per_s']:,.0f} fdatasync/s)"
    )
    for column in (
        "devices",
        "fixes per request",
        "connections",
        "fixes/s",
        "latency ms",
        "commits/s",
        "WAL syncs/s",
        "WAL MB/s",
        "WAL B/fix",
        "server CPU us/fix",
        "stored B/fix",
    ):
        table.add_column(column, justify="right")
    for devices, size in pgb["sizes"].items():
        for run in size["runs"]:
            table.add_row(
                f"{int(devices):,}",
                str(run["batch"]),
                str(run["connections"]),
                f"{run['fixes_per_s']:,.0f}",
                f"{run['latency_ms']:.2f}",
                f"{run['commits_per_s']:,.0f}",
                f"{run['wal_syncs_per_s']:,.0f}",
                f"{run['wal_mb_per_s']:.1f}",
                f"{run['wal_bytes_per_fix']:,}",
                f"{run['server_cpu_us_per_fix']:.0f}",
                str(run.get("fixes_bytes_per_fix", "")),
            )
    console.print(table)


def _pipeline_tables(pipe: dict[str, Any], console: Console) -> None:
    title = (
        f"Delivery, {pipe['pushes']:,} pushes (median of {len(pipe['passes']['one'])} passes), FCM stand-in"
        f" answering in {pipe['fcm_latency_ms']} ms, chunks of {pipe['chunk']}, {pipe['in_flight']} in flight,"
        f" {pipe['cores']} cores"
    )
    table = Table(title=title)
    for column in ("", "pushes/s", "vs firebase-admin alone"):
        table.add_column(column, justify="right")
    ceiling = pipe["ceiling_firebase_admin_pushes_per_s"]
    table.add_row("firebase-admin alone (ceiling)", f"{ceiling:,.0f}", "100%")
    for name, key in (("pipeline, 1 worker", "pipeline_1_worker"), ("pipeline, 2 workers", "pipeline_2_workers")):
        value = pipe[f"{key}_pushes_per_s"]
        table.add_row(name, f"{value:,.0f}", f"{value / ceiling:.0%}")
    console.print(table)
    table = Table(title="Fix accepted → push request at FCM, through the API, one worker (after a 2 s warm-up)")
    for column in ("load", "answers", "enters → pushes", "p50 ms", "p95 ms"):
        table.add_column(column, justify="right")
    for key, value in pipe.items():
        if key.startswith("latency_"):
            load = f"{value['fixes_per_s']:,.0f} fixes/s, {value['fixes_per_request']} per request"
            answers = ", ".join(f"{n} x {code}" for code, n in value["answers"].items())
            pushes = f"{value['enter_events']:,} → {value['pushes']:,}"
            table.add_row(load, answers, pushes, f"{value['p50_ms']:.0f}", f"{value['p95_ms']:.0f}")
    console.print(table)


def main(parts: Sequence[str], quick: bool) -> Path:
    console = Console()
    started = time.monotonic()
    results = run(parts, quick, console)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print_tables(results, console)
    console.print(f"wrote {out} in {time.monotonic() - started:.0f} s")
    return out

"""Smoke test of `infra/cluster.sh`: the whole topology up in a folder and on ports of its own, a fix answered 202
and read back from the leader and the synchronous standby, Patroni's leader and sync standby, the Sentinels'
master, the workers on Redis through the Sentinels; then `infra/cluster.sh stop`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 240


def free_block(size: int = 100) -> int:
    """A base port below the ephemeral range whose `size` ports are all free."""
    for base in range(21000, 32000, size):
        if all(_free(port) for port in range(base, base + size)):
            return base
    raise RuntimeError("no free block of ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def cluster():
    var_dir = Path(tempfile.mkdtemp(prefix="placecast-cluster-"))
    var_dir.chmod(0o755)  # the postgres system user reaches its nodes' folders
    env = {key: value for key, value in os.environ.items() if not key.startswith("PLACECAST_")}
    env |= {"PLACECAST_VAR_DIR": str(var_dir), "PLACECAST_CLUSTER_PORT_BASE": str(free_block())}
    script = str(ROOT / "infra" / "cluster.sh")
    try:
        up = subprocess.run([script], env=env, capture_output=True, text=True, timeout=UP_TIMEOUT_S, check=False)
        if up.returncode != 0:
            pytest.fail(f"infra/cluster.sh failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
        root = var_dir / "cluster"
        yield root, json.loads((root / "topology.json").read_text())
    finally:
        stop = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert stop.returncode == 0, stop.stderr[-2000:]
        shutil.rmtree(var_dir, ignore_errors=True)


def _secret(root: Path, name: str) -> str:
    return (root / "secrets" / name).read_text().strip()


def test_a_fix_is_on_two_nodes(cluster):
    root, topology = cluster
    base = f"http://127.0.0.1:{topology['haproxy']['api_port']}"
    enrolment = {"X-Enrolment-Key": (root / "demo-enrolment-key").read_text().strip()}
    with httpx.Client(base_url=base, timeout=30) as http:
        device = http.post("/v1/devices", json={"platform": "android", "fcm_token": "smoke"}, headers=enrolment)
        assert device.status_code == 201, device.text
        headers = {"Authorization": f"Bearer {device.json()['credential']}"}
        fix = {"lon": 24.9384, "lat": 60.1699, "accuracy_m": 8.0, "ts": datetime.now(UTC).isoformat()}
        answer = http.post("/v1/fixes", json=fix, headers=headers)
        assert answer.status_code == 202, answer.text
        assert http.get("/admin").status_code in (200, 302, 307)  # the admin UI on the same address
    device_id = device.json()["device_id"]
    password = _secret(root, "pg-password")
    nodes = {node["name"]: node["port"] for node in topology["postgres"]}
    listed = subprocess.run(
        ["patronictl", "-c", topology["postgres"][0]["patroni_config"], "list", "-f", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    roles = {member["Member"]: member["Role"] for member in json.loads(listed.stdout)}
    assert "Leader" in roles.values() and "Sync Standby" in roles.values(), roles
    for role in ("Leader", "Sync Standby"):  # the 202 came after the commit reached both
        port = nodes[next(name for name, found in roles.items() if found == role)]
        dsn = f"host=127.0.0.1 port={port} user=placecast password={password} dbname=placecast"
        deadline = time.monotonic() + 5  # the standby has it on disk; applying it may take a moment
        while True:
            with psycopg.connect(dsn) as conn:
                stored = conn.execute("SELECT count(*) FROM fixes WHERE device_id = %s", (device_id,)).fetchone()
            if (stored and stored[0] == 1) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stored == (1,), (role, stored)


def test_redis_behind_sentinels(cluster):
    root, topology = cluster
    password = _secret(root, "redis-password")
    cli = ["redis-cli", "--no-auth-warning", "-a", password, "-p"]
    sentinel = str(topology["sentinels"][0]["port"])
    master = subprocess.run(
        [*cli, sentinel, "sentinel", "get-master-addr-by-name", topology["redis_master_name"]],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert master[0] == "127.0.0.1" and int(master[1]) in {node["port"] for node in topology["redis"]}
    replicas = subprocess.run([*cli, master[1], "info", "replication"], capture_output=True, text=True, check=True)
    assert "connected_slaves:1" in replicas.stdout
    # Both workers reached the master through the Sentinels: arq's health check key is written at start.
    health = subprocess.run([*cli, master[1], "exists", "arq:queue:health-check"], capture_output=True, text=True)
    assert health.stdout.strip() == "1"
    assert all(worker["pid"] for worker in topology["workers"])

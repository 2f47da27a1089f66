"""Uploaded imports with the API and the worker on different machines, as far as one machine can show it: each
process has its own working directory, var folder and temporary folder, so the only thing they share is PostgreSQL
and Redis. The import succeeds, its bytes leave PostgreSQL when it ends, and a worker killed mid-import leaves a
failed import (not one stuck in "storing") with its bytes swept."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import redis
from typer.testing import CliRunner

from infra.cli import app as cli
from infra.stack import free_port, start_api
from services.imports import CUT_OFF, TERMINAL
from tests.e2e.ui_helpers import stop

ROOT = Path(__file__).resolve().parents[2]
EXTRACT = ROOT / "tests" / "data" / "osm" / "helsinki-centre.osm.pbf"
runner = CliRunner()


def start_worker_in(folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`python -m infra.worker` run from `folder`, with its own var and temporary folders inside it."""
    (folder / "var").mkdir(parents=True, exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)
    own = {
        **env,
        "PLACECAST_VAR_DIR": str(folder / "var"),
        "TMPDIR": str(folder / "tmp"),
        "PYTHONPATH": str(ROOT),  # the code, not the files: nothing of the API's folders
    }
    log = (folder / "worker.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "infra.worker"], cwd=folder, env={**os.environ, **own}, stdout=log, stderr=log
    )


@pytest.fixture(scope="module")
def api(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    api_var = tmp_path_factory.mktemp("api-machine") / "var"
    env = {**test_env, "PLACECAST_VAR_DIR": str(api_var)}
    port = free_port()
    process = start_api(env, port)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "var": api_var}
    finally:
        stop(process)


@pytest.fixture(scope="module")
def key(api: dict[str, Any]) -> dict[str, str]:
    slug = "anywhere-" + secrets.token_hex(3)
    result = runner.invoke(cli, ["create-org", "Import anywhere", slug])
    assert result.exit_code == 0, result.output
    return {"X-API-Key": result.output.strip().splitlines()[-1]}


@pytest.fixture
def dsn(settings: Any) -> str:
    return str(settings.sync_database_url).replace("postgresql+psycopg", "postgresql")


def upload(api: dict[str, Any], key: dict[str, str], name: str, content: bytes) -> str:
    answer = httpx.post(f"{api['url']}/admin/v1/imports", files={"file": (name, content)}, headers=key, timeout=60)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def state(api: dict[str, Any], key: dict[str, str], import_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{api['url']}/admin/v1/imports/{import_id}", headers=key, timeout=10)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def wait_for(api: dict[str, Any], key: dict[str, str], import_id: str, done: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not done(now := state(api, key, import_id)):
        assert time.monotonic() < deadline, now
        time.sleep(0.02)
    return now


def upload_rows(dsn: str, import_id: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        uploads = conn.execute("SELECT count(*) FROM import_uploads WHERE id = %s", (import_id,)).fetchone()
        chunks = conn.execute("SELECT count(*) FROM import_upload_chunks WHERE upload_id = %s", (import_id,)).fetchone()
    assert uploads is not None and chunks is not None
    return int(uploads[0]), int(chunks[0])


def test_a_worker_elsewhere_imports_what_the_api_received(api, key, dsn, test_env, tmp_path) -> None:
    elsewhere = tmp_path / "worker-machine"
    worker = start_worker_in(elsewhere, test_env)
    try:
        good = upload(api, key, "helsinki-centre.osm.pbf", EXTRACT.read_bytes())
        final = wait_for(api, key, good, lambda s: s["phase"] in TERMINAL, 120)
        assert (final["phase"], final["created"]) == ("done", 62), final
        assert upload_rows(dsn, good) == (0, 0), "the bytes left PostgreSQL when the import ended"

        broken = upload(api, key, "broken.osm.pbf", b"not a pbf at all" * 100_000)
        failed = wait_for(api, key, broken, lambda s: s["phase"] in TERMINAL, 60)
        assert failed["phase"] == "failed" and failed["error"].startswith("could not read the OSM file"), failed
        assert upload_rows(dsn, broken) == (0, 0), "and when it failed"
    finally:
        stop(worker)
    assert not (api["var"] / "uploads").exists(), "the API kept no file for the worker"
    assert not (elsewhere / "var" / "uploads").exists()
    assert list((elsewhere / "tmp").glob("placecast-import-*")) == [], "the worker's own copy is gone too"


def test_a_worker_killed_mid_import_leaves_a_failed_import_and_no_bytes(api, key, dsn, test_env, tmp_path) -> None:
    # Enough places that storing them takes seconds: the kill lands while the state says "storing".
    features = [
        {
            "type": "Feature",
            "id": f"hall-{i}",
            "properties": {"name": f"Hall {i}", "kind": "library", "radius_m": 30},
            "geometry": {"type": "Point", "coordinates": [24.9 + (i % 100) * 0.001, 60.1 + (i // 100) * 0.001]},
        }
        for i in range(3000)
    ]
    import_id = upload(api, key, "halls.geojson", orjson.dumps({"type": "FeatureCollection", "features": features}))
    lease = {"PLACECAST_IMPORT_LEASE_S": "2"}
    first = start_worker_in(tmp_path / "first", {**test_env, **lease})
    try:
        storing = wait_for(api, key, import_id, lambda s: s["phase"] == "storing" and s["done"] > 0, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert storing["done"] < 3000, "the kill came too late to test anything"
    assert upload_rows(dsn, import_id)[0] == 1, "the bytes are still there, held by a dead worker"
    time.sleep(1)
    assert state(api, key, import_id)["phase"] == "storing", "nobody updates it now"

    # Another worker's sweep (at its start, then every 10 s) ends it once the lease has lapsed.
    second = start_worker_in(tmp_path / "second", {**test_env, **lease})
    try:
        final = wait_for(api, key, import_id, lambda s: s["phase"] in TERMINAL, 40)
    finally:
        stop(second)
        # arq keeps the killed worker's job "in progress" for its time limit (an hour): take it out of the queue,
        # or every burst worker of the later tests would wait for it.
        queue = redis.Redis(port=int(test_env["PLACECAST_REDIS_PORT"]), password=test_env["PLACECAST_REDIS_PASSWORD"])
        name = f"import:{import_id}"
        queue.zrem("arq:queue", name)
        queue.delete(f"arq:job:{name}", f"arq:in-progress:{name}", f"arq:retry:{name}")
        queue.close()
    assert final["phase"] == "failed" and final["error"] == CUT_OFF, final
    assert final["done"] >= storing["done"], "what was stored before the kill is kept"
    assert upload_rows(dsn, import_id) == (0, 0), "the sweep deleted the bytes"

"""The OpenAPI document is the contract: schemathesis runs every check against both APIs on a real uvicorn.

The mobile API (`/v1`) runs with a registered device's credential and the organisation's enrolment key, the admin
API (`/admin/v1`) with an owner's API key, so the generated requests reach past authentication. Each operation
gets a bounded number of examples (`EXAMPLES`); under CI=true the run is deterministic. A failure prints
schemathesis' own report, with a curl line reproducing each finding.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack import free_port, start_api

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Per operation and phase; about two minutes for both APIs on two cores.
EXAMPLES = 20
# Server-sent event streams stay open while the client listens: a request never ends, so they are left out.
STREAMS = r"^/(v1/inbox/stream|admin/v1/live|admin/v1/imports/\{import_id\}/events)$"
# These end the credential the run authenticates with; everything after them would only see 401.
SELF_ENDING = ["DELETE /v1/devices/me", "POST /v1/devices/me/credential"]


@pytest.fixture(scope="module")
def api_url(test_env) -> Iterator[str]:
    port = free_port()
    # One device sends every /v1 request of the run: the per-device rate limit would answer most of them 429.
    process = start_api({**test_env, "PLACECAST_DEVICE_REQUESTS_PER_WINDOW": "1000000"}, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def keys(app, client) -> dict[str, str]:
    from kernel.uow import unit_of_work
    from services.models import Role
    from services.orgs import create_api_key, create_organisation

    slug = "contract-" + secrets.token_hex(4)
    async with unit_of_work(app.state.resources.session_factory) as uow:
        organisation_id = await create_organisation(uow.session, name=slug, slug=slug)
        admin = await create_api_key(uow.session, organisation_id=organisation_id, name="admin", role=Role.owner)
        enrolment = await create_api_key(uow.session, organisation_id=organisation_id, name="app", purpose="enrolment")
    device = await client.post("/v1/devices", json={"platform": "android"}, headers={"X-Enrolment-Key": enrolment})
    assert device.status_code == 201, device.text
    return {"admin": admin, "enrolment": enrolment, "device": device.json()["credential"]}


def schemathesis(url: str, tmp_path: Path, path_regex: str, headers: dict[str, str], exclude: list[str]) -> None:
    args = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{url}/openapi.json"]
    args += ["--checks", "all", "--generation-with-security-parameters", "false"]
    # One worker: CPython 3.11's compile() in concurrent threads can fail ("AST constructor recursion depth
    # mismatch") inside schemathesis' coverage phase.
    args += ["--max-examples", str(EXAMPLES), "--workers", "1", "--no-color", "--request-timeout", "10"]
    args += ["--include-path-regex", path_regex, "--exclude-path-regex", STREAMS]
    args += ["--report", "junit", "--report-dir", str(tmp_path)]
    # CI replays a fixed set of examples; locally each run explores anew. No example database either way.
    args += ["--generation-deterministic"] if os.environ.get("CI") else ["--generation-database", "none"]
    for operation in exclude:
        args += ["--exclude-name", operation]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-3000:]


def test_mobile_api_keeps_its_contract(api_url, keys, tmp_path) -> None:
    headers = {"Authorization": f"Bearer {keys['device']}", "X-Enrolment-Key": keys["enrolment"]}
    schemathesis(api_url, tmp_path, r"^/v1/", headers, SELF_ENDING)


def test_admin_api_keeps_its_contract(api_url, keys, tmp_path) -> None:
    schemathesis(api_url, tmp_path, r"^/admin/v1/", {"X-API-Key": keys["admin"]}, [])

"""Two API processes against one PostGIS and one Redis: consistent device state, fresh indexes."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from typer.testing import CliRunner

from infra.cli import app as cli

EXTRACT = Path(__file__).resolve().parents[1] / "data" / "osm" / "helsinki-centre.osm.pbf"
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[24.90, 60.20], [24.902, 60.20], [24.902, 60.201], [24.90, 60.201], [24.90, 60.20]]],
}
runner = CliRunner()


async def new_org(app) -> tuple[dict[str, str], str]:
    from kernel.uow import unit_of_work
    from services.models import Role
    from services.orgs import create_api_key, create_organisation

    slug = "e2e-" + secrets.token_hex(4)
    async with unit_of_work(app.state.resources.session_factory) as uow:
        org = await create_organisation(uow.session, name=slug, slug=slug)
        admin = await create_api_key(uow.session, organisation_id=org, name="a", role=Role.owner)
        enrol = await create_api_key(uow.session, organisation_id=org, name="e", purpose="enrolment")
    return {"X-API-Key": admin}, enrol


async def test_concurrent_fixes_across_two_processes_give_one_enter(two_replicas, app) -> None:
    admin, enrol = await new_org(app)
    async with httpx.AsyncClient(timeout=30) as http:
        created = await http.post(
            f"{two_replicas[0]}/admin/v1/places",
            headers=admin,
            json={"name": "Sq", "kind": "school", "fences": [{"geometry": SQUARE}]},
        )
        assert created.status_code == 201
        device = await http.post(
            f"{two_replicas[1]}/v1/devices", headers={"X-Enrolment-Key": enrol}, json={"platform": "android"}
        )
        auth = {"Authorization": f"Bearer {device.json()['credential']}"}
        start = datetime.now(UTC) - timedelta(minutes=10)
        bodies = [
            {"lon": 24.901, "lat": 60.2005, "accuracy_m": 5, "ts": (start + timedelta(seconds=i)).isoformat()}
            for i in range(40)
        ]
        answers = await asyncio.gather(
            *(http.post(f"{two_replicas[i % 2]}/v1/fixes", json=body, headers=auth) for i, body in enumerate(bodies))
        )
    assert [a.status_code for a in answers] == [202] * 40
    enters = [e for a in answers for e in a.json()["events"] if e["kind"] == "enter"]
    assert len(enters) == 1


async def test_admin_change_on_one_replica_reaches_the_other_within_a_second(two_replicas, app) -> None:
    admin, enrol = await new_org(app)
    async with httpx.AsyncClient(timeout=30) as http:
        device = await http.post(
            f"{two_replicas[1]}/v1/devices", headers={"X-Enrolment-Key": enrol}, json={"platform": "ios"}
        )
        auth = {"Authorization": f"Bearer {device.json()['credential']}"}
        now = datetime.now(UTC)
        first = await http.post(
            f"{two_replicas[1]}/v1/fixes",
            headers=auth,
            json={
                "lon": 24.901,
                "lat": 60.2005,
                "accuracy_m": 5,
                "ts": (now - timedelta(seconds=60)).isoformat(),
            },
        )
        assert first.json()["events"] == []  # replica 1 has built this organisation's (empty) index
        created = await http.post(
            f"{two_replicas[0]}/admin/v1/places",
            headers=admin,
            json={"name": "Sq", "kind": "school", "fences": [{"geometry": SQUARE}]},
        )
        changed_at = time.monotonic()
        seen: list[dict[str, object]] = []
        while not seen and time.monotonic() - changed_at < 1.0:
            await asyncio.sleep(0.1)
            ts = datetime.now(UTC) - timedelta(seconds=30) + timedelta(seconds=time.monotonic() - changed_at)
            answer = await http.post(
                f"{two_replicas[1]}/v1/fixes",
                headers=auth,
                json={"lon": 24.901, "lat": 60.2005, "accuracy_m": 5, "ts": ts.isoformat()},
            )
            seen = answer.json()["events"]
    assert [(e["kind"], e["place_id"]) for e in seen] == [("enter", created.json()["id"])]


def test_simulated_visitor_walks_into_oodi_and_out(two_replicas, test_env) -> None:
    slug = "sim-" + secrets.token_hex(3)
    assert runner.invoke(cli, ["create-org", slug, slug]).exit_code == 0
    assert runner.invoke(cli, ["import-osm", str(EXTRACT), "--org", slug]).exit_code == 0
    key = runner.invoke(cli, ["create-api-key", slug, "--name", "app", "--purpose", "enrolment"])
    assert key.exit_code == 0, key.output
    result = runner.invoke(
        cli,
        [
            "simulate",
            "--route",
            "visitor-oodi",
            "--url",
            two_replicas[0],
            "--enrolment-key",
            key.output.strip(),
        ],
    )
    assert result.exit_code == 0, result.output
    oodi = [line.split()[1] for line in result.output.splitlines() if "Helsingin keskustakirjasto Oodi" in line]
    assert oodi == ["enter", "dwell", "exit"]

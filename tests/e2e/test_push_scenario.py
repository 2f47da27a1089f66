"""Issue scenario end to end, processes as a user starts them: API (uvicorn), worker (arq), the local
FCM-compatible server over TLS + HTTP/2 driven by firebase-admin, and `placecast simulate`."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from infra.cli import app as cli
from infra.fake_fcm import RunningFake, local_fcm
from infra.simulate import ROUTES, walk
from infra.stack import free_port, start_api
from tests.e2e.ui_helpers import start_worker

EXTRACT = Path(__file__).resolve().parents[1] / "data" / "osm" / "helsinki-centre.osm.pbf"
runner = CliRunner()


@pytest.fixture(scope="module")
def push_stack(test_env, tmp_path_factory) -> Iterator[dict[str, Any]]:
    with local_fcm(tmp_path_factory.mktemp("push")) as (fake, fcm_env):
        env = {**test_env, **fcm_env}
        api_port = free_port()
        api = start_api(env, api_port)
        worker = start_worker(env)
        try:
            yield {"url": f"http://127.0.0.1:{api_port}", "fake": fake}
        finally:
            for process in (worker, api):
                process.terminate()
                process.wait(timeout=15)


def pushes(fake: RunningFake, predicate: Any, want: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """The fake FCM's accepted messages matching `predicate`, once `want` have arrived (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    with fake.client() as http:
        while True:
            found = [m for m in http.get("/_fake/messages").json() if predicate(m)]
            if len(found) >= want or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def make_org(slug: str) -> tuple[dict[str, str], str]:
    owner = runner.invoke(cli, ["create-org", slug, slug]).output.strip()
    assert runner.invoke(cli, ["import-osm", str(EXTRACT), "--org", slug]).exit_code == 0
    enrol = runner.invoke(cli, ["create-api-key", slug, "--purpose", "enrolment"]).output.strip()
    return {"X-API-Key": owner}, enrol


def place_id(http: httpx.Client, admin: dict[str, str], name: str) -> int:
    items = http.get("/admin/v1/places", params={"q": name}, headers=admin).json()["items"]
    return int(next(p["id"] for p in items if p["name"] == name))


def test_simulated_visitor_gets_exactly_one_push_and_one_inbox_entry(push_stack, settings) -> None:
    admin, enrol = make_org("push-" + secrets.token_hex(3))
    title = "Children's reading hour " + secrets.token_hex(3)
    with httpx.Client(base_url=push_stack["url"], timeout=10) as http:
        oodi = place_id(http, admin, "Helsingin keskustakirjasto Oodi")
        created = http.post(
            "/admin/v1/content",
            headers=admin,
            json={"place_id": oodi, "title": title, "body": "Floor 2 at 15:00", "trigger": "enter"},
        )
        assert created.status_code == 201, created.text
    result = runner.invoke(
        cli, ["simulate", "--route", "visitor-oodi", "--url", push_stack["url"], "--enrolment-key", enrol]
    )
    assert result.exit_code == 0, result.output
    assert "enter  Helsingin keskustakirjasto Oodi" in result.output
    arrived = pushes(push_stack["fake"], lambda m: (m["notification"] or {}).get("title") == title, want=1)
    time.sleep(2)  # anything duplicated would arrive by now (sweeper runs every 5 s)
    arrived = pushes(
        push_stack["fake"], lambda m: (m["notification"] or {}).get("title") == title, want=99, timeout_s=5
    )
    assert len(arrived) == 1
    assert arrived[0]["http"] == "2"  # firebase-admin's HTTP/2 path, as against real FCM
    assert arrived[0]["android"]["priority"] == "high"
    assert arrived[0]["data"]["place_id"] == str(oodi)
    token = arrived[0]["token"]
    assert token.startswith("sim-visitor-oodi-")
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn:
        inbox = conn.execute(
            "SELECT n.id, o.status FROM notifications n JOIN deliveries o ON o.notification_id = n.id"
            " AND o.channel = 'fcm' WHERE n.title = %s",
            (title,),
        ).fetchall()
    assert len(inbox) == 1 and inbox[0][1] == "sent"


def test_staff_member_arriving_at_the_fire_station_gets_the_task(push_stack) -> None:
    admin, enrol = make_org("staff-" + secrets.token_hex(3))
    fcm_token = "staff-phone-" + secrets.token_hex(4)
    with httpx.Client(base_url=push_stack["url"], timeout=10) as http:
        station = place_id(http, admin, "Erottajan paloasema")
        task = http.post(
            "/admin/v1/tasks",
            headers=admin,
            json={"place_id": station, "title": "Inspect the fire doors", "team": "facilities"},
        ).json()
        registered = http.post(
            "/v1/devices",
            headers={"X-Enrolment-Key": enrol},
            json={
                "platform": "android",
                "role": "staff",
                "team": "facilities",
                "fcm_token": fcm_token,
                "consents": {"tasks": True},
            },
        )
        me = {"Authorization": f"Bearer {registered.json()['credential']}"}
        start = time.time() - 600
        for offset, lon, lat, accuracy in walk(ROUTES["staff-fire-station"], 1.4, 5.0, 3.0):
            http.post(
                "/v1/fixes",
                headers=me,
                json={
                    "lon": lon,
                    "lat": lat,
                    "accuracy_m": accuracy,
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + offset)),
                },
            )
        arrived = pushes(push_stack["fake"], lambda m: m["token"] == fcm_token, want=1)
        assert [m["notification"]["title"] for m in arrived] == ["Task: Inspect the fire doors"]
        mine = http.get("/v1/tasks", headers=me).json()
        assert [(t["id"], t["status"]) for t in mine] == [(task["id"], "notified")]
        assert http.post(f"/v1/tasks/{task['id']}/acknowledge", headers=me).json()["status"] == "acknowledged"
        done = http.post(f"/v1/tasks/{task['id']}/complete", headers=me, json={"note": "All doors close."}).json()
        assert done["status"] == "done"
        board = http.get("/admin/v1/tasks", headers=admin).json()
        assert [(t["status"], t["note"]) for t in board] == [("done", "All doors close.")]

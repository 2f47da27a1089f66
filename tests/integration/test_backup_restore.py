"""The restore drill: an organisation deleted by mistake comes back, exactly as it was, by a point-in-time restore.

On a cluster of its own (never the session's shared test cluster: this one is stopped and restored), archiving its
WAL through pgBackRest as `placecast up` does: load an organisation (places, devices, fixes, events, visits,
notifications) through the API and the pipeline, take a full backup with `placecast backup`, load more (only in
the archived WAL), note the time, delete the organisation, `placecast restore --to` that time, and read every row
of it back: equal to what was read before the delete, while what was committed after the moment is gone.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.backup import PgBackRest
from infra.settings import Settings
from infra.stack import PgCluster, free_port
from kernel.jobs import RESOURCES
from notifications.tasks import deliver_events
from tests.integration.test_pipeline_inbox import add_content, add_task
from tests.world import BLOCK, FAR_OUTSIDE, INSIDE, World, fix, register

# Every row of one organisation, table by table, as JSON (geometry as its hex EWKB: compared byte for byte).
ROWS = {
    "organisations": "SELECT to_jsonb(t) FROM organisations t WHERE id = %(o)s",
    "api_keys": "SELECT to_jsonb(t) FROM api_keys t WHERE organisation_id = %(o)s ORDER BY id",
    "places": "SELECT to_jsonb(t) FROM places t WHERE organisation_id = %(o)s ORDER BY id",
    "geofences": "SELECT to_jsonb(t) FROM geofences t WHERE organisation_id = %(o)s ORDER BY id",
    "devices": "SELECT to_jsonb(t) FROM devices t WHERE organisation_id = %(o)s ORDER BY id",
    "device_states": "SELECT to_jsonb(s) FROM device_states s JOIN devices d ON d.id = s.device_id"
    " WHERE d.organisation_id = %(o)s ORDER BY s.device_id",
    "fixes": "SELECT to_jsonb(t) FROM fixes t WHERE organisation_id = %(o)s ORDER BY id, received_at",
    "events": "SELECT to_jsonb(t) FROM events t WHERE organisation_id = %(o)s ORDER BY id",
    "outbox": "SELECT to_jsonb(x) FROM outbox x JOIN events e ON e.id = x.event_id"
    " WHERE e.organisation_id = %(o)s ORDER BY x.id",
    "visits": "SELECT to_jsonb(t) FROM visits t WHERE organisation_id = %(o)s ORDER BY id",
    "content_items": "SELECT to_jsonb(t) FROM content_items t WHERE organisation_id = %(o)s ORDER BY id",
    "staff_tasks": "SELECT to_jsonb(t) FROM staff_tasks t WHERE organisation_id = %(o)s ORDER BY id",
    "notifications": "SELECT to_jsonb(t) FROM notifications t WHERE organisation_id = %(o)s ORDER BY id",
    "deliveries": "SELECT to_jsonb(d) FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
    " WHERE n.organisation_id = %(o)s ORDER BY d.id",
}


@dataclass
class Drill:
    root: Path
    settings: Settings
    pg: PgCluster
    env: dict[str, str]

    def placecast(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("placecast")), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"placecast {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def superuser(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            f"host=127.0.0.1 port={self.pg.port} user=postgres dbname={self.pg.database}"
            f" password={self.pg.superuser_password()}",
            autocommit=True,
        )

    def rows(self, organisation_id: int) -> dict[str, list[Any]]:
        with self.superuser() as conn:
            return {name: [r[0] for r in conn.execute(query, {"o": organisation_id})] for name, query in ROWS.items()}


@pytest.fixture(scope="module")
def drill() -> Iterator[Drill]:
    """A cluster and Redis of the drill's own, set up as `placecast up` sets up the project's (archiving on)."""
    root = Path(tempfile.mkdtemp(prefix="placecast-backup-"))
    os.chmod(root, 0o755)  # the postgres system user must reach its data folder and the repository
    values = {
        "environment": "test",
        "var_dir": str(root / "var"),
        "pg_port": str(free_port()),
        "pg_password": secrets.token_urlsafe(24),
        "redis_port": str(free_port()),
        "redis_password": secrets.token_urlsafe(24),
        "secret_key": secrets.token_urlsafe(32),
        "late_fix_after_s": str(30 * 86400),  # tests/world.py's device clock runs days behind
        "backup_archive_timeout_s": "60",
    }
    env = {**os.environ, **{f"PLACECAST_{name.upper()}": value for name, value in values.items()}}
    settings = Settings(**values)  # type: ignore[arg-type]
    from infra.cli import stack

    pg, redis = stack(settings)
    assert pg.archive_command is not None and "archive-push" in pg.archive_command
    backrest = PgBackRest.for_settings(settings, pg)
    try:
        backrest.configure()
        pg.start()
        backrest.ensure_stanza()
        redis.start()
        drill = Drill(root, settings, pg, env)
        drill.placecast("migrate")
        yield drill
    finally:
        redis.stop()
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


async def _walk(app: Any, client: httpx.AsyncClient, devices: list[dict[str, str]]) -> None:
    """Each device walks in and out of the building; the pipeline turns the events into notifications."""
    event_ids: list[int] = []
    for device in devices:
        for where in (FAR_OUTSIDE, INSIDE, INSIDE, FAR_OUTSIDE, FAR_OUTSIDE):
            answer = await client.post("/v1/fixes", json=fix(where, seconds=120), headers=device)
            assert answer.status_code == 202, answer.text
            event_ids += [e["id"] for e in answer.json()["events"]]
    assert event_ids
    # The worker's job, run here on this app's resources (the worker's own would read the session's settings).
    done = await deliver_events({RESOURCES: app.state.resources}, event_ids)
    assert done["events"] == len(event_ids)


async def _read_api(client: httpx.AsyncClient, world: World, devices: list[dict[str, str]]) -> dict[str, Any]:
    """What the organisation's people see: places, events, visits through the admin API, each device's inbox."""
    seen: dict[str, Any] = {}
    for path in ("/admin/v1/places", "/admin/v1/events", "/admin/v1/visits"):
        answer = await client.get(path, params={"limit": 500}, headers=world.admin)
        assert answer.status_code == 200, answer.text
        seen[path] = answer.json()
    for n, device in enumerate(devices):
        answer = await client.get("/v1/inbox", headers=device)
        assert answer.status_code == 200, answer.text
        seen[f"inbox {n}"] = answer.json()
    return seen


async def _populate(app: Any, client: httpx.AsyncClient) -> tuple[World, list[dict[str, str]]]:
    from kernel.uow import unit_of_work
    from services.models import Role
    from services.orgs import create_api_key, create_organisation

    slug = "city-" + secrets.token_hex(3)
    async with unit_of_work(app.state.resources.session_factory) as uow:
        organisation_id = await create_organisation(uow.session, name="City library network", slug=slug)
        admin = await create_api_key(uow.session, organisation_id=organisation_id, name="admin", role=Role.owner)
        enrol = await create_api_key(uow.session, organisation_id=organisation_id, name="app", purpose="enrolment")
    headers = {"X-API-Key": admin}
    place_ids = []
    for n, name in enumerate(("Oodi", "Rikhardinkatu library", "Kallio library")):
        body = {"name": name, "kind": "library", "fences": [{"geometry": BLOCK}] if n == 0 else []}
        if n:
            body["fences"] = [{"geometry": {"type": "Point", "coordinates": [24.95 + n / 100, 60.17]}, "radius_m": 40}]
        answer = await client.post("/admin/v1/places", json=body, headers=headers)
        assert answer.status_code == 201, answer.text
        place_ids.append(answer.json()["id"])
    world = World(organisation_id, headers, {"X-Enrolment-Key": enrol}, place_ids[0])
    await add_content(app, world, title="Reading hour")
    await add_content(app, world, title="Leaving so soon?", trigger="exit")
    await add_task(app, world)
    devices = [await register(client, world, consents={"offers": True}) for _ in range(4)]
    await _walk(app, client, devices)
    return world, devices


async def test_an_organisation_deleted_by_mistake_is_restored_to_the_moment_before(drill: Drill) -> None:
    from infra.app import create_app

    async def session(work: Any) -> Any:
        application = create_app(drill.settings)
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await work(application, http)

    world, devices = await session(_populate)
    backed_up = drill.placecast("backup", "--full")
    assert " full " in backed_up
    # pgBackRest records a backup's end in whole seconds and restores a time only from a backup ended before it.
    await asyncio.sleep(1.1)

    async def more(application: Any, http: httpx.AsyncClient) -> dict[str, Any]:
        # After the backup: these rows exist only in the archived WAL, so the restore must replay it.
        extra = [await register(http, world, consents={"offers": True}) for _ in range(2)]
        await _walk(application, http, devices[:2] + extra)
        devices.extend(extra)
        renamed = await http.patch(
            f"/admin/v1/places/{world.place_id}", json={"name": "Oodi Central Library"}, headers=world.admin
        )
        assert renamed.status_code == 200, renamed.text
        return await _read_api(http, world, devices)

    seen_before = await session(more)
    before = drill.rows(world.organisation_id)
    for table in ("places", "geofences", "devices", "fixes", "events", "visits", "notifications", "deliveries"):
        assert before[table], f"the drill needs {table}"
    assert len(before["devices"]) == 6 and len(before["places"]) == 3
    assert {n["title"] for n in before["notifications"]} == {"Reading hour", "Leaving so soon?"}

    with drill.superuser() as conn:
        moment = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        await asyncio.sleep(0.3)
        # The mistake: one statement, the cascade takes places, devices, events, notifications with it.
        conn.execute("DELETE FROM organisations WHERE id = %s", (world.organisation_id,))
        gone = drill.rows(world.organisation_id)
        assert not gone["places"] and not gone["devices"] and not gone["events"] and not gone["notifications"]
        # Work after the mistake, e.g. another organisation: a restore to the moment before undoes it too.
        later = conn.execute(
            "INSERT INTO organisations (name, slug) VALUES ('After the moment', 'after-the-moment') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]

    started = time.monotonic()
    said = drill.placecast("restore", "--to", moment.isoformat(sep=" "), "--yes", timeout=300)
    took = time.monotonic() - started
    print(f"\nrestore drill: `placecast restore --to` took {took:.1f} s (it reported {said.strip()} s)")

    after = drill.rows(world.organisation_id)
    for table, rows in before.items():
        assert after[table] == rows, f"{table}: {len(after[table])} rows after the restore, {len(rows)} before"
    with drill.superuser() as conn:
        assert conn.execute("SELECT count(*) FROM organisations WHERE id = %s", (later,)).fetchone() == (0,)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)

    async def read(application: Any, http: httpx.AsyncClient) -> dict[str, Any]:
        seen = await _read_api(http, world, devices)
        # The restored database takes writes: a device keeps walking.
        answer = await http.post("/v1/fixes", json=fix(INSIDE, seconds=120), headers=devices[0])
        assert answer.status_code == 202, answer.text
        return seen

    assert await session(read) == seen_before
    # Archiving goes on from the restored cluster's new timeline: the next backup works.
    assert " incr " in drill.placecast("backup", "--incr")

"""The notification pipeline on real PostGIS, Redis and a real arq worker: inbox, exactly once, tasks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tests.api.conftest import FAR_OUTSIDE, INSIDE, World, fix, register
from tests.integration.worker_helpers import run_worker


async def add_content(app, world: World, **values) -> int:
    fields = {
        "title": "Reading hour",
        "body": "Stories at 15:00",
        "trigger": "enter",
        "cooldown_s": 3600,
        **values,
    }
    async with app.state.resources.session_factory() as session, session.begin():
        return int(
            (
                await session.execute(
                    text(
                        "INSERT INTO content_items (organisation_id, place_id, title, body, trigger, cooldown_s)"
                        " VALUES (:o, :p, :title, :body, :trigger, :cooldown_s) RETURNING id"
                    ),
                    {"o": world.organisation_id, "p": world.place_id, **fields},
                )
            ).scalar_one()
        )


async def add_task(app, world: World, ack_within_s: int = 1800) -> int:
    async with app.state.resources.session_factory() as session, session.begin():
        return int(
            (
                await session.execute(
                    text(
                        "INSERT INTO staff_tasks (organisation_id, place_id, team, title, body, ack_within_s)"
                        " VALUES (:o, :p, 'facilities', 'Inspect the fire doors', 'Floors 1-3', :a) RETURNING id"
                    ),
                    {"o": world.organisation_id, "p": world.place_id, "a": ack_within_s},
                )
            ).scalar_one()
        )


async def walk_in(client, device) -> list[int]:
    await client.post("/v1/fixes", json=fix(FAR_OUTSIDE), headers=device)
    answer = await client.post("/v1/fixes", json=fix(INSIDE), headers=device)
    return [e["id"] for e in answer.json()["events"]]


async def test_enter_puts_the_content_in_the_inbox_once(client, app, world: World, settings) -> None:
    await add_content(app, world)
    device = await register(client, world, consents={"offers": True}, fcm_token=None)
    event_ids = await walk_in(client, device)
    assert len(event_ids) == 1
    # The API enqueued a job after commit; a duplicate job for the same events must change nothing.
    await run_worker(settings, jobs=[("deliver_events", (event_ids,)), ("deliver_events", (event_ids,))])
    await run_worker(settings, jobs=[("deliver_events", (event_ids,))])
    inbox = (await client.get("/v1/inbox", headers=device)).json()["items"]
    assert [i["title"] for i in inbox] == ["Reading hour"]
    opened = await client.post(f"/v1/inbox/{inbox[0]['id']}/opened", headers=device)
    assert opened.status_code == 200 and opened.json()["opened_at"]


async def test_no_consent_no_notification(client, app, world: World, settings) -> None:
    await add_content(app, world)
    device = await register(client, world, consents={"offers": False})
    await walk_in(client, device)
    await run_worker(settings)
    assert (await client.get("/v1/inbox", headers=device)).json()["items"] == []


async def test_sweeper_recovers_events_whose_job_was_lost(client, app, world: World, settings) -> None:
    await add_content(app, world, title="Recovered")
    device = await register(client, world, consents={"offers": True})
    await walk_in(client, device)
    from arq import create_pool

    from infra.container import redis_settings

    redis = await create_pool(redis_settings(settings))
    await redis.flushdb()  # Redis restarted: the queued job is gone, the outbox row is not
    await redis.aclose()
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE outbox SET created_at = created_at - interval '1 minute' WHERE processed_at IS NULL")
        )
    await run_worker(settings, jobs=[("sweep", ())])
    inbox = (await client.get("/v1/inbox", headers=device)).json()["items"]
    assert [i["title"] for i in inbox] == ["Recovered"]


async def test_other_devices_notification_cannot_be_opened(client, app, world: World, settings) -> None:
    await add_content(app, world)
    owner = await register(client, world, consents={"offers": True})
    other = await register(client, world)
    await walk_in(client, owner)
    await run_worker(settings)
    notification = (await client.get("/v1/inbox", headers=owner)).json()["items"][0]
    assert (await client.post(f"/v1/inbox/{notification['id']}/opened", headers=other)).status_code == 404


async def test_staff_task_workflow(client, app, world: World, settings) -> None:
    task_id = await add_task(app, world)
    staff = await register(client, world, role="staff", team="facilities", consents={"tasks": True})
    visitor = await register(client, world, consents={"offers": True, "tasks": True})
    await walk_in(client, visitor)
    await walk_in(client, staff)
    await run_worker(settings)
    assert (await client.get("/v1/tasks", headers=visitor)).status_code == 403
    tasks = (await client.get("/v1/tasks", headers=staff)).json()
    assert [(t["id"], t["status"]) for t in tasks] == [(task_id, "notified")]
    inbox = (await client.get("/v1/inbox", headers=staff)).json()["items"]
    assert inbox[0]["task_id"] == task_id and "Inspect the fire doors" in inbox[0]["title"]
    early = await client.post(f"/v1/tasks/{task_id}/complete", json={"note": "x" * 5000}, headers=staff)
    assert early.status_code == 422
    ack = await client.post(f"/v1/tasks/{task_id}/acknowledge", headers=staff)
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    assert (await client.post(f"/v1/tasks/{task_id}/acknowledge", headers=staff)).status_code == 409
    done = await client.post(f"/v1/tasks/{task_id}/complete", json={"note": "Doors close fine"}, headers=staff)
    assert done.json()["status"] == "done" and done.json()["note"] == "Doors close fine"
    async with app.state.resources.session_factory() as session:
        actions = (
            (
                await session.execute(
                    text("SELECT action FROM audit_log WHERE entity = 'staff_task' AND entity_id = :t ORDER BY id"),
                    {"t": task_id},
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["notified", "acknowledged", "completed"]


async def test_unacknowledged_task_escalates_to_the_supervisor(client, app, world: World, settings) -> None:
    task_id = await add_task(app, world, ack_within_s=60)
    staff = await register(client, world, role="staff", team="facilities", consents={"tasks": True})
    supervisor = await register(client, world, role="staff", team="facilities", consents={"tasks": True})
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE devices SET is_supervisor = true WHERE id = :d"),
            {"d": (await client.get("/v1/devices/me", headers=supervisor)).json()["id"]},
        )
    await walk_in(client, staff)
    await run_worker(settings)
    await run_worker(settings, jobs=[("sweep", ())])
    assert (await client.get("/v1/inbox", headers=supervisor)).json()["items"] == []  # not overdue yet
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE staff_tasks SET notified_at = :t WHERE id = :id"),
            {"t": datetime.now(UTC) - timedelta(minutes=2), "id": task_id},
        )
    await run_worker(settings, jobs=[("sweep", ())])
    await run_worker(settings, jobs=[("sweep", ())])
    escalations = (await client.get("/v1/inbox", headers=supervisor)).json()["items"]
    assert len(escalations) == 1 and escalations[0]["task_id"] == task_id
    assert escalations[0]["title"].startswith("Not acknowledged")

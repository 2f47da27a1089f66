"""Events reach the pipeline through per-window arq jobs (notifications.queue), on real Redis and PostGIS."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import infra.worker
from notifications.queue import PENDING_KEY, enqueue_events
from tests.api.conftest import World
from tests.integration.test_pipeline_inbox import add_content
from tests.integration.worker_helpers import run_worker


async def seed_events(app, world: World, count: int) -> list[int]:
    """`count` devices that consent to offers, each with one enter event waiting in the outbox."""
    async with app.state.resources.session_factory() as session, session.begin():
        devices = (
            await session.execute(
                text(
                    "INSERT INTO devices (organisation_id, platform, role, credential_hash, consents)"
                    " SELECT :o, 'android', 'visitor', md5(random()::text) || g, '{\"offers\": true}'"
                    " FROM generate_series(1, :n) g RETURNING id"
                ),
                {"o": world.organisation_id, "n": count},
            )
        ).scalars()
        events = (
            await session.execute(
                text(
                    "INSERT INTO events (organisation_id, device_id, place_id, kind, zone, occurred_at)"
                    " SELECT :o, d, :p, 'enter', 'building', now() FROM unnest(CAST(:d AS bigint[])) d RETURNING id"
                ),
                {"o": world.organisation_id, "p": world.place_id, "d": list(devices)},
            )
        ).scalars()
        ids = sorted(events)
        await session.execute(text("INSERT INTO outbox (event_id) SELECT unnest(CAST(:ids AS bigint[]))"), {"ids": ids})
    return ids


async def notifications_per_event(app, event_ids: list[int]) -> dict[int, int]:
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(
            text(
                "SELECT event_id, count(*) FROM notifications"
                " WHERE event_id = ANY(CAST(:ids AS bigint[])) GROUP BY event_id"
            ),
            {"ids": event_ids},
        )
        return {int(e): int(c) for e, c in rows}


async def pipeline_jobs(app) -> list[str]:
    return [
        j.decode() for j in await app.state.resources.redis.zrange("arq:queue", 0, -1) if j.startswith(b"pipeline:")
    ]


async def test_many_requests_in_one_window_make_one_job_that_delivers_every_event(
    client, app, world: World, settings
) -> None:
    await add_content(app, world, title="One job", cooldown_s=0)
    event_ids = await seed_events(app, world, 30)
    for event_id in event_ids:  # as 30 requests would, each after its commit
        await enqueue_events(app.state.resources.redis, [event_id], window_s=2.0)

    assert 1 <= len(await pipeline_jobs(app)) <= 2  # one per window: 30 calls may straddle a boundary

    await run_worker(settings)
    assert await notifications_per_event(app, event_ids) == dict.fromkeys(event_ids, 1)
    assert await app.state.resources.redis.llen(PENDING_KEY) == 0
    assert await pipeline_jobs(app) == []


async def test_a_backlog_goes_on_in_the_next_windows_job(
    client, app, world: World, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_content(app, world, title="Backlog", cooldown_s=0)
    # Batches of 5 and at most 4 per job: 60 events need three jobs, the first one enqueued by the API.
    small = settings.model_copy(update={"pipeline_batch_size": 5})
    monkeypatch.setattr(infra.worker, "get_settings", lambda: small)
    event_ids = await seed_events(app, world, 60)
    await enqueue_events(app.state.resources.redis, event_ids, window_s=0.05)

    worker = await run_worker(settings)
    assert await notifications_per_event(app, event_ids) == dict.fromkeys(event_ids, 1)
    assert worker.jobs_complete >= 3  # the first job stopped after 4 batches and scheduled the next


async def test_ids_queued_twice_do_not_strand_the_ones_behind_them(
    client, app, world: World, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_content(app, world, title="Twice", cooldown_s=0)
    monkeypatch.setattr(infra.worker, "get_settings", lambda: settings.model_copy(update={"pipeline_batch_size": 5}))
    first, *rest = await seed_events(app, world, 4)
    await enqueue_events(
        app.state.resources.redis, [first] * 5 + rest, window_s=0.05
    )  # a full batch of one id, then more

    await run_worker(settings)
    assert await notifications_per_event(app, [first, *rest]) == dict.fromkeys([first, *rest], 1)

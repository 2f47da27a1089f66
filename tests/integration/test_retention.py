"""Retention on real PostGIS, run as the arq job a real worker runs: old fixes go, events stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from arq import create_pool
from arq.worker import Worker
from sqlalchemy import text

from infra.container import redis_settings
from infra.worker import WorkerSettings, maintain_fixes


async def test_purge_drops_old_partitions_and_keeps_recent_fixes(app, settings) -> None:
    now = datetime.now(UTC)
    factory = app.state.resources.session_factory
    async with factory() as session, session.begin():
        org = (
            await session.execute(text("INSERT INTO organisations (name, slug) VALUES ('r', 'retention') RETURNING id"))
        ).scalar_one()
        await session.execute(text("SELECT placecast_ensure_fix_partitions(12, -9)"))
        for days, marker in [(0, "today"), (2, "recent"), (10, "old-partition"), (20, "old-default")]:
            await session.execute(
                text(
                    "INSERT INTO fixes (organisation_id, device_id, device_ts, lon, lat, received_at,"
                    " batch_id) VALUES (:o, 424242, :t, 24.9, 60.1, :t, :m)"
                ),
                {"o": org, "t": now - timedelta(days=days), "m": marker},
            )
        old_partition = "fixes_" + (now - timedelta(days=10)).strftime("%Y%m%d")
        assert (await session.execute(text("SELECT to_regclass(:n)"), {"n": old_partition})).scalar_one()

    redis = await create_pool(redis_settings(settings))
    await redis.enqueue_job("maintain_fixes", _job_id="retention-test")
    worker = Worker(
        functions=[maintain_fixes],
        redis_pool=redis,
        burst=True,
        poll_delay=0,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
    )
    await worker.main()
    await worker.close()
    await redis.aclose()

    async with factory() as session:
        left = (await session.execute(text("SELECT batch_id FROM fixes WHERE device_id = 424242"))).scalars().all()
        assert sorted(left) == ["recent", "today"]
        assert (await session.execute(text("SELECT to_regclass(:n)"), {"n": old_partition})).scalar_one() is None
        # Partitions for the coming week exist, so new fixes never land in the DEFAULT partition.
        ahead = "fixes_" + (now + timedelta(days=6)).strftime("%Y%m%d")
        assert (await session.execute(text("SELECT to_regclass(:n)"), {"n": ahead})).scalar_one()


async def test_partition_upkeep_skips_a_day_whose_fixes_are_in_the_default_partition(app) -> None:
    far = datetime.now(UTC) + timedelta(days=30)  # no partition prepared that far ahead
    day = "fixes_" + far.strftime("%Y%m%d")
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO fixes (organisation_id, device_id, device_ts, lon, lat, received_at)"
                " VALUES (1, 434343, :t, 24.9, 60.1, :t)"
            ),
            {"t": far},
        )
        await session.execute(text("SELECT placecast_ensure_fix_partitions(0, 31)"))  # does not fail
        assert (await session.execute(text("SELECT to_regclass(:n)"), {"n": day})).scalar_one() is None
        next_day = "fixes_" + (far + timedelta(days=1)).strftime("%Y%m%d")
        assert (await session.execute(text("SELECT to_regclass(:n)"), {"n": next_day})).scalar_one()
        await session.execute(text("DELETE FROM fixes WHERE device_id = 434343"))

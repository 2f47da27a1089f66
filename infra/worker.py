"""arq worker: clients are created in on_startup and closed in on_shutdown."""

from __future__ import annotations

from typing import Any

from arq import cron
from sqlalchemy import text

from infra.app import redis_settings
from infra.db import make_engine, make_session_factory
from infra.logging import configure_logging
from infra.settings import get_settings


async def on_startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    configure_logging(settings)
    ctx["settings"] = settings
    ctx["engine"] = make_engine(settings.database_url, pool_size=5)
    ctx["session_factory"] = make_session_factory(ctx["engine"])


async def on_shutdown(ctx: dict[str, Any]) -> None:
    await ctx["engine"].dispose()


async def maintain_fix_partitions(ctx: dict[str, Any]) -> None:
    """Keep a week of daily `fixes` partitions ready ahead of time."""
    async with ctx["engine"].begin() as conn:
        await conn.execute(text("SELECT placecast_ensure_fix_partitions(0, 7)"))


class WorkerSettings:
    functions: list[Any] = [maintain_fix_partitions]
    cron_jobs = [cron(maintain_fix_partitions, minute=5, run_at_startup=True)]
    on_startup = on_startup
    on_shutdown = on_shutdown
    redis_settings = redis_settings(get_settings())
    max_jobs = 100
    poll_delay = 0.05

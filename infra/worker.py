"""arq worker: clients are created in on_startup and closed in on_shutdown."""

from __future__ import annotations

from typing import Any

import structlog
from arq import cron

from infra.app import redis_settings
from infra.db import make_engine, make_session_factory
from infra.logging import configure_logging
from infra.settings import get_settings
from services.retention import ensure_partitions, purge_old_fixes
from services.uow import unit_of_work

log = structlog.get_logger(__name__)


async def on_startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    configure_logging(settings)
    ctx["settings"] = settings
    ctx["engine"] = make_engine(settings.database_url, pool_size=5)
    ctx["session_factory"] = make_session_factory(ctx["engine"])


async def on_shutdown(ctx: dict[str, Any]) -> None:
    await ctx["engine"].dispose()


async def maintain_fixes(ctx: dict[str, Any]) -> dict[str, Any]:
    """Keep a week of daily `fixes` partitions ready and drop those past the retention window."""
    async with unit_of_work(ctx["session_factory"]) as uow:
        await ensure_partitions(uow.session)
        result = await purge_old_fixes(uow.session, ctx["settings"].fix_retention_days)
    log.info("fixes_retention", dropped=result.dropped_partitions, deleted_rows=result.deleted_rows)
    return {"dropped": result.dropped_partitions, "deleted_rows": result.deleted_rows}


class WorkerSettings:
    functions: list[Any] = [maintain_fixes]
    cron_jobs = [cron(maintain_fixes, minute=5, run_at_startup=True)]
    on_startup = on_startup
    on_shutdown = on_shutdown
    redis_settings = redis_settings(get_settings())
    max_jobs = 100
    poll_delay = 0.05

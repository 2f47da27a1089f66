"""arq worker: its resources are made in on_startup and closed in on_shutdown by the composition root
(`infra/container.py`); jobs find them in arq's context under `kernel.jobs.RESOURCES`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import structlog
from arq import cron, func
from arq.worker import Worker, get_kwargs
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.container import close_resources, connect_redis, open_resources, redis_settings
from infra.logging import configure_logging
from infra.resources import Resources
from infra.settings import get_settings
from kernel.jobs import RESOURCES
from kernel.uow import unit_of_work
from notifications.tasks import PipelineResources, deliver_events, deliver_pending, send_webhooks, sweep
from services.imports import ImportResources, run_import, sweep_imports
from services.retention import ensure_partitions, purge_old_fixes

log = structlog.get_logger(__name__)

if TYPE_CHECKING:  # mypy checks that the resources offer what each area's jobs say they use
    _pipeline: type[PipelineResources] = Resources
    _imports: type[ImportResources] = Resources


async def on_startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    configure_logging(settings)
    # arq's CLI gives its logger a handler of its own; without this every job line is printed twice.
    logging.getLogger("arq").propagate = False
    # httpx logs every request at INFO: a line per push. Outcomes are in the job results and the database.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # arq made ctx["redis"] (it enqueues and runs jobs on it) and closes it itself.
    ctx[RESOURCES] = await open_resources(settings, "worker", redis=ctx["redis"])


async def on_shutdown(ctx: dict[str, Any]) -> None:
    await close_resources(resources(ctx))


def resources(ctx: dict[str, Any]) -> Resources:
    found: Resources = ctx[RESOURCES]
    return found


async def maintain_fixes(ctx: dict[str, Any]) -> dict[str, Any]:
    """Keep a week of daily `fixes` partitions ready and drop those past the retention window."""
    held = resources(ctx)
    async with unit_of_work(held.session_factory) as uow:
        await ensure_partitions(uow.session)
        result = await purge_old_fixes(uow.session, held.settings.fix_retention_days)
    log.info("fixes_retention", dropped=result.dropped_partitions, deleted_rows=result.deleted_rows)
    return {"dropped": result.dropped_partitions, "deleted_rows": result.deleted_rows}


_settings = get_settings()


class WorkerSettings:
    # A window job keeps its result briefly: its id is never reused, so results would only pile up.
    functions: list[Any] = [
        deliver_events,
        func(deliver_pending, keep_result=5),
        sweep,
        send_webhooks,
        maintain_fixes,
        func(run_import, timeout=3600),  # a large extract takes minutes
        sweep_imports,
    ]
    cron_jobs = [
        cron(maintain_fixes, minute=5, run_at_startup=True),
        cron(sweep, second=set(range(0, 60, 5)), run_at_startup=True, unique=True, timeout=60),
        cron(send_webhooks, second=set(range(2, 60, 10)), unique=True, timeout=120),
        # Imports whose worker stopped (its lease lapsed) end as failed, their uploads deleted.
        cron(sweep_imports, second=set(range(7, 60, 10)), run_at_startup=True, unique=True, timeout=60),
    ]
    on_startup = on_startup
    on_shutdown = on_shutdown
    redis_settings = redis_settings(_settings)
    max_jobs = _settings.worker_max_jobs
    poll_delay = _settings.worker_poll_delay_s
    job_completion_wait = _settings.worker_shutdown_wait_s
    keep_result = 60


REDIS_RETRY_S = 1.0


class ResilientWorker(Worker):
    """arq's worker, except that a lost Redis connection does not end it.

    arq's poll loop lets the connection error out of `main`, and the worker exits (then `placecast up` stops the
    whole service): a Redis restart or failover would stop every push until someone restarts the worker. Here a
    poll that cannot reach Redis is logged and tried again a second later; redis-py reconnects by itself once Redis
    is back. Nothing is lost meanwhile: events wait in the outbox in PostgreSQL and the sweep finds them
    (tests/e2e/test_outages.py reads them all back)."""

    async def main(self) -> None:
        """The worker's Redis through the composition root, so that Sentinels with a password work too."""
        if self._pool is None:
            self._pool = await connect_redis(_settings, default_queue_name=self.queue_name)
        await super().main()

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisConnectionError, RedisTimeoutError, ConnectionError) as error:
            log.warning("worker_redis_unavailable", error=repr(error)[:200], retry_s=REDIS_RETRY_S)
            await asyncio.sleep(REDIS_RETRY_S)


def main() -> None:
    """`python -m infra.worker`: arq's worker, as `arq infra.worker.WorkerSettings` runs it, on uvloop.
    Measured with `python -m bench.pipeline`: the event loop's own work is a visible share of every push
    (HTTP/2 streams, locks, socket writes), and uvloop makes firebase-admin's send path ~5 % cheaper."""
    import logging.config

    import uvloop
    from arq.logs import default_log_config

    logging.config.dictConfig(default_log_config(verbose=False))
    uvloop.install()
    ResilientWorker(**get_kwargs(WorkerSettings)).run()  # type: ignore[arg-type]


if __name__ == "__main__":
    main()

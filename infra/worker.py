"""arq worker: clients are created in on_startup and closed in on_shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import structlog
from arq import cron, func

from infra.app import redis_settings
from infra.db import make_engine, make_session_factory
from infra.logging import configure_logging
from infra.settings import Settings, get_settings
from kernel.sealing import Sealer
from kernel.uow import unit_of_work
from notifications.egress import webhook_client
from notifications.push import PushMessage, PushOutcome
from notifications.tasks import deliver_events, deliver_pending, send_webhooks, sweep
from services.imports import run_import
from services.retention import ensure_partitions, purge_old_fixes

log = structlog.get_logger(__name__)


class BoundedSender:
    """Many concurrent jobs must not pile their pushes onto one HTTP/2 connection at once: measured,
    firebase-admin's async path slows down past ~100 requests in flight. The bound counts pushes, not
    batches, so a job with 3 pushes does not hold a turn meant for 50; batches go first come, first served (a
    small one never overtakes a larger one waiting for room), and one larger than the bound goes alone."""

    def __init__(self, sender: Any, in_flight: int) -> None:
        self._sender = sender
        self._limit = in_flight
        self._in_flight = 0
        self._waiting: deque[object] = deque()
        self._changed = asyncio.Condition()

    async def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        n, me = len(messages), object()
        async with self._changed:
            self._waiting.append(me)
            try:
                await self._changed.wait_for(
                    lambda: self._waiting[0] is me and (self._in_flight == 0 or self._in_flight + n <= self._limit)
                )
            finally:  # served or cancelled: either way the next in line may go now
                self._waiting.remove(me)
                self._changed.notify_all()
            self._in_flight += n
        try:
            result: list[PushOutcome] = await self._sender.send(messages)
            return result
        finally:
            async with self._changed:
                self._in_flight -= n
                self._changed.notify_all()

    async def aclose(self) -> None:
        await self._sender.aclose()


def make_sender(settings: Settings) -> Any:
    if settings.fcm_credentials_file is None:
        log.warning("push_disabled", reason="PLACECAST_FCM_CREDENTIALS_FILE is not set; notifications go to inboxes")
        return None
    from notifications.push import FcmSender

    return BoundedSender(
        FcmSender(
            settings.fcm_credentials_file,
            base_url=settings.fcm_base_url,
            send_path=settings.fcm_send_path,
            batch_size=settings.fcm_batch_size,
        ),
        settings.fcm_in_flight,
    )


async def on_startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    configure_logging(settings)
    # arq's CLI gives its logger a handler of its own; without this every job line is printed twice.
    logging.getLogger("arq").propagate = False
    # httpx logs every request at INFO: a line per push. Outcomes are in the job results and the database.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx["settings"] = settings
    ctx["engine"] = make_engine(settings.database_url, pool_size=5, pre_ping=True)
    ctx["session_factory"] = make_session_factory(ctx["engine"])
    ctx["sender"] = make_sender(settings)
    # Webhook receivers are the organisations' own servers: public addresses only, no environment proxies.
    ctx["http"] = webhook_client(settings.webhook_allow_private_networks)
    ctx["sealer"] = Sealer(settings.secret_key.get_secret_value())


async def on_shutdown(ctx: dict[str, Any]) -> None:
    sender = ctx.get("sender")
    if sender is not None:
        await sender.aclose()
    await ctx["http"].aclose()
    await ctx["engine"].dispose()


async def maintain_fixes(ctx: dict[str, Any]) -> dict[str, Any]:
    """Keep a week of daily `fixes` partitions ready and drop those past the retention window."""
    async with unit_of_work(ctx["session_factory"]) as uow:
        await ensure_partitions(uow.session)
        result = await purge_old_fixes(uow.session, ctx["settings"].fix_retention_days)
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
    ]
    cron_jobs = [
        cron(maintain_fixes, minute=5, run_at_startup=True),
        cron(sweep, second=set(range(0, 60, 5)), run_at_startup=True, unique=True, timeout=60),
        cron(send_webhooks, second=set(range(2, 60, 10)), unique=True, timeout=120),
    ]
    on_startup = on_startup
    on_shutdown = on_shutdown
    redis_settings = redis_settings(_settings)
    max_jobs = _settings.worker_max_jobs
    poll_delay = _settings.worker_poll_delay_s
    job_completion_wait = _settings.worker_shutdown_wait_s
    keep_result = 60


def main() -> None:
    """`python -m infra.worker`: arq's worker, as `arq infra.worker.WorkerSettings` runs it, on uvloop.
    Measured with `python -m bench.pipeline`: the event loop's own work is a visible share of every push
    (HTTP/2 streams, locks, socket writes), and uvloop makes firebase-admin's send path ~5 % cheaper."""
    import logging.config

    import uvloop
    from arq.logs import default_log_config
    from arq.worker import run_worker

    logging.config.dictConfig(default_log_config(verbose=False))
    uvloop.install()
    run_worker(WorkerSettings)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()

"""Run the real arq worker in burst mode against the test Redis, as the style guide's arq recipe does."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from arq import create_pool
from arq.worker import Worker, func

from infra.container import redis_settings
from infra.worker import WorkerSettings
from kernel.jobs import RESOURCES
from notifications.tasks import deliver_events, deliver_pending, send_webhooks, sweep
from services.imports import run_import


async def run_worker(settings, *, sender: Any = None, jobs: list[tuple[str, tuple[Any, ...]]] | None = None) -> Worker:
    """Enqueue `jobs`, then run a burst worker until the queue is empty. Returns the finished worker."""
    redis = await create_pool(redis_settings(settings))
    # Cron jobs queued by long-running workers of other tests (stopped mid-schedule) are theirs, not ours:
    # a burst worker would wait for their schedule or their in-progress lock to lapse.
    for job_id in await redis.zrange("arq:queue", 0, -1):
        name = job_id.decode()
        if name.startswith("cron:"):
            await redis.zrem("arq:queue", job_id)
            await redis.delete(f"arq:job:{name}", f"arq:in-progress:{name}", f"arq:retry:{name}")
    for name, args in jobs or []:
        await redis.enqueue_job(name, *args)

    async def startup(ctx: dict[str, Any]) -> None:
        await WorkerSettings.on_startup(ctx)
        # The caller's sender in place of the configured one; the caller closes it (it outlives this burst).
        ctx[RESOURCES] = replace(ctx[RESOURCES], sender=sender)

    worker = Worker(
        functions=[deliver_events, func(deliver_pending, keep_result=5), sweep, send_webhooks, run_import],
        redis_pool=redis,
        burst=True,
        poll_delay=0,
        on_startup=startup,
        on_shutdown=WorkerSettings.on_shutdown,
        max_jobs=10,
    )
    await worker.main()
    await worker.close()
    await redis.aclose()
    return worker

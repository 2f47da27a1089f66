"""Handing accepted events to the notification pipeline: few arq jobs, whatever the request rate.

A job per request costs arq ~1 ms of worker CPU and the pipeline a dozen statements for a single event, so
at hundreds of requests a second the worker spent its time on jobs, not pushes. Instead the API appends the
event ids to a Redis list and enqueues the job of the current window (`pipeline:<window>`, deferred to the
window's end). arq refuses a second job with an id it already holds, so each busy window makes one job, and
that job takes every id pushed before it starts, in batches. An id pushed after that job drained the list
was pushed after the window ended, so its request enqueues the next window's job: nothing waits for the
sweeper. The list is only a hint: the outbox in PostgreSQL is the record, and the sweeper finds any row a
lost job or a flushed Redis left behind (`notifications.tasks.sweep`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from arq.connections import ArqRedis

PENDING_KEY = "placecast:pipeline:pending"
JOB = "deliver_pending"


async def enqueue_events(redis: ArqRedis, event_ids: Sequence[int], window_s: float) -> None:
    """After commit: queue these events for the pipeline (one job per `window_s` however many callers)."""
    if not event_ids:
        return
    await redis.rpush(PENDING_KEY, *event_ids)  # type: ignore[misc]
    await schedule_window(redis, window_s)


async def schedule_window(redis: ArqRedis, window_s: float) -> None:
    """The job of the current window, unless it is already queued."""
    # The window is read after the caller's push returned: a job of this window starts after both.
    window = math.floor(time.time() / window_s)
    await redis.enqueue_job(
        JOB, _job_id=f"pipeline:{window}", _defer_until=datetime.fromtimestamp((window + 1) * window_s, UTC)
    )


async def take_pending(redis: ArqRedis, limit: int) -> tuple[list[int], bool]:
    """Up to `limit` queued event ids (distinct, ascending), and whether the list may hold more. Once taken they
    are this job's: if it dies, the outbox rows stay unprocessed and the sweeper picks them up."""
    raw = await redis.lpop(PENDING_KEY, limit)  # type: ignore[misc]
    taken = list(raw or ())
    return sorted({int(i) for i in taken}), len(taken) == limit

"""Per-device request limits shared by every replica: a fixed window counter in Redis."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.errors import RateLimited


async def check_rate(redis: Redis, key: str, limit: int, window_s: int) -> None:
    window = int(time.time()) // window_s
    counter = f"placecast:rate:{key}:{window}"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr(counter)
        pipe.expire(counter, window_s * 2)
        count, _ = await pipe.execute()
    if int(count) > limit:
        retry_after = window_s - int(time.time()) % window_s
        raise RateLimited(f"more than {limit} requests in {window_s} s from this device", retry_after_s=retry_after)

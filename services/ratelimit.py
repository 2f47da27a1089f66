"""Per-device request limits shared by every replica: a fixed-window counter in Redis, one round trip."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from kernel.errors import RateLimited

# INCR and set the expiry on the window's first hit, atomically and in one call.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


async def check_rate(
    redis: Redis, key: str, limit: int, window_s: int, *, subject: str = "requests from this device"
) -> None:
    now = time.time()
    counter = f"placecast:rate:{key}:{int(now) // window_s}"
    count = await redis.eval(_COUNT, 1, counter, str(window_s * 2))  # type: ignore[misc]
    if int(count) > limit:
        retry_after = window_s - int(now) % window_s
        raise RateLimited(f"more than {limit} {subject} in {window_s} s", retry_after_s=retry_after)

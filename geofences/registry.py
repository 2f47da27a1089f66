"""One in-memory fence index per organisation, kept fresh on every API replica.

An admin change bumps `placecast:fence-version:<org>` and publishes on `placecast:fences` after
commit. Each replica listens and also polls the version keys once a second (pub/sub messages are
lost while Redis reconnects), rebuilds the changed organisation's index, and swaps the
reference: queries keep using the old index until the new one is complete. Rebuilds run in a process of
their own when the app provides one (`geofences/builder.py`), away from the GIL of the serving process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from redis.asyncio import Redis

from geofences.domain import FenceSpec
from geofences.index import FenceIndex

log = structlog.get_logger(__name__)

FENCE_CHANNEL = "placecast:fences"
VERSION_KEY = "placecast:fence-version:{}"

FenceRows = list[tuple[int, int, FenceSpec, float | None]]
LoadFences = Callable[[int], Awaitable[FenceRows]]
Rebuild = Callable[[int, int], Awaitable[FenceIndex]]  # (organisation id, version) -> index


def build_index(rows: FenceRows, version: int) -> FenceIndex:
    approach = {place_id: approach_m for _, place_id, _, approach_m in rows if approach_m}
    return FenceIndex.build(((f, p, spec) for f, p, spec, _ in rows), approach_m=approach, version=version)


async def publish_fence_change(redis: Redis, organisation_id: int) -> None:
    await redis.incr(VERSION_KEY.format(organisation_id))
    await redis.publish(FENCE_CHANNEL, str(organisation_id))


class IndexRegistry:
    """`rebuild`, when given, makes a replacement index elsewhere (`geofences.builder`: another process) while
    the current one keeps answering; a first build, or a failed rebuild, loads and builds here in a thread."""

    def __init__(
        self, redis: Redis, load_fences: LoadFences, poll_interval_s: float = 1.0, rebuild: Rebuild | None = None
    ) -> None:
        self._redis = redis
        self._load = load_fences
        self._rebuild = rebuild
        self._poll_interval_s = poll_interval_s
        self._indexes: dict[int, FenceIndex] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def get(self, organisation_id: int) -> FenceIndex:
        index = self._indexes.get(organisation_id)
        if index is None:
            index = await self.refresh(organisation_id)
        return index

    async def _version(self, organisation_id: int) -> int:
        raw = await self._redis.get(VERSION_KEY.format(organisation_id))
        return int(raw or 0)

    async def refresh(self, organisation_id: int) -> FenceIndex:
        lock = self._locks.setdefault(organisation_id, asyncio.Lock())
        async with lock:
            # Read the version before the rows: a change landing in between makes us rebuild again.
            version = await self._version(organisation_id)
            current = self._indexes.get(organisation_id)
            if current is not None and current.version == version:
                return current
            index = await self._rebuilt(organisation_id, version) if current is not None else None
            built_in = "builder process"
            if index is None:
                rows = await self._load(organisation_id)
                index = await asyncio.to_thread(build_index, rows, version)
                built_in = "this process"
            self._indexes[organisation_id] = index
            log.info(
                "fence_index_built", organisation_id=organisation_id, fences=len(index), version=version, where=built_in
            )
            return index

    async def _rebuilt(self, organisation_id: int, version: int) -> FenceIndex | None:
        if self._rebuild is None:
            return None
        try:
            return await self._rebuild(organisation_id, version)
        except Exception as error:
            log.warning(
                "fence_index_rebuild_elsewhere_failed", organisation_id=organisation_id, error=repr(error)[:200]
            )
            return None

    async def _refresh_quietly(self, organisation_id: int) -> None:
        try:
            await self.refresh(organisation_id)
        except Exception:
            log.exception("fence_index_refresh_failed", organisation_id=organisation_id)

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(FENCE_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        organisation_id = int(message["data"])
                        if organisation_id in self._indexes:
                            await self._refresh_quietly(organisation_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("fence_channel_lost", error=repr(error)[:200])
                await asyncio.sleep(1)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            for organisation_id, index in list(self._indexes.items()):
                try:
                    if await self._version(organisation_id) != index.version:
                        await self._refresh_quietly(organisation_id)
                except Exception as error:
                    log.warning("fence_version_poll_failed", error=repr(error)[:200])
                    break

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._poll())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

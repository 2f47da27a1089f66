"""One in-memory fence index per organisation, kept fresh on every API replica.

The truth is `organisations.fence_version` in PostgreSQL: every fence change bumps it in its own transaction
(`services/places.py`), so a change and its version commit together or not at all. After commit the change is
also published on `placecast:fences` in Redis: the fast path, nothing more. Each registry listens there and polls
the versions of all the organisations it holds, in one query, once a second, so a lost message (Redis down or
reconnecting when the admin saved) delays a replica by a second at most and a replica that starts later reads
the same versions. A stale organisation's index is rebuilt with the version read before its rows (a change
landing in between makes the next poll rebuild again) and the reference swapped: queries keep using the old index
until the new one is complete. Rebuilds run in a process of their own when the app provides one
(`geofences/builder.py`), away from the GIL of the serving process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType

import structlog
from redis.asyncio import Redis

from geofences.domain import IndexRow
from geofences.index import FenceIndex
from geofences.tuning import clean_gps_tuning

log = structlog.get_logger(__name__)

FENCE_CHANNEL = "placecast:fences"

FenceRows = list[IndexRow]  # (fence id, place id, spec, the place's approach_m, the place's gps_tuning)
LoadFences = Callable[[int], Awaitable[FenceRows]]
# organisation ids -> their fence versions (`organisations.fence_version`), in one query; missing ids count as 0
LoadVersions = Callable[[Sequence[int]], Awaitable[dict[int, int]]]
Rebuild = Callable[[int, int], Awaitable[FenceIndex]]  # (organisation id, version) -> index


def build_index(rows: FenceRows, version: int) -> FenceIndex:
    """The index of `rows`, with `tuning` (fence id -> its place's GPS overrides) for places that have any."""
    approach = {place_id: approach_m for _, place_id, _, approach_m, _ in rows if approach_m}
    index = FenceIndex.build(((f, p, spec) for f, p, spec, _, _ in rows), approach_m=approach, version=version)
    by_place: dict[int, Mapping[str, float]] = {}
    tuning: dict[int, Mapping[str, float]] = {}
    for fence_id, place_id, _, _, overrides in rows:
        if place_id not in by_place:  # one immutable mapping per place, shared by its fences
            by_place[place_id] = MappingProxyType(clean_gps_tuning(overrides))
        if by_place[place_id]:
            tuning[fence_id] = by_place[place_id]
    index.tuning = MappingProxyType(tuning)
    return index


async def publish_fence_change(redis: Redis, organisation_id: int) -> None:
    """After commit: tells listening registries now instead of at their next poll. The version itself was bumped
    in PostgreSQL with the change, so losing this message costs a second, never the change."""
    await redis.publish(FENCE_CHANNEL, str(organisation_id))


class IndexRegistry:
    """`load_versions` reads the organisations' fence versions (PostgreSQL), `load_fences` their fences; `redis`
    only carries the change messages. `rebuild`, when given, makes a replacement index elsewhere
    (`geofences.builder`: another process) while the current one keeps answering; a first build, or a failed
    rebuild, loads and builds here in a thread."""

    def __init__(
        self,
        redis: Redis,
        load_fences: LoadFences,
        load_versions: LoadVersions,
        poll_interval_s: float = 1.0,
        rebuild: Rebuild | None = None,
    ) -> None:
        self._redis = redis
        self._load = load_fences
        self._load_versions = load_versions
        self._rebuild = rebuild
        self._poll_interval_s = poll_interval_s
        self._indexes: dict[int, FenceIndex] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._refreshing: dict[int, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def get(self, organisation_id: int) -> FenceIndex:
        index = self._indexes.get(organisation_id)
        if index is None:
            index = await self.refresh(organisation_id)
        return index

    async def _version(self, organisation_id: int) -> int:
        return (await self._load_versions([organisation_id])).get(organisation_id, 0)

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

    def _schedule(self, organisation_id: int) -> None:
        """Refresh in the background: a long rebuild of one organisation never delays the others' polls. A refresh
        already running read its version first; if that was too early, the next poll schedules another."""
        running = self._refreshing.get(organisation_id)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._refresh_quietly(organisation_id))
        self._refreshing[organisation_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._refreshing.get(organisation_id) is done:
                del self._refreshing[organisation_id]

        task.add_done_callback(forget)

    async def check(self) -> list[int]:
        """One query for the versions of every organisation held here; those that moved are refreshed in the
        background. Returns them."""
        held = list(self._indexes)
        if not held:
            return []
        versions = await self._load_versions(held)
        stale = [o for o in held if versions.get(o, 0) != self._indexes[o].version]
        for organisation_id in stale:
            self._schedule(organisation_id)
        return stale

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(FENCE_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        organisation_id = int(message["data"])
                        if organisation_id in self._indexes:
                            self._schedule(organisation_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("fence_channel_lost", error=repr(error)[:200])
                await asyncio.sleep(1)

    async def _poll(self) -> None:
        """PostgreSQL's versions every `poll_interval_s`, measured from the start of one check to the next."""
        while True:
            started = time.monotonic()
            try:
                await self.check()
            except Exception as error:
                log.warning("fence_version_poll_failed", error=repr(error)[:200])
            await asyncio.sleep(max(0.0, self._poll_interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._poll())]

    async def stop(self) -> None:
        tasks = self._tasks + list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._refreshing = {}

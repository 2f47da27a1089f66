"""What a process holds open, as one typed value: made by `infra.container.open_resources` (the composition root),
closed by `infra.container.close_resources`, for the API (`app.state.resources`) and the worker (arq's context,
under `kernel.jobs.RESOURCES`) alike.

The type lives here, below the routes, so that their dependencies (`infra/deps.py`) can name it; the wiring that
builds it sits above them. Areas never import it: their jobs state what they need as a Protocol
(`notifications.tasks.PipelineResources`, `services.imports.ImportResources`) and this class satisfies those.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Literal

import httpx
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from geofences.registry import IndexRegistry, publish_fence_change
from infra.settings import Settings
from kernel.sealing import Sealer
from notifications.push import PushSender
from notifications.queue import enqueue_events

Role = Literal["api", "worker"]
EVENTS_CHANNEL = "placecast:events:{}"


@dataclass(frozen=True, slots=True)
class Resources:
    role: Role
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    sealer: Sealer  # opens and seals the stored secrets (webhook signing secrets)
    webhook_http: httpx.AsyncClient  # posts to the organisations' webhook receivers: public addresses only
    sender: PushSender | None  # the worker's FCM sender; None in the API, or with no FCM credentials configured
    indexes: IndexRegistry | None  # the API's fence indexes, one per organisation; None in the worker
    closing: AsyncExitStack = field(repr=False, compare=False)  # closes the above in reverse order of making

    def fence_indexes(self) -> IndexRegistry:
        if self.indexes is None:
            raise RuntimeError(f"the {self.role} process holds no fence indexes")
        return self.indexes

    async def fences_changed(self, organisation_id: int) -> None:
        """After commit, the fast path only: the version was bumped in PostgreSQL with the change."""
        await publish_fence_change(self.redis, organisation_id)

    async def events_recorded(self, organisation_id: int, event_ids: list[int]) -> None:
        """After commit: a job for the notification pipeline, and the live feed. If this is lost (Redis down),
        the worker's sweeper finds the outbox rows."""
        await enqueue_events(self.redis, event_ids, self.settings.pipeline_window_s)
        await self.redis.publish(EVENTS_CHANNEL.format(organisation_id), ",".join(map(str, event_ids)))

"""The composition root: the one place that makes (and closes) what a process holds open, for the API's lifespan
(`infra/app.py`) and the worker's `on_startup`/`on_shutdown` (`infra/worker.py`) alike. Nothing here runs at
import time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import cast

import structlog
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

import geofences.models  # noqa: F401  (every table registered: see the note below)
import kernel.audit  # noqa: F401
import notifications.models  # noqa: F401
import services.models  # noqa: F401
from geofences.builder import ProcessIndexBuilder
from geofences.registry import FenceRows, IndexRegistry
from geofences.repository import PlaceRepository, fence_versions
from infra.db import make_engine, make_session_factory
from infra.resources import Resources, Role
from infra.settings import Settings
from kernel.sealing import Sealer
from notifications.egress import webhook_client
from notifications.push import BoundedSender, Channel, ChannelSender, FcmSender, PushSender
from notifications.webpush import WebPushSender

log = structlog.get_logger(__name__)

# Every table is on kernel.db's metadata before a process's first flush, whatever else it imports: a
# fence's foreign key names `organisations` (services.models), which the worker's import job never imported on its
# own (it failed with NoReferencedTableError). The imports above see to it; migrations/env.py does the same.

# The worker checks out a connection per batch, not per request: a small pool, pinged (infra/db.py says why).
WORKER_POOL_SIZE = 5
# Index builds get their own small pool: a request holding a connection while it waits for the index must never
# starve the build of one. Checkouts are rare, so they are pinged.
INDEX_POOL_SIZE = 2


REDIS_CONNECT_TIMEOUT_S = 2
REDIS_CONNECT_RETRIES = 2


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's view of Redis: the server itself, or with PLACECAST_REDIS_SENTINELS the Sentinels and the master's name
    (arq asks them for the master). arq cannot give the Sentinels a password: processes connect through
    `connect_redis`, which can; this stays right for arq's own tools where the Sentinels need none."""
    if settings.redis_sentinels:
        return RedisSettings(
            host=settings.sentinel_addresses,
            sentinel=True,
            sentinel_master=settings.redis_sentinel_master,
            password=settings.redis_password.get_secret_value(),
            conn_timeout=REDIS_CONNECT_TIMEOUT_S,
            conn_retries=REDIS_CONNECT_RETRIES,
        )
    return RedisSettings(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password.get_secret_value(),
        conn_timeout=REDIS_CONNECT_TIMEOUT_S,
        conn_retries=REDIS_CONNECT_RETRIES,
    )


async def connect_redis(settings: Settings, *, default_queue_name: str = default_queue_name) -> ArqRedis:
    """The process's Redis client (the API's and the worker's alike; enqueueing, rate limits, pub/sub all use it).

    With Sentinels it is redis-py's `Sentinel(...).master_for(...)`: each new connection asks a Sentinel where the
    master is, and a connection to a demoted or dead master fails and is made again to the new one. The Sentinels
    get their own password (`sentinel_kwargs`), which arq's `create_pool` cannot pass."""
    if not settings.redis_sentinels:
        return await create_pool(redis_settings(settings), default_queue_name=default_queue_name)
    timeouts = {"socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S, "socket_timeout": REDIS_CONNECT_TIMEOUT_S}
    sentinel = Sentinel(
        settings.sentinel_addresses,
        sentinel_kwargs={"password": settings.sentinel_password, **timeouts},
        password=settings.redis_password.get_secret_value(),
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
    )
    redis = sentinel.master_for(settings.redis_sentinel_master, redis_class=ArqRedis)
    redis.default_queue_name = default_queue_name
    for attempt in range(REDIS_CONNECT_RETRIES + 1):
        try:
            await redis.ping()
            return cast(ArqRedis, redis)
        except (RedisError, OSError, TimeoutError) as error:
            if attempt == REDIS_CONNECT_RETRIES:
                await redis.aclose()
                raise
            log.warning("redis_sentinel_unavailable", error=repr(error)[:200], retry_s=1)
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


async def open_resources(settings: Settings, role: Role, *, redis: ArqRedis | None = None) -> Resources:
    """Everything the `role`'s process needs, made in order; if one part fails, those made already are closed.

    `redis`: a pool the caller owns and closes (arq's worker makes its own); otherwise one is made here."""
    closing = AsyncExitStack()
    try:
        if role == "api":
            engine = make_engine(settings.database_url, settings.db_pool_size)
        else:
            engine = make_engine(settings.database_url, pool_size=WORKER_POOL_SIZE, pre_ping=True)
        closing.push_async_callback(engine.dispose)
        if redis is None:
            redis = await connect_redis(settings)
            closing.push_async_callback(redis.aclose)
        # Webhook receivers are the organisations' own servers: public addresses only, no environment proxies.
        webhook_http = webhook_client(settings.webhook_allow_private_networks)
        closing.push_async_callback(webhook_http.aclose)
        sender = _push_sender(settings, closing) if role == "worker" else None
        indexes = await _fence_indexes(settings, redis, closing) if role == "api" else None
        return Resources(
            role=role,
            settings=settings,
            engine=engine,
            session_factory=make_session_factory(engine),
            redis=redis,
            sealer=Sealer(settings.secret_key.get_secret_value()),
            webhook_http=webhook_http,
            sender=sender,
            indexes=indexes,
            closing=closing,
        )
    except BaseException:
        await closing.aclose()
        raise


async def close_resources(resources: Resources) -> None:
    """Closes what `open_resources` made, newest first (the fence indexes stop before the pools they read)."""
    await resources.closing.aclose()


def _push_sender(settings: Settings, closing: AsyncExitStack) -> PushSender | None:
    """The worker's sender: each device's pushes through its channel's sender (FCM, Web Push), each bounded."""
    senders: dict[Channel, PushSender] = {}
    if settings.fcm_credentials_file is None:
        log.warning("push_disabled", channel="fcm", reason="PLACECAST_FCM_CREDENTIALS_FILE is not set")
    else:
        fcm = FcmSender(
            settings.fcm_credentials_file,
            base_url=settings.fcm_base_url,
            send_path=settings.fcm_send_path,
            batch_size=settings.fcm_batch_size,
        )
        closing.push_async_callback(fcm.aclose)
        senders["fcm"] = BoundedSender(fcm, settings.fcm_in_flight)
    if not settings.webpush_enabled or settings.vapid_private_key is None:
        log.warning("push_disabled", channel="webpush", reason="Web Push is off or has no VAPID key")
    else:
        webpush = WebPushSender(
            settings.vapid_private_key.get_secret_value(),
            settings.vapid_subject,
            local_origin=settings.webpush_local_origin if settings.environment != "production" else None,
            max_connections=settings.webpush_in_flight,
        )
        closing.push_async_callback(webpush.aclose)
        senders["webpush"] = BoundedSender(webpush, settings.webpush_in_flight)
    if not senders:
        log.warning("push_disabled", reason="no push channel is configured; notifications go to inboxes")
        return None
    return ChannelSender(senders)


async def _fence_indexes(settings: Settings, redis: ArqRedis, closing: AsyncExitStack) -> IndexRegistry:
    index_engine = make_engine(settings.database_url, pool_size=INDEX_POOL_SIZE, pre_ping=True)
    closing.push_async_callback(index_engine.dispose)
    index_sessions = make_session_factory(index_engine)

    async def load_fences(organisation_id: int) -> FenceRows:
        async with index_sessions() as session:
            return await PlaceRepository(session).fences_for_index(organisation_id)

    async def load_versions(organisation_ids: Sequence[int]) -> dict[int, int]:
        async with index_sessions() as session:
            return await fence_versions(session, organisation_ids)

    builder = ProcessIndexBuilder(settings.sync_database_url)
    builder.start()
    closing.callback(builder.close)
    indexes = IndexRegistry(redis, load_fences, load_versions, rebuild=builder.build)
    indexes.start()
    closing.push_async_callback(indexes.stop)
    return indexes

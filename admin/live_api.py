"""The live activity feed: server-sent events for one organisation, fed by Redis pub/sub.

`placecast:events:<org>` carries comma-separated event ids published after the mobile API commits; each is
loaded (scoped to the organisation again, so a stray id never leaks) and sent as `event: activity`.
`placecast:live:<org>` carries JSON objects from the worker (`{"type": "push", ...}`, `{"type": "task", ...}`),
forwarded as `event: <type>`. Nothing is replayed: the feed shows what happens while it is open.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from geofences.activity import ActivityRepository
from infra.deps import PrincipalDep, resources_of
from kernel.errors import Forbidden, Unauthorized, Unavailable
from services.accounts import REVOCATIONS_CHANNEL, SESSION_COOKIE, load_session, principal_for_user
from services.orgs import Principal, authenticate_api_key

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/admin/v1", tags=["admin: live"])

KEEP_ALIVE_S = 15.0
RECHECK_S = 1.0  # an open feed re-checks its principal this often: a lost revocation message still bites in time
MAX_IDS = 1000
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_EVENT_NAME = re.compile(r"[a-z_]{1,32}")


def sse(event: str, data: dict[str, Any]) -> bytes:
    # orjson never emits a newline, so one `data:` line is always one whole message.
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _event_ids(payload: str) -> list[int]:
    return [int(part) for part in payload.split(",")[:MAX_IDS] if part.strip().isdigit()]


async def _activity(factory: async_sessionmaker[AsyncSession], organisation_id: int, ids: list[int]) -> list[bytes]:
    if not ids:
        return []
    async with factory() as session:
        rows = await ActivityRepository(session).live_events(organisation_id, ids)
    out = []
    for row in rows:
        data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        out.append(sse("activity", {"type": "activity", **data}))
    return out


def _forward(payload: str) -> bytes | None:
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        log.warning("live_message_not_json", payload=payload[:200])
        return None
    if not isinstance(message, dict):
        return None
    kind = message.get("type")
    return sse(kind if isinstance(kind, str) and _EVENT_NAME.fullmatch(kind) else "live", message)


async def subscribed(pubsub: PubSub, *channels: str) -> None:
    """Subscribe and wait for Redis to confirm, so whatever is published after this returns is delivered."""
    await pubsub.subscribe(*channels)
    confirmed = 0
    async with asyncio.timeout(5):
        while confirmed < len(channels):
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1


def _api_key(request: Request) -> str | None:
    """The organisation API key the request authenticated with, read as infra.deps reads it."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key") or None


async def still_authorised(
    request: Request, factory: async_sessionmaker[AsyncSession], redis: Redis, principal: Principal
) -> bool:
    """Whether the credential that opened the stream would still get this principal: the API key not revoked, the
    session not ended (logout, expiry), the user active, still a member, in the same role."""
    key = _api_key(request)
    try:
        async with factory() as session:
            if key:
                now = await authenticate_api_key(session, key)
            else:
                token = request.cookies.get(SESSION_COOKIE)
                current = await load_session(redis, token, slide=False) if token else None
                if current is None:
                    return False
                now = await principal_for_user(session, current.user_id, principal.organisation_id)
    except (Unauthorized, Forbidden):
        return False
    return (now.organisation_id, now.role) == (principal.organisation_id, principal.role)


@router.get("/live", response_class=StreamingResponse)
async def live(principal: PrincipalDep, request: Request) -> StreamingResponse:
    """Server-sent events: `activity` per enter/exit/dwell/check-in/check-out, `push` and `task` from the worker.

    The first comment `: connected` is sent once the subscription is live; `: keep-alive` every 15 s of quiet.
    When what opened the stream stops opening it (logout, a revoked key, a removed user, a changed role), it ends
    with `event: revoked` within a second or two: at once on the Redis message, else at the next re-check.
    """
    organisation_id = principal.organisation_id
    events_channel = f"placecast:events:{organisation_id}"
    live_channel = f"placecast:live:{organisation_id}"
    factory = resources_of(request).session_factory
    redis = resources_of(request).redis

    async def stream() -> AsyncIterator[bytes]:
        pubsub = redis.pubsub()
        loop = asyncio.get_running_loop()
        try:
            await subscribed(pubsub, events_channel, live_channel, REVOCATIONS_CHANNEL)
            yield b"retry: 3000\n: connected\n\n"
            last_sent = last_check = loop.time()
            while True:
                wait = min(RECHECK_S, KEEP_ALIVE_S)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                channel = None if message is None else _text(message["channel"])
                if channel == REVOCATIONS_CHANNEL or loop.time() - last_check >= RECHECK_S:
                    if not await still_authorised(request, factory, redis, principal):
                        yield b"event: revoked\ndata: {}\n\n"
                        return
                    last_check = loop.time()
                if message is None or channel == REVOCATIONS_CHANNEL:
                    if loop.time() - last_sent >= KEEP_ALIVE_S:
                        yield b": keep-alive\n\n"
                        last_sent = loop.time()
                    continue
                payload = _text(message["data"])
                if channel == events_channel:
                    chunks = await _activity(factory, organisation_id, _event_ids(payload))
                else:
                    chunks = [c for c in [_forward(payload)] if c is not None]
                for chunk in chunks:
                    yield chunk
                    last_sent = loop.time()
        except (RedisError, SQLAlchemyError, OSError, TimeoutError, Unavailable) as error:
            # End the stream cleanly; the client reconnects (EventSource after `retry`) and subscribes afresh.
            log.warning("live_feed_lost_backend", error=repr(error)[:200])
        finally:
            await pubsub.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

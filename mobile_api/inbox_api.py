"""Inbox (every notification, also when pushed), its live stream, and the staff task workflow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from infra.deps import UowDep, resources_of
from kernel.errors import NotFound
from mobile_api.deps import REVOKED, CredentialDep, DeviceDep
from notifications import repository
from notifications.tasks import INBOX_CHANNEL, LIVE_CHANNEL
from services import devices, staff_tasks

router = APIRouter(prefix="/v1", tags=["mobile: inbox and tasks"])

MAX_ID = 2**63 - 1  # ids are bigint: a larger cursor is a 422, not a DataError mid-stream
RECHECK_S = 1.0  # an open stream re-checks its credential this often, so a lost revocation message still bites
KEEP_ALIVE_S = 15.0
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]  # a larger path id is a 422, not the database's range error


def _items(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]


@router.get("/inbox")
async def inbox(
    device: DeviceDep,
    uow: UowDep,
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """This device's notifications, newest first."""
    items = _items(await repository.inbox_page(uow.session, device.device_id, before=cursor, limit=limit))
    return {"items": items, "next_cursor": items[-1]["id"] if len(items) == limit else None}


@router.post("/inbox/{notification_id}/opened")
async def mark_opened(notification_id: RowId, device: DeviceDep, uow: UowDep) -> dict[str, Any]:
    """Marks a notification opened (the first time counts for analytics)."""
    opened_at = await repository.mark_opened(uow.session, device.device_id, notification_id)
    if opened_at is None:
        raise NotFound(f"notification {notification_id} not found")
    return {"id": notification_id, "opened_at": opened_at.isoformat()}


@router.get("/inbox/stream", response_class=StreamingResponse)
async def inbox_stream(
    device: DeviceDep,
    credential: CredentialDep,
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="last notification id the app has")] = 0,
) -> StreamingResponse:
    """Server-sent events: each new notification as a `notification` event while the app is open.

    Closes (after an `event: revoked`) within a second or two once the credential is rotated or the device erased,
    on whichever API process that happened: a Redis message makes it immediate, a re-check every second makes it
    certain.
    """
    factory = resources_of(request).session_factory
    redis = resources_of(request).redis

    async def events() -> AsyncIterator[bytes]:
        last = after
        pubsub = redis.pubsub()
        await pubsub.subscribe(INBOX_CHANNEL.format(device.device_id))
        loop = asyncio.get_running_loop()
        try:
            yield b": connected\n\n"
            read_inbox, quiet_since = True, loop.time()
            while not await request.is_disconnected():
                async with factory() as session:
                    if not await devices.credential_valid(session, device.device_id, credential):
                        yield b"event: revoked\ndata: {}\n\n"
                        return
                    fresh = (
                        await repository.inbox_page(session, device.device_id, after=last, limit=100)
                        if read_inbox
                        else []
                    )
                for item in reversed(_items(fresh)):
                    last = max(last, item["id"])
                    yield b"event: notification\nid: %d\ndata: %s\n\n" % (item["id"], orjson.dumps(item))
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=RECHECK_S)
                # A message wakes the read; without one the inbox is re-read every KEEP_ALIVE_S anyway.
                read_inbox = message is not None and message["data"] not in (REVOKED, REVOKED.encode())
                if message is None and loop.time() - quiet_since >= KEEP_ALIVE_S:
                    yield b": keep-alive\n\n"
                    read_inbox, quiet_since = True, loop.time()
                await asyncio.sleep(0)
        finally:
            await pubsub.aclose()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/tasks")
async def my_tasks(device: DeviceDep, uow: UowDep) -> list[dict[str, Any]]:
    """Tasks pushed to this staff device."""
    return await staff_tasks.tasks_for_device(uow, device)


def _publish_task(request: Request, uow: UowDep, organisation_id: int, task: dict[str, Any]) -> None:
    """After commit, the admin UI's live feed and task board hear of it."""
    message = orjson.dumps(
        {
            "type": "task",
            "task_id": task["id"],
            "status": task["status"],
            "title": task["title"],
            "place_id": task["place_id"],
        }
    )

    async def publish() -> None:
        await resources_of(request).redis.publish(LIVE_CHANNEL.format(organisation_id), message)

    uow.after_commit(publish)


@router.post("/tasks/{task_id}/acknowledge")
async def acknowledge(task_id: RowId, device: DeviceDep, uow: UowDep, request: Request) -> dict[str, Any]:
    task = await staff_tasks.acknowledge_task(uow, device=device, task_id=task_id)
    _publish_task(request, uow, device.organisation_id, task)
    return task


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=4000)


@router.post("/tasks/{task_id}/complete")
async def complete(
    task_id: RowId, body: CompleteIn, device: DeviceDep, uow: UowDep, request: Request
) -> dict[str, Any]:
    task = await staff_tasks.complete_task(uow, device=device, task_id=task_id, note=body.note)
    _publish_task(request, uow, device.organisation_id, task)
    return task

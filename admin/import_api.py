"""Uploaded imports (GeoJSON, OpenStreetMap .osm.pbf): 202 at once, the upload stored in PostgreSQL, the worker
imports (services/imports.py), progress in Redis and over SSE."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Form, Request, UploadFile, status
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError

from admin.live_api import KEEP_ALIVE_S, SSE_HEADERS, sse, subscribed
from geofences.osm_import import DEFAULT_PUBLIC_TAGS, parse_tag_filter
from infra.deps import PrincipalDep, resources_of
from kernel.errors import NotFound, Problem, Unavailable, ValidationFailed
from kernel.uow import unit_of_work
from services.imports import (
    IMPORT_ID,
    TERMINAL,
    ImportJob,
    Progress,
    as_text,
    drop_upload,
    progress_channel,
    public_state,
    state_key,
    store_upload,
)
from services.models import Role

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/admin/v1", tags=["admin: import"])


def _kind(filename: str) -> str:
    name = filename.lower()
    if name.endswith(".pbf"):
        return "osm"
    if name.endswith((".geojson", ".json")):
        return "geojson"
    raise ValidationFailed("unknown file type", [Problem("file", "expected a .geojson, .json or .osm.pbf file")])


@router.post("/imports", status_code=status.HTTP_202_ACCEPTED)
async def start_import(
    principal: PrincipalDep,
    request: Request,
    file: UploadFile,
    tags: Annotated[
        str | None, Form(max_length=2000, description="OSM only, e.g. amenity=library,amenity=townhall")
    ] = None,
) -> dict[str, str]:
    """Upload a GeoJSON FeatureCollection or an OSM extract; follow it with GET .../{id} or .../{id}/events."""
    principal.require(Role.editor)
    kind = _kind(file.filename or "")
    try:
        tag_filter = parse_tag_filter(tags) if tags and tags.strip() else DEFAULT_PUBLIC_TAGS
    except ValueError as error:
        raise ValidationFailed("bad tags", [Problem("tags", str(error))]) from error
    job = ImportJob(secrets.token_hex(8), principal.organisation_id, principal.actor, kind, tag_filter)
    resources = resources_of(request)
    # The bytes go to PostgreSQL, where any worker on any machine reads them, committed before the job is queued
    # (a worker never finds a job without its file); an empty file rolls back with a 422.
    async with unit_of_work(resources.session_factory) as uow:
        await store_upload(uow, job.id, principal.organisation_id, file.read)
    initial = {
        "id": job.id,
        "organisation_id": job.organisation_id,
        "kind": kind,
        "filename": (file.filename or "")[:200],
    }
    empty: dict[str, Any] = {
        "done": 0,
        "total": None,
        "created": 0,
        "updated": 0,
        "refused": [],
        "refused_count": 0,
        "error": None,
    }
    redis = resources.redis
    try:
        await Progress(redis, job.id).update(strict=True, phase="queued", **initial, **empty)
        await redis.enqueue_job("run_import", job.fields(), _job_id=f"import:{job.id}")
    except (Unavailable, RedisError) as error:
        await drop_upload(resources.session_factory, job.id)
        raise Unavailable("the job queue (Redis) is unavailable; retry shortly") from error
    return {"id": job.id}


async def _state(redis: Redis, import_id: str, organisation_id: int) -> dict[str, Any]:
    raw = await redis.hgetall(state_key(import_id)) if IMPORT_ID.fullmatch(import_id) else {}  # type: ignore[misc]
    owner = {as_text(k): as_text(v) for k, v in raw.items()}.get("organisation_id")
    if owner != str(organisation_id):
        raise NotFound(f"import {import_id} not found")
    return public_state(raw)


@router.get("/imports/{import_id}")
async def get_import(import_id: str, principal: PrincipalDep, request: Request) -> dict[str, Any]:
    """phase: queued | reading (done = OSM objects read) | storing (done of total places) | done | failed."""
    return await _state(resources_of(request).redis, import_id, principal.organisation_id)


@router.get("/imports/{import_id}/events", response_class=StreamingResponse)
async def import_events(import_id: str, principal: PrincipalDep, request: Request) -> StreamingResponse:
    """Server-sent `progress` events (the state as in GET) until the phase is done or failed, then the end."""
    redis = resources_of(request).redis
    await _state(redis, import_id, principal.organisation_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        pubsub = redis.pubsub()
        try:
            await subscribed(pubsub, progress_channel(import_id))
            state = await _state(redis, import_id, principal.organisation_id)  # read after subscribing: no gap
            yield sse("progress", state)
            while state["phase"] not in TERMINAL:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=KEEP_ALIVE_S)
                if message is None:
                    # Quiet for a while: re-read, in case a message was lost or the importing process died
                    # (then the state expires and the stream ends).
                    fresh = await _state(redis, import_id, principal.organisation_id)
                    yield sse("progress", fresh) if fresh != state else b": keep-alive\n\n"
                    state = fresh
                    continue
                state = orjson.loads(message["data"])
                yield sse("progress", state)
        except (RedisError, TimeoutError, NotFound) as error:
            log.warning("import_events_ended", import_id=import_id, error=repr(error)[:200])
        finally:
            await pubsub.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

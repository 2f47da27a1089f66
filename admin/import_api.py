"""Uploaded imports (GeoJSON, OpenStreetMap .osm.pbf) that run in the background with progress in Redis.

The upload answers 202 at once; the import runs as a task in this API process (OSM parsing in a thread) and
stores places in chunks, each its own transaction, so a large city shows progress and a failure late in the
file keeps what was stored before it. The state lives in the hash `placecast:import:<id>` (24 h) and every
change is also published on `placecast:import:<id>:progress` for the SSE stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
import structlog
from fastapi import APIRouter, FastAPI, Form, Request, UploadFile, status
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError

from admin.live_api import KEEP_ALIVE_S, SSE_HEADERS, sse, subscribed
from geofences.domain import PlaceSpec
from geofences.geojson_io import features_to_places
from geofences.osm_import import DEFAULT_PUBLIC_TAGS, TagFilter, parse_tag_filter, read_osm_places
from geofences.validation import GeometryValidationError
from infra.deps import PrincipalDep
from services.errors import NotFound, Problem, Unavailable, ValidationFailed
from services.models import Role
from services.places import upsert_places
from services.uow import unit_of_work

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/admin/v1", tags=["admin: import"])

STATE_TTL_S = 86400
CHUNK = 100
MAX_REFUSED = 500  # reasons kept for the UI; refused_count has them all
TERMINAL = frozenset({"done", "failed"})
_ID = re.compile(r"[0-9a-f]{16}")
_running: set[asyncio.Task[None]] = set()  # a reference per task, or the loop may drop it mid-import
_slots = asyncio.Semaphore(2)  # imports parsing or storing at once in this process; the rest wait "queued"


class ImportFailed(Exception):
    """A reason for the administrator, shown as the import's error."""


@dataclass(frozen=True, slots=True)
class _Job:
    id: str
    organisation_id: int
    actor: str
    kind: str  # osm | geojson
    path: Path
    tags: TagFilter


def _key(import_id: str) -> str:
    return f"placecast:import:{import_id}"


def _channel(import_id: str) -> str:
    return f"placecast:import:{import_id}:progress"


def _public(raw: dict[Any, Any]) -> dict[str, Any]:
    data = {_str(k): _str(v) for k, v in raw.items()}

    def number(name: str) -> int:
        return int(data.get(name) or 0)

    return {
        "id": data.get("id", ""),
        "kind": data.get("kind", ""),
        "filename": data.get("filename", ""),
        "phase": data.get("phase", "queued"),
        "done": number("done"),
        "total": number("total") if data.get("total") else None,
        "created": number("created"),
        "updated": number("updated"),
        "refused_count": number("refused_count"),
        "refused": orjson.loads(data.get("refused") or "[]"),
        "error": data.get("error") or None,
    }


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Progress:
    """Writes the state hash and publishes it; a lock keeps updates from the reader thread in order."""

    def __init__(self, redis: Redis, import_id: str) -> None:
        self.redis = redis
        self.import_id = import_id
        self.lock = asyncio.Lock()

    async def update(self, *, strict: bool = False, **fields: Any) -> None:
        values = {
            k: ("" if v is None else orjson.dumps(v).decode() if isinstance(v, list) else str(v))
            for k, v in fields.items()
        }
        async with self.lock:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(_key(self.import_id), mapping=values)
                    pipe.expire(_key(self.import_id), STATE_TTL_S)
                    pipe.hgetall(_key(self.import_id))
                    *_, raw = await pipe.execute()
                await self.redis.publish(_channel(self.import_id), orjson.dumps(_public(raw)))
            except RedisError as error:
                if strict:
                    raise Unavailable("the progress store (Redis) is unavailable; retry shortly") from error
                # Progress is advisory once running: the import itself goes on.
                log.warning("import_progress_lost", import_id=self.import_id, error=repr(error)[:200])


def _problems(problems: Any) -> list[dict[str, Any]]:
    return [Problem(p.field, p.reason, p.code, p.point).as_dict() for p in problems]


def _read_geojson(path: Path, settings: Any) -> tuple[list[PlaceSpec], list[dict[str, Any]]]:
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise ImportFailed(f"the file is not valid JSON: {error}") from error
    try:
        specs, refused = features_to_places(document, settings.geometry_limits)
    except GeometryValidationError as error:
        raise ImportFailed(
            "not a GeoJSON FeatureCollection: "
            + "; ".join(f"{p.field or 'document'}: {p.reason}" for p in error.errors)
        ) from error
    return specs, [
        {"index": r.index, "external_ref": r.external_ref, "problems": _problems(r.problems)} for r in refused
    ]


async def _read_osm(job: _Job, settings: Any, progress: _Progress) -> tuple[list[PlaceSpec], list[dict[str, Any]]]:
    loop = asyncio.get_running_loop()

    def tick(done: int, total: int | None) -> None:  # called in the reader thread
        asyncio.run_coroutine_threadsafe(progress.update(done=done, total=total), loop)

    try:
        result = await asyncio.to_thread(
            read_osm_places, job.path, job.tags, settings.osm_node_radius_m, tick, limits=settings.geometry_limits
        )
    except (RuntimeError, OSError, ValueError) as error:  # osmium reports a corrupt file as RuntimeError
        raise ImportFailed(f"could not read the OSM file: {error}") from error
    skipped = [
        {"external_ref": s.external_ref, "name": s.name, "kind": s.kind, "problems": _problems(s.problems)}
        for s in result.skipped
    ]
    return result.places, skipped


async def _run(app: FastAPI, job: _Job) -> None:
    progress = _Progress(app.state.redis, job.id)
    settings = app.state.settings
    stored = False
    try:
        async with _slots:
            await progress.update(phase="reading")
            if job.kind == "osm":
                specs, refused = await _read_osm(job, settings, progress)
            else:
                specs, refused = await asyncio.to_thread(_read_geojson, job.path, settings)
            await progress.update(
                phase="storing", done=0, total=len(specs), refused=refused[:MAX_REFUSED], refused_count=len(refused)
            )
            created = updated = 0
            for start in range(0, len(specs), CHUNK):
                chunk = specs[start : start + CHUNK]
                async with unit_of_work(app.state.session_factory) as uow:
                    c, u = await upsert_places(uow, organisation_id=job.organisation_id, actor=job.actor, specs=chunk)
                stored = True
                created, updated = created + c, updated + u
                await progress.update(done=start + len(chunk), created=created, updated=updated)
        await progress.update(phase="done")
    except ImportFailed as error:
        await progress.update(phase="failed", error=str(error)[:2000])
    except Exception as error:
        log.exception("import_failed", import_id=job.id)
        await progress.update(phase="failed", error=f"the import stopped unexpectedly ({type(error).__name__})")
    finally:
        job.path.unlink(missing_ok=True)
        if stored:
            with contextlib.suppress(Exception):  # the registry's poll catches a lost notice within a second
                await app.state.fences_changed(job.organisation_id)


def _kind(filename: str) -> tuple[str, str]:
    name = filename.lower()
    if name.endswith(".pbf"):
        return "osm", ".osm.pbf"
    if name.endswith((".geojson", ".json")):
        return "geojson", ".geojson"
    raise ValidationFailed("unknown file type", [Problem("file", "expected a .geojson, .json or .osm.pbf file")])


def _save_upload(source: BinaryIO, suffix: str) -> tuple[Path, int]:
    # osmium reads from a path, so the upload goes to a named file; the import deletes it when finished.
    fd, name = tempfile.mkstemp(prefix="placecast-import-", suffix=suffix)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out)
        return Path(name), out.tell()


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
    kind, suffix = _kind(file.filename or "")
    try:
        tag_filter = parse_tag_filter(tags) if tags and tags.strip() else DEFAULT_PUBLIC_TAGS
    except ValueError as error:
        raise ValidationFailed("bad tags", [Problem("tags", str(error))]) from error
    path, size = await asyncio.to_thread(_save_upload, file.file, suffix)
    if size == 0:
        path.unlink()
        raise ValidationFailed("empty file", [Problem("file", "the file is empty")])
    job = _Job(secrets.token_hex(8), principal.organisation_id, principal.actor, kind, path, tag_filter)
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
    try:
        await _Progress(request.app.state.redis, job.id).update(strict=True, phase="queued", **initial, **empty)
    except Unavailable:
        path.unlink()
        raise
    task = asyncio.create_task(_run(request.app, job))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return {"id": job.id}


async def _state(redis: Redis, import_id: str, organisation_id: int) -> dict[str, Any]:
    raw = await redis.hgetall(_key(import_id)) if _ID.fullmatch(import_id) else {}  # type: ignore[misc]
    owner = {_str(k): _str(v) for k, v in raw.items()}.get("organisation_id")
    if owner != str(organisation_id):
        raise NotFound(f"import {import_id} not found")
    return _public(raw)


@router.get("/imports/{import_id}")
async def get_import(import_id: str, principal: PrincipalDep, request: Request) -> dict[str, Any]:
    """phase: queued | reading (done = OSM objects read) | storing (done of total places) | done | failed."""
    return await _state(request.app.state.redis, import_id, principal.organisation_id)


@router.get("/imports/{import_id}/events", response_class=StreamingResponse)
async def import_events(import_id: str, principal: PrincipalDep, request: Request) -> StreamingResponse:
    """Server-sent `progress` events (the state as in GET) until the phase is done or failed, then the end."""
    redis = request.app.state.redis
    await _state(redis, import_id, principal.organisation_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        pubsub = redis.pubsub()
        try:
            await subscribed(pubsub, _channel(import_id))
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

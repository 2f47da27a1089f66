"""Imports of places from uploaded files (GeoJSON, OpenStreetMap .osm.pbf), run by the worker as an arq job.

The API saves the upload under `var/uploads`, records the import as queued and enqueues `run_import`; the worker
parses the file (OSM in a thread) and stores places in chunks, each its own transaction, so a large city shows
progress and a failure late in the file keeps what was stored before it. Parsing a city is seconds of CPU: in the
worker it does not hold up the API's requests. The state lives in the hash `placecast:import:<id>` (24 h) and
every change is also published on `placecast:import:<id>:progress` for the admin UI's SSE stream. A worker that
dies mid-import has the job retried by arq: the upload is still there and storing is idempotent per external id.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from geofences.domain import GeometryLimits, PlaceSpec
from geofences.geojson_io import features_to_places
from geofences.osm_import import TagFilter, read_osm_places
from geofences.registry import publish_fence_change
from geofences.validation import GeometryValidationError
from kernel.errors import Problem, Unavailable
from kernel.jobs import RESOURCES
from kernel.uow import unit_of_work
from services.places import upsert_places

log = structlog.get_logger(__name__)

STATE_TTL_S = 86400
CHUNK = 100
MAX_REFUSED = 500  # reasons kept for the UI; refused_count has them all
TERMINAL = frozenset({"done", "failed"})
IMPORT_ID = re.compile(r"[0-9a-f]{16}")
_slots = asyncio.Semaphore(2)  # imports parsing or storing at once in a worker process; the rest wait "queued"


class ImportFailed(Exception):
    """A reason for the administrator, shown as the import's error."""


@dataclass(frozen=True, slots=True)
class ImportJob:
    id: str
    organisation_id: int
    actor: str
    kind: str  # osm | geojson
    path: Path
    tags: TagFilter

    def fields(self) -> dict[str, Any]:
        """Plain values for the job queue."""
        return {**asdict(self), "path": str(self.path), "tags": [list(t) for t in self.tags]}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ImportJob:
        tags = tuple((str(k), None if v is None else str(v)) for k, v in fields["tags"])
        return cls(
            fields["id"], int(fields["organisation_id"]), fields["actor"], fields["kind"], Path(fields["path"]), tags
        )


def state_key(import_id: str) -> str:
    return f"placecast:import:{import_id}"


def progress_channel(import_id: str) -> str:
    return f"placecast:import:{import_id}:progress"


def public_state(raw: dict[Any, Any]) -> dict[str, Any]:
    data = {as_text(k): as_text(v) for k, v in raw.items()}

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


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Progress:
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
                    pipe.hset(state_key(self.import_id), mapping=values)
                    pipe.expire(state_key(self.import_id), STATE_TTL_S)
                    pipe.hgetall(state_key(self.import_id))
                    *_, raw = await pipe.execute()
                await self.redis.publish(progress_channel(self.import_id), orjson.dumps(public_state(raw)))
            except RedisError as error:
                if strict:
                    raise Unavailable("the progress store (Redis) is unavailable; retry shortly") from error
                # Progress is advisory once running: the import itself goes on.
                log.warning("import_progress_lost", import_id=self.import_id, error=repr(error)[:200])


def _problems(problems: Any) -> list[dict[str, Any]]:
    return [Problem(p.field, p.reason, p.code, p.point).as_dict() for p in problems]


class ImportSettings(Protocol):
    """The settings an import reads (`infra.settings.Settings` has them)."""

    @property
    def geometry_limits(self) -> GeometryLimits: ...
    @property
    def osm_node_radius_m(self) -> float: ...


class ImportResources(Protocol):
    """What `run_import` uses of the worker's resources (`infra.resources.Resources` has it)."""

    @property
    def settings(self) -> ImportSettings: ...
    @property
    def session_factory(self) -> async_sessionmaker[AsyncSession]: ...
    @property
    def redis(self) -> Redis: ...


def resources(ctx: dict[str, Any]) -> ImportResources:
    """The resources the worker's `on_startup` put in arq's context (`infra/container.py` made them)."""
    found: ImportResources = ctx[RESOURCES]
    return found


def _read_geojson(path: Path, settings: ImportSettings) -> tuple[list[PlaceSpec], list[dict[str, Any]]]:
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


async def _read_osm(
    job: ImportJob, settings: ImportSettings, progress: Progress
) -> tuple[list[PlaceSpec], list[dict[str, Any]]]:
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


async def run_import(ctx: dict[str, Any], fields: dict[str, Any]) -> str:
    """arq job: one import, from its saved upload to places; returns the final phase."""
    job = ImportJob.from_fields(fields)
    held = resources(ctx)
    redis, settings = held.redis, held.settings
    progress = Progress(redis, job.id)
    stored = False
    phase = "failed"
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
                async with unit_of_work(held.session_factory) as uow:
                    c, u = await upsert_places(uow, organisation_id=job.organisation_id, actor=job.actor, specs=chunk)
                stored = True
                created, updated = created + c, updated + u
                await progress.update(done=start + len(chunk), created=created, updated=updated)
        await progress.update(phase="done")
        phase = "done"
    except ImportFailed as error:
        await progress.update(phase="failed", error=str(error)[:2000])
    except Exception as error:
        log.exception("import_failed", import_id=job.id)
        await progress.update(phase="failed", error=f"the import stopped unexpectedly ({type(error).__name__})")
    finally:
        job.path.unlink(missing_ok=True)
        if stored:
            # Each chunk bumped the organisation's fence version in its own transaction, so every API process's
            # registry finds the change within a second anyway: this message only makes it immediate.
            with contextlib.suppress(Exception):
                await publish_fence_change(redis, job.organisation_id)
    return phase

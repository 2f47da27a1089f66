"""Imports of places from uploaded files (GeoJSON, OpenStreetMap .osm.pbf), run by the worker as an arq job.

The API stores the upload in PostgreSQL (`import_uploads`, its bytes in 1 MiB `import_upload_chunks` rows, written
one chunk at a time in the transaction that records the import), records the import as queued and, once that has
committed, enqueues `run_import`. Whichever worker takes the job, on whichever machine, takes a lease on the
upload, copies its chunks into a private temporary file (osmium reads a path) and deletes the upload when the
import ends, done or failed. It parses the file (OSM in a thread) and stores places in chunks, each its own
transaction, so a large city shows progress and a failure late in the file keeps what was stored before it.
Parsing a city is seconds of CPU: in the worker it does not hold up the API's requests. The state lives in the hash
`placecast:import:<id>` (24 h) and every change is also published on `placecast:import:<id>:progress` for the admin
UI's SSE stream.

A worker renews its lease while it works. One that stops (killed, or cut off by a shutdown) stops renewing, and
`sweep_imports` (every 10 s in every worker) deletes the upload and marks the import failed with a reason: an
import never stays "reading" or "storing" for good. Places stored before the cut stay (storing is idempotent per
external id), so uploading the file again finishes it. Bytes queued longer than the state lives are swept too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
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
from kernel.errors import Problem, Unavailable, ValidationFailed
from kernel.jobs import RESOURCES
from kernel.uow import UnitOfWork, unit_of_work
from services import import_repository as uploads
from services.places import upsert_places

log = structlog.get_logger(__name__)

STATE_TTL_S = 86400
CHUNK = 100
MAX_REFUSED = 500  # reasons kept for the UI; refused_count has them all
TERMINAL = frozenset({"done", "failed"})
IMPORT_ID = re.compile(r"[0-9a-f]{16}")
UPLOAD_CHUNK = 1 << 20  # bytes per import_upload_chunks row (bench/uploads.py)
SUFFIX = {"osm": ".osm.pbf", "geojson": ".geojson"}  # osmium tells the format by the name
CUT_OFF = (
    "the import was cut off before it finished (its worker stopped, or it ran past the time limit); the places "
    "stored before that are kept: upload the file again to finish it"
)
LOST = "the import waited a day without a worker taking it (its queued job was lost): upload the file again"
_slots = asyncio.Semaphore(2)  # imports parsing or storing at once in a worker process; the rest wait "queued"


class ImportFailed(Exception):
    """A reason for the administrator, shown as the import's error."""


@dataclass(frozen=True, slots=True)
class ImportJob:
    id: str
    organisation_id: int
    actor: str
    kind: str  # osm | geojson
    tags: TagFilter

    def fields(self) -> dict[str, Any]:
        """Plain values for the job queue (the file is in PostgreSQL under the import's id)."""
        return {**asdict(self), "tags": [list(t) for t in self.tags]}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ImportJob:
        tags = tuple((str(k), None if v is None else str(v)) for k, v in fields["tags"])
        return cls(fields["id"], int(fields["organisation_id"]), fields["actor"], fields["kind"], tags)


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
    @property
    def import_lease_s(self) -> float: ...


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
    job: ImportJob, path: Path, settings: ImportSettings, progress: Progress
) -> tuple[list[PlaceSpec], list[dict[str, Any]]]:
    loop = asyncio.get_running_loop()

    def tick(done: int, total: int | None) -> None:  # called in the reader thread
        asyncio.run_coroutine_threadsafe(progress.update(done=done, total=total), loop)

    try:
        result = await asyncio.to_thread(
            read_osm_places, path, job.tags, settings.osm_node_radius_m, tick, limits=settings.geometry_limits
        )
    except (RuntimeError, OSError, ValueError) as error:  # osmium reports a corrupt file as RuntimeError
        raise ImportFailed(f"could not read the OSM file: {error}") from error
    skipped = [
        {"external_ref": s.external_ref, "name": s.name, "kind": s.kind, "problems": _problems(s.problems)}
        for s in result.skipped
    ]
    return result.places, skipped


Read = Callable[[int], Awaitable[bytes]]


async def store_upload(uow: UnitOfWork, import_id: str, organisation_id: int, read: Read) -> int:
    """The API's half: the upload's bytes into PostgreSQL in this transaction, `UPLOAD_CHUNK` at a time (never the
    whole file in memory); returns its size. An empty file is refused (and nothing is kept: the caller's
    transaction rolls back)."""
    await uploads.insert_upload(uow.session, import_id, organisation_id)
    size = seq = 0
    while data := await read(UPLOAD_CHUNK):
        await uploads.insert_chunk(uow.session, import_id, seq, data)
        size, seq = size + len(data), seq + 1
    if size == 0:
        raise ValidationFailed("empty file", [Problem("file", "the file is empty")])
    await uploads.set_upload_size(uow.session, import_id, size, seq)
    return size


async def drop_upload(factory: async_sessionmaker[AsyncSession], import_id: str) -> None:
    """Delete an import's upload (queued in vain, finished or failed)."""
    async with unit_of_work(factory) as uow:
        await uploads.delete_upload(uow.session, import_id)


async def _spool(factory: async_sessionmaker[AsyncSession], job: ImportJob, head: uploads.UploadHead) -> Path:
    """The upload, chunk by chunk, into a temporary file of this worker's own (osmium reads a path)."""
    fd, name = tempfile.mkstemp(prefix="placecast-import-", suffix=SUFFIX.get(job.kind, ""))
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            async with factory() as session:
                for seq in range(head.chunks):
                    data = await uploads.read_chunk(session, job.id, seq)
                    if data is None:
                        raise ImportFailed("the upload is incomplete (a chunk is missing): upload the file again")
                    await asyncio.to_thread(out.write, data)
            if out.tell() != head.size:
                raise ImportFailed("the upload is incomplete: upload the file again")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    return path


async def _keep_lease(factory: async_sessionmaker[AsyncSession], import_id: str, lease_s: float) -> None:
    """Renew the upload's lease while the import runs: the sweep takes only uploads nobody renews."""
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            async with unit_of_work(factory) as uow:
                held = await uploads.renew_lease(uow.session, import_id, lease_s)
        except Exception as error:  # the next renewal may succeed; the lease has two more tries before it lapses
            log.warning("import_lease_not_renewed", import_id=import_id, error=repr(error)[:200])
            continue
        if not held:
            log.warning("import_lease_lost", import_id=import_id)
            return


async def run_import(ctx: dict[str, Any], fields: dict[str, Any]) -> str:
    """arq job: one import, from its upload in PostgreSQL to places; returns the final phase."""
    job = ImportJob.from_fields(fields)
    held = resources(ctx)
    redis, settings, factory = held.redis, held.settings, held.session_factory
    async with unit_of_work(factory) as uow:
        head = await uploads.claim_upload(uow.session, job.id, settings.import_lease_s)
    if head is None:
        # Ended already: arq runs a job again after a shutdown cut it off, and the cut-off ended the import (or the
        # sweep did). Its state says how; a second half-run would only confuse it.
        log.info("import_upload_gone", import_id=job.id)
        return "gone"
    progress = Progress(redis, job.id)
    keeper = asyncio.create_task(_keep_lease(factory, job.id, settings.import_lease_s))
    path: Path | None = None
    stored = False
    phase = "failed"
    try:
        async with _slots:
            await progress.update(phase="reading")
            path = await _spool(factory, job, head)
            if job.kind == "osm":
                specs, refused = await _read_osm(job, path, settings, progress)
            else:
                specs, refused = await asyncio.to_thread(_read_geojson, path, settings)
            await progress.update(
                phase="storing", done=0, total=len(specs), refused=refused[:MAX_REFUSED], refused_count=len(refused)
            )
            created = updated = 0
            for start in range(0, len(specs), CHUNK):
                chunk = specs[start : start + CHUNK]
                async with unit_of_work(factory) as uow:
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
    except asyncio.CancelledError:
        # A shutdown (after the worker's grace period) or the job's time limit: end the import now. Should even this
        # not get through, the lease lapses and the sweep ends it.
        await progress.update(phase="failed", error=CUT_OFF)
        raise
    finally:
        # The end state is written first: an upload still there with a lapsed lease is swept, and the sweep leaves
        # an ended state as it is.
        keeper.cancel()
        if path is not None:
            path.unlink(missing_ok=True)
        try:
            await drop_upload(factory, job.id)
        except Exception as error:  # the lease lapses and the sweep deletes it
            log.warning("import_upload_not_deleted", import_id=job.id, error=repr(error)[:200])
        if stored:
            # Each chunk bumped the organisation's fence version in its own transaction, so every API process's
            # registry finds the change within a second anyway: this message only makes it immediate.
            with contextlib.suppress(Exception):
                await publish_fence_change(redis, job.organisation_id)
    return phase


async def sweep_imports(ctx: dict[str, Any]) -> int:
    """arq cron job: end the imports whose worker stopped renewing its lease (killed, cut off) and those whose
    queued job was lost a day ago: their uploads deleted, their state failed with the reason. Returns how many."""
    held = resources(ctx)
    async with unit_of_work(held.session_factory) as uow:
        swept = await uploads.sweep_uploads(uow.session, STATE_TTL_S)
        for upload in swept:
            # Inside the transaction: if Redis cannot take the end state, nothing is deleted and the next sweep
            # tries again. An import that ended just before its worker died keeps its end state.
            phase = await held.redis.hget(state_key(upload.id), "phase")  # type: ignore[misc]
            if phase is not None and as_text(phase) in TERMINAL:
                continue
            await Progress(held.redis, upload.id).update(
                strict=True,
                phase="failed",
                error=CUT_OFF if upload.started else LOST,
                id=upload.id,
                organisation_id=upload.organisation_id,
            )
    if swept:
        log.warning("imports_swept", imports=[u.id for u in swept])
    return len(swept)

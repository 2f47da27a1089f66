"""All SQL of uploaded imports' files (`imports.py`): `import_uploads` and their 1 MiB `import_upload_chunks`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.models import ImportUpload, ImportUploadChunk


@dataclass(frozen=True, slots=True)
class UploadHead:
    size: int
    chunks: int


@dataclass(frozen=True, slots=True)
class SweptUpload:
    id: str
    organisation_id: int
    started: bool  # a worker had taken it (its lease lapsed), or it never left the queue


async def insert_upload(session: AsyncSession, import_id: str, organisation_id: int) -> None:
    await session.execute(insert(ImportUpload).values(id=import_id, organisation_id=organisation_id))


async def insert_chunk(session: AsyncSession, import_id: str, seq: int, data: bytes) -> None:
    await session.execute(insert(ImportUploadChunk).values(upload_id=import_id, seq=seq, data=data))


async def set_upload_size(session: AsyncSession, import_id: str, size: int, chunks: int) -> None:
    await session.execute(update(ImportUpload).where(ImportUpload.id == import_id).values(size=size, chunks=chunks))


async def claim_upload(session: AsyncSession, import_id: str, lease_s: float) -> UploadHead | None:
    """Take a queued upload for `lease_s`; None if it is gone (finished, swept) or another worker took it once
    already (a job run again after a cut-off finds the import failed by the sweep, never half of it twice)."""
    row = (
        await session.execute(
            update(ImportUpload)
            .where(ImportUpload.id == import_id, ImportUpload.lease_until.is_(None))
            .values(lease_until=func.now() + timedelta(seconds=lease_s))
            .returning(ImportUpload.size, ImportUpload.chunks)
        )
    ).one_or_none()
    return None if row is None else UploadHead(int(row.size), int(row.chunks))


async def renew_lease(session: AsyncSession, import_id: str, lease_s: float) -> bool:
    """Keep holding a taken upload; False if it was swept meanwhile."""
    result = await session.execute(
        update(ImportUpload)
        .where(ImportUpload.id == import_id, ImportUpload.lease_until.is_not(None))
        .values(lease_until=func.now() + timedelta(seconds=lease_s))
        .returning(ImportUpload.id)
    )
    return result.one_or_none() is not None


async def read_chunk(session: AsyncSession, import_id: str, seq: int) -> bytes | None:
    found: bytes | None = (
        await session.execute(
            select(ImportUploadChunk.data).where(ImportUploadChunk.upload_id == import_id, ImportUploadChunk.seq == seq)
        )
    ).scalar_one_or_none()
    return found


async def delete_upload(session: AsyncSession, import_id: str) -> bool:
    """The upload and its chunks (cascade); False if it was already gone."""
    result = await session.execute(delete(ImportUpload).where(ImportUpload.id == import_id).returning(ImportUpload.id))
    return result.one_or_none() is not None


async def sweep_uploads(session: AsyncSession, queued_for_s: float) -> list[SweptUpload]:
    """Delete uploads whose worker's lease lapsed (it died or was cut off) and those queued for longer than
    `queued_for_s` (their job is lost); what was deleted, to mark those imports failed."""
    rows = (
        await session.execute(
            delete(ImportUpload)
            .where(
                or_(
                    ImportUpload.lease_until < func.now(),
                    ImportUpload.lease_until.is_(None)
                    & (ImportUpload.created_at < func.now() - timedelta(seconds=queued_for_s)),
                )
            )
            .returning(ImportUpload.id, ImportUpload.organisation_id, ImportUpload.lease_until.is_not(None))
        )
    ).all()
    return [SweptUpload(str(r[0]), int(r[1]), bool(r[2])) for r in rows]

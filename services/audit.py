"""Every change leaves an audit entry, written in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.models import AuditLog


async def record_audit(
    session: AsyncSession,
    *,
    organisation_id: int,
    actor: str,
    action: str,
    entity: str,
    entity_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(AuditLog).values(
            organisation_id=organisation_id,
            actor=actor,
            action=action,
            entity=entity,
            entity_id=entity_id,
            details=details or {},
        )
    )

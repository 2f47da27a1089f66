"""SQL for what an organisation's editors keep in notifications: content items and staff tasks.

The pipeline's own SQL (facts for the rules, notifications, deliveries) is in `repository.py`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from notifications.models import ContentItem, StaffTask

TASK_BOARD_LIMIT = 500


async def _insert(session: AsyncSession, model: type[Any], organisation_id: int, values: dict[str, Any]) -> Any:
    return (
        await session.execute(insert(model).values(organisation_id=organisation_id, **values).returning(model))
    ).scalar_one()


async def add_content(session: AsyncSession, organisation_id: int, values: dict[str, Any]) -> ContentItem:
    """Insert a content item of the organisation; returns the stored row."""
    row: ContentItem = await _insert(session, ContentItem, organisation_id, values)
    return row


async def add_task(session: AsyncSession, organisation_id: int, values: dict[str, Any]) -> StaffTask:
    """Insert a staff task of the organisation; returns the stored row."""
    row: StaffTask = await _insert(session, StaffTask, organisation_id, values)
    return row


async def list_content(session: AsyncSession, organisation_id: int, place_id: int | None = None) -> list[ContentItem]:
    """The organisation's content items in id order, only those attached to `place_id` when given."""
    stmt = select(ContentItem).where(ContentItem.organisation_id == organisation_id)
    if place_id is not None:
        stmt = stmt.where(ContentItem.place_id == place_id)
    return list((await session.execute(stmt.order_by(ContentItem.id))).scalars())


async def content_on_show(
    session: AsyncSession, organisation_id: int, place_id: int, place_kind: str
) -> list[ContentItem]:
    """Active, non-silent content for visitors of a place (attached to it or to its kind) that needs no audience
    tag, newest first; the caller applies the schedule."""
    stmt = (
        select(ContentItem)
        .where(
            ContentItem.organisation_id == organisation_id,
            or_(ContentItem.place_id == place_id, ContentItem.place_kind == place_kind),
            ContentItem.active.is_(True),
            ContentItem.silent.is_(False),
            or_(ContentItem.audience_role.is_(None), ContentItem.audience_role == "visitor"),
            ContentItem.audience_tags == [],
        )
        .order_by(ContentItem.id.desc())
        .limit(50)
    )
    return list((await session.execute(stmt)).scalars())


async def delete_content(session: AsyncSession, organisation_id: int, content_id: int) -> bool:
    """False when the organisation has no such content item."""
    gone = await session.execute(
        delete(ContentItem)
        .where(ContentItem.id == content_id, ContentItem.organisation_id == organisation_id)
        .returning(ContentItem.id)
    )
    return gone.first() is not None


async def list_tasks(session: AsyncSession, organisation_id: int, status: str | None = None) -> list[StaffTask]:
    """The task board: the organisation's newest tasks first, only those in `status` when given."""
    stmt = select(StaffTask).where(StaffTask.organisation_id == organisation_id)
    if status:
        stmt = stmt.where(StaffTask.status == status)
    return list((await session.execute(stmt.order_by(StaffTask.id.desc()).limit(TASK_BOARD_LIMIT))).scalars())

"""All SQL of administrator accounts (`accounts.py`): users and their memberships of organisations."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.models import Membership, Role, User


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: int
    password_hash: str
    is_active: bool


@dataclass(frozen=True, slots=True)
class MembershipRow:
    organisation_id: int
    name: str
    slug: str
    role: str


async def user_id_by_email(session: AsyncSession, email: str) -> int | None:
    """`email` as stored (normalised)."""
    found: int | None = (await session.execute(select(User.id).where(User.email == email))).scalar_one_or_none()
    return found


async def credentials(session: AsyncSession, email: str) -> Credentials | None:
    row = (
        await session.execute(select(User.id, User.password_hash, User.is_active).where(User.email == email))
    ).first()
    return None if row is None else Credentials(int(row.id), row.password_hash, bool(row.is_active))


async def insert_user(session: AsyncSession, email: str, password_hash: str) -> int:
    result = await session.execute(insert(User).values(email=email, password_hash=password_hash).returning(User.id))
    return int(result.scalar_one())


async def set_password_hash(session: AsyncSession, user_id: int, password_hash: str) -> None:
    await session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


async def upsert_membership(session: AsyncSession, *, user_id: int, organisation_id: int, role: Role) -> None:
    statement = insert(Membership).values(user_id=user_id, organisation_id=organisation_id, role=role)
    await session.execute(
        statement.on_conflict_do_update(index_elements=["user_id", "organisation_id"], set_={"role": role})
    )


async def memberships(session: AsyncSession, user_id: int) -> tuple[str, list[MembershipRow]] | None:
    """(email, memberships ordered by organisation id) for an active user; None when gone or disabled."""
    rows = (
        await session.execute(
            text(
                "SELECT u.email, o.id, o.name, o.slug, m.role FROM users u"
                " LEFT JOIN memberships m ON m.user_id = u.id LEFT JOIN organisations o ON o.id = m.organisation_id"
                " WHERE u.id = :u AND u.is_active ORDER BY o.id"
            ),
            {"u": user_id},
        )
    ).all()
    if not rows:
        return None
    return rows[0].email, [MembershipRow(r.id, r.name, r.slug, r.role) for r in rows if r.id is not None]

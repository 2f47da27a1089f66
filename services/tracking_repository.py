"""All SQL of the fix path and of what it writes: device states, fixes (and their daily partitions), fix batches,
events, visits and outbox rows.

The two statements every fix runs (store the fixes and lock the state, save the state) go through asyncpg directly
(`FixConnection`): prepared and cached, one round trip each. The rest goes through the session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geofences.transitions import TransitionEvent
from kernel.errors import ConnectionLost
from services.tracking_rules import ZONES, FixRecord, RecordedEvent, ZoneKey

STORE_AND_LOCK = """
WITH stored AS (
    INSERT INTO fixes (organisation_id, device_id, device_ts, lon, lat, accuracy_m, speed_mps, batch_id, source)
    SELECT $1, $2, t, x, y, a, v, $8, $9
    FROM unnest($3::timestamptz[], $4::float8[], $5::float8[], $6::float8[], $7::float8[]) AS u(t, x, y, a, v)
)
SELECT ds.state, o.late_fix_after_s FROM device_states ds, organisations o
WHERE ds.device_id = $2 AND o.id = $1 FOR UPDATE OF ds
"""
SAVE_STATE = "UPDATE device_states SET state = $2::jsonb, updated_at = now() WHERE device_id = $1"


INSERT_EVENTS = text("""
WITH inserted AS (
    INSERT INTO events (organisation_id, device_id, place_id, fence_id, kind, zone, occurred_at, late)
    SELECT :org, :device, COALESCE(g.place_id, p.id), g.id, e.kind, e.zone, e.at, e.late
    FROM unnest(CAST(:fence AS bigint[]), CAST(:place AS bigint[]), CAST(:kind AS text[]), CAST(:zone AS text[]),
                CAST(:at AS timestamptz[]), CAST(:late AS boolean[]))
         WITH ORDINALITY AS e(fence_id, place_id, kind, zone, at, late, n)
    LEFT JOIN geofences g ON g.id = e.fence_id AND g.organisation_id = :org
    LEFT JOIN places p ON p.id = e.place_id AND p.organisation_id = :org
    -- A fence removed since the device entered it still gets its exit, with the remembered place (see
    -- `tracking_rules.PLACES_KEY`) and no fence; nothing is recorded for a place that is gone.
    WHERE g.id IS NOT NULL OR (e.kind = 'exit' AND p.id IS NOT NULL)
    ORDER BY e.n
    RETURNING id, kind, place_id, fence_id, zone, occurred_at, late
)
SELECT inserted.*, p.name AS place_name FROM inserted JOIN places p ON p.id = inserted.place_id
ORDER BY inserted.id
""")


# ---- the device's state and its fixes: the hot path ----


@dataclass(frozen=True, slots=True)
class LockedState:
    raw: dict[str, Any]  # the state's JSON as stored (see `tracking_rules.load_state`)
    late_fix_after_s: int | None  # the organisation's late limit; None: the service's setting applies


class FixConnection:
    """The asyncpg connection under the session's transaction, for the fix path's two raw statements."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    @classmethod
    async def of(cls, session: AsyncSession) -> FixConnection:
        """SQLAlchemy's asyncpg adapter sends BEGIN only with the first statement it runs itself. When the fix's
        raw statements come first (a single fix from a device whose credential is cached), they would run in
        autocommit: the state lock released at once, two requests of one device interleaving (double enters, a
        second open visit) and fixes committed without their events. So the transaction is started here, the
        adapter's own way.
        """
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        adapted = raw.dbapi_connection
        if adapted is not None and adapted._transaction is None:  # SQLAlchemy 2.0's adapter (pinned)
            try:
                await adapted._start_transaction()
            except Exception as error:  # BEGIN fails only when the connection is gone (PostgreSQL restarted)
                await connection.invalidate()
                raise ConnectionLost("the database connection was lost; retry shortly") from error
        return cls(raw.driver_connection)

    async def store_fixes_and_lock_state(
        self, organisation_id: int, device_id: int, fixes: Sequence[FixRecord], batch_id: str | None, source: str
    ) -> LockedState | None:
        """One round trip: the fixes stored in their day's partition, the device's state locked (`FOR UPDATE`) and
        read with the organisation's late limit. None: the device's state is gone (erased)."""
        locked = await self._driver.fetchrow(
            STORE_AND_LOCK,
            organisation_id,
            device_id,
            [f.ts for f in fixes],
            [f.lon for f in fixes],
            [f.lat for f in fixes],
            [f.accuracy_m for f in fixes],
            [f.speed_mps for f in fixes],
            batch_id,
            source,
        )
        if locked is None:
            return None
        raw_state, late_fix_after_s = locked
        raw = orjson.loads(raw_state) if isinstance(raw_state, str | bytes) else raw_state
        return LockedState(raw, late_fix_after_s)

    async def save_state(self, device_id: int, state: Mapping[str, Any]) -> None:
        await self._driver.execute(SAVE_STATE, device_id, orjson.dumps(state).decode())


async def lock_state(session: AsyncSession, device_id: int) -> dict[str, Any] | None:
    """The device's state JSON, its row locked until the transaction ends; None when the device is gone."""
    raw: dict[str, Any] | None = (
        await session.execute(text("SELECT state FROM device_states WHERE device_id = :d FOR UPDATE"), {"d": device_id})
    ).scalar_one_or_none()
    return raw


# ---- fix batches: a batch id is claimed once per device ----


async def claim_batch(session: AsyncSession, device_id: int, batch_id: str, fix_count: int) -> bool:
    """False when the device already used this batch id."""
    claimed = (
        await session.execute(
            text(
                "INSERT INTO fix_batches (device_id, batch_id, fix_count) VALUES (:d, :b, :n)"
                " ON CONFLICT DO NOTHING RETURNING fix_count"
            ),
            {"d": device_id, "b": batch_id, "n": fix_count},
        )
    ).scalar_one_or_none()
    return claimed is not None


async def claimed_batch(session: AsyncSession, device_id: int, batch_id: str) -> tuple[int, list[tuple[Any, ...]]]:
    """A claimed batch: its fix count and the fixes still stored of it, as (ts, lon, lat, accuracy, speed) rows.

    The batch's fixes were stored in the claim's transaction, so with its `received_at`; retention may have
    dropped them since.
    """
    count, received_at = (
        await session.execute(
            text("SELECT fix_count, received_at FROM fix_batches WHERE device_id = :d AND batch_id = :b"),
            {"d": device_id, "b": batch_id},
        )
    ).one()
    stored = (
        await session.execute(
            text(
                "SELECT device_ts, lon, lat, accuracy_m, speed_mps FROM fixes"
                " WHERE device_id = :d AND received_at = :at AND batch_id = :b"
            ),
            {"d": device_id, "at": received_at, "b": batch_id},
        )
    ).all()
    return int(count), [tuple(row) for row in stored]


# ---- events and their outbox rows ----


async def insert_events(
    session: AsyncSession,
    organisation_id: int,
    device_id: int,
    transitions: Sequence[TransitionEvent[ZoneKey]],
    places: Mapping[int, int],
) -> list[RecordedEvent]:
    """The transitions as events, in order, each with its place's name (no visit yet). `places` gives the place of
    a fence that may have been removed since the device entered it."""
    rows = (
        await session.execute(
            INSERT_EVENTS,
            {
                "org": organisation_id,
                "device": device_id,
                "fence": [t.key[0] for t in transitions],
                "place": [places.get(t.key[0]) for t in transitions],
                "kind": [t.kind for t in transitions],
                "zone": [ZONES[t.key[1]] for t in transitions],
                "at": [datetime.fromtimestamp(t.ts, UTC) for t in transitions],
                "late": [t.late for t in transitions],
            },
        )
    ).all()
    return [
        RecordedEvent(r.id, r.kind, r.place_id, r.fence_id, r.zone, r.occurred_at, None, r.place_name, r.late)
        for r in rows
    ]


async def insert_building_event(
    session: AsyncSession,
    *,
    organisation_id: int,
    device_id: int,
    place_id: int,
    kind: str,
    at: datetime,
    visit_id: int | None,
) -> int:
    """An event of the place's building with no fence (a check-in or check-out); its id."""
    event_id: int = (
        await session.execute(
            text(
                "INSERT INTO events (organisation_id, device_id, place_id, kind, zone, occurred_at, visit_id)"
                " VALUES (:o, :d, :p, :k, 'building', :at, :v) RETURNING id"
            ),
            {"o": organisation_id, "d": device_id, "p": place_id, "k": kind, "at": at, "v": visit_id},
        )
    ).scalar_one()
    return event_id


async def set_event_visit(session: AsyncSession, event_id: int, visit_id: int) -> None:
    await session.execute(text("UPDATE events SET visit_id = :v WHERE id = :e"), {"v": visit_id, "e": event_id})


async def write_outbox(session: AsyncSession, event_ids: list[int]) -> None:
    if event_ids:
        await session.execute(
            text("INSERT INTO outbox (event_id) SELECT unnest(CAST(:ids AS bigint[]))"), {"ids": event_ids}
        )


# ---- visits ----


async def current_visit(session: AsyncSession, device_id: int, place_id: int) -> int | None:
    """The device's open visit at the place."""
    return (
        await session.execute(
            text("SELECT id FROM visits WHERE device_id = :d AND place_id = :p AND ended_at IS NULL"),
            {"d": device_id, "p": place_id},
        )
    ).scalar_one_or_none()


async def mark_visit(session: AsyncSession, visit_id: int, *, detected: bool) -> None:
    """The visit was detected by the fences too (`detected`), or checked in to too."""
    flag = "detected" if detected else "checked_in"
    await session.execute(text(f"UPDATE visits SET {flag} = true WHERE id = :v"), {"v": visit_id})


async def insert_visit(
    session: AsyncSession,
    *,
    organisation_id: int,
    device_id: int,
    place_id: int,
    started_at: datetime,
    detected: bool,
    checked_in: bool,
) -> int:
    visit_id: int = (
        await session.execute(
            text(
                "INSERT INTO visits (organisation_id, device_id, place_id, started_at, detected, checked_in)"
                " VALUES (:o, :d, :p, :at, :det, :chk) RETURNING id"
            ),
            {
                "o": organisation_id,
                "d": device_id,
                "p": place_id,
                "at": started_at,
                "det": detected,
                "chk": checked_in,
            },
        )
    ).scalar_one()
    return visit_id


async def end_visit(session: AsyncSession, visit_id: int, at: datetime) -> datetime:
    """Ends the visit at `at`, never before it began (a check-in without a device time started it on the server's
    clock); the time it ended."""
    ended: datetime = (
        await session.execute(
            text("UPDATE visits SET ended_at = GREATEST(started_at, :at) WHERE id = :v RETURNING ended_at"),
            {"at": at, "v": visit_id},
        )
    ).scalar_one()
    return ended


# ---- retention: fixes live in daily partitions ----


async def fix_partitions(session: AsyncSession) -> list[str]:
    """The names of the partitions of `fixes` (`fixes_YYYYMMDD`, and the DEFAULT partition)."""
    rows = await session.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'fixes'"
        )
    )
    return [str(name) for name in rows.scalars()]


async def drop_fix_partition(session: AsyncSession, name: str) -> None:
    """`name` must be one of `fix_partitions`' (it is quoted, not bound: DDL takes no parameters)."""
    await session.execute(text(f'DROP TABLE "{name}"'))


async def delete_default_fixes(session: AsyncSession, received_before: datetime) -> int:
    """Deletes the DEFAULT partition's fixes received before the time; how many."""
    deleted = await session.execute(
        text("DELETE FROM fixes_default WHERE received_at < :cutoff"), {"cutoff": received_before}
    )
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]


async def ensure_fix_partitions(session: AsyncSession, days_ahead: int) -> None:
    await session.execute(text("SELECT placecast_ensure_fix_partitions(0, :ahead)"), {"ahead": days_ahead})

"""Use cases of the geofence engine: record fixes, and the device-state lock and visits that check-ins share.

One device's fixes are processed under a row lock on its state (`SELECT … FOR UPDATE`), so
concurrent requests and several API replicas see one consistent sequence: one crossing, one enter.
Events and their outbox rows are written in the same transaction as the fixes. The pure part (the rules run over
the fixes, the state's JSON) is `services.tracking_rules`; the SQL is `services.tracking_repository`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from geofences import repository as geofences
from geofences.index import FenceIndex
from geofences.transitions import DeviceState, TransitionConfig
from kernel.errors import Conflict, NotFound, Problem
from kernel.uow import UnitOfWork
from services import tracking_repository as repository
from services.devices import DeviceAuth
from services.tracking_rules import (
    ZONES,
    FixOutcome,
    FixRecord,
    RecordedEvent,
    ZoneKey,
    dump_state,
    load_state,
    remembered_places,
    run_transitions,
    with_places,
)

# The API, the benchmarks and the tests take the fix path's types and rules from here too.
__all__ = [
    "ZONES",
    "FixOutcome",
    "FixRecord",
    "RecordedEvent",
    "ZoneKey",
    "load_state",
    "lock_state",
    "open_visit",
    "record_fixes",
    "run_transitions",
    "state_places",
]


async def lock_state(session: AsyncSession, device_id: int) -> DeviceState[ZoneKey]:
    raw = await repository.lock_state(session, device_id)
    if raw is None:
        raise NotFound("device not found (erased?)")
    return load_state(raw)


async def _attach_visits(
    session: AsyncSession,
    device: DeviceAuth,
    events: list[RecordedEvent],
    state: DeviceState[ZoneKey],
    fence_places: dict[int, int],
) -> list[RecordedEvent]:
    """A check-in and a detected enter of the same stay are one visit: building enters join an open one."""
    out = []
    for event in events:
        visit_id: int | None = None
        if event.zone == "building" and event.kind in ("enter", "dwell"):
            visit_id = await open_visit(session, device, event.place_id, event.occurred_at, detected=True)
        elif event.zone == "building" and event.kind == "exit":
            still_inside = any(z == 0 and fence_places.get(f) == event.place_id for f, z in state.inside())
            visit_id = await repository.current_visit(session, device.device_id, event.place_id)
            if not still_inside and visit_id is not None:
                await repository.end_visit(session, visit_id, event.occurred_at)
        if visit_id is not None:
            await repository.set_event_visit(session, event.id, visit_id)
        out.append(replace(event, visit_id=visit_id))
    return out


async def open_visit(
    session: AsyncSession,
    device: DeviceAuth,
    place_id: int,
    at: datetime,
    *,
    detected: bool = False,
    checked_in: bool = False,
) -> int:
    existing = await repository.current_visit(session, device.device_id, place_id)
    if existing is not None:
        await repository.mark_visit(session, existing, detected=detected)
        return existing
    return await repository.insert_visit(
        session,
        organisation_id=device.organisation_id,
        device_id=device.device_id,
        place_id=place_id,
        started_at=at,
        detected=detected,
        checked_in=checked_in,
    )


def _content(fixes: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """(ts, lon, lat, accuracy, speed) rows as comparable values, in no particular order (a client may resend its
    batch reordered); None sorts apart from every number."""
    return sorted((ts, lon, lat, acc is None, acc or 0.0, v is None, v or 0.0) for ts, lon, lat, acc, v in fixes)


async def _replayed(session: AsyncSession, device_id: int, batch_id: str, fixes: Sequence[FixRecord]) -> int:
    """A claimed batch id sent again: the first answer's count when the fixes are the same, else a 409.

    The batch's own fixes are its record; once retention has dropped them only the count can be compared.
    """
    count, stored = await repository.claimed_batch(session, device_id, batch_id)
    same = len(fixes) == count and (
        len(stored) != count
        or _content(stored) == _content([(f.ts, f.lon, f.lat, f.accuracy_m, f.speed_mps) for f in fixes])
    )
    if not same:
        raise Conflict(
            "this batch_id was already used for different fixes; send new fixes with a new batch_id",
            [Problem("batch_id", f"already used for a different batch of {count} fixes", "batch_id_reused")],
        )
    return count


async def record_fixes(
    uow: UnitOfWork,
    *,
    device: DeviceAuth,
    fixes: Sequence[FixRecord],
    index: FenceIndex,
    config: TransitionConfig,
    batch_id: str | None = None,
    source: str = "native",
    assumed_accuracy_m: float = 30.0,
    late_after_s: float = 600.0,
) -> FixOutcome:
    """Store the fixes and run them through the rules under the device's state lock.

    Events of fixes that arrive later than the organisation's limit (or `late_after_s`) are `late`: recorded
    and sent to webhooks, never pushed. A fix without accuracy is judged with `assumed_accuracy_m`.
    """
    session = uow.session
    received_at = datetime.now(UTC)
    if batch_id is not None and not await repository.claim_batch(session, device.device_id, batch_id, len(fixes)):
        return FixOutcome(accepted=await _replayed(session, device.device_id, batch_id, fixes), duplicate=True)
    # The hot path of every fix: asyncpg directly, one round trip to store the fixes and lock the state.
    connection = await repository.FixConnection.of(session)
    locked = await connection.store_fixes_and_lock_state(
        device.organisation_id, device.device_id, fixes, batch_id, source
    )
    if locked is None:
        raise NotFound("device not found (erased?)")
    if locked.late_fix_after_s is not None:
        late_after_s = float(locked.late_fix_after_s)
    state = load_state(locked.raw)
    new_state, transitions = run_transitions(index, state, fixes, config, assumed_accuracy_m, received_at, late_after_s)
    places = await state_places(session, locked.raw, new_state)
    await connection.save_state(device.device_id, with_places(dump_state(new_state), new_state, places))
    if not transitions:
        return FixOutcome(accepted=len(fixes))
    recorded = await repository.insert_events(session, device.organisation_id, device.device_id, transitions, places)
    fence_places = await geofences.fence_places(session, [f for f, _ in new_state.inside()])
    recorded = await _attach_visits(session, device, recorded, new_state, fence_places)
    await repository.write_outbox(session, [e.id for e in recorded])
    return FixOutcome(accepted=len(fixes), events=recorded)


async def state_places(session: AsyncSession, raw: Mapping[str, Any], state: DeviceState[ZoneKey]) -> dict[int, int]:
    """Fence id -> place id for the fences of the state as stored (`raw`) and of `state` (after this batch): the
    remembered ones, and the others from `geofences` (queried only when a fence is new to the state)."""
    places = remembered_places(raw)
    missing = list({f for f, _ in state.fences} - places.keys())
    if missing:
        places.update(await geofences.fence_places(session, missing))
    return places

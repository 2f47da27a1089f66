"""Use cases of the geofence engine: record fixes, check in, check out.

One device's fixes are processed under a row lock on its state (`SELECT … FOR UPDATE`), so
concurrent requests and several API replicas see one consistent sequence: one crossing, one enter.
Events and their outbox rows are written in the same transaction as the fixes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geofences.index import FenceIndex
from geofences.transitions import DeviceState, Fix, Smoothed, TransitionConfig, TransitionEvent, ZoneState, smooth, step
from kernel.errors import Conflict, ConnectionLost, NotFound, Problem
from kernel.uow import UnitOfWork
from services.devices import DeviceAuth

ZONES = ("building", "approach")
ZoneKey = tuple[int, int]  # (fence_id, zone code: 0 building, 1 approach)


@dataclass(frozen=True, slots=True)
class FixRecord:
    ts: datetime
    lon: float
    lat: float
    accuracy_m: float | None = None
    speed_mps: float | None = None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    id: int
    kind: str
    place_id: int
    fence_id: int | None
    zone: str
    occurred_at: datetime
    visit_id: int | None
    place_name: str = ""
    late: bool = False  # its fix arrived later than the organisation's limit: never pushed

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "place_id": self.place_id,
            "place_name": self.place_name,
            "fence_id": self.fence_id,
            "zone": self.zone,
            "occurred_at": self.occurred_at.isoformat(),
            "visit_id": self.visit_id,
            "late": self.late,
        }


@dataclass
class FixOutcome:
    accepted: int
    duplicate: bool = False
    events: list[RecordedEvent] = field(default_factory=list)


# ---- state (de)serialisation: JSONB on device_states ----


def load_state(raw: dict[str, Any]) -> DeviceState[ZoneKey]:
    zones: dict[ZoneKey, ZoneState] = {}
    for key, values in (raw.get("fences") or {}).items():
        # [since, dwell_fired, outside_since, entered_late]; states saved before migration 0005 hold the first two.
        since, dwell_fired, *rest = values
        outside_since = rest[0] if rest else None
        zones[_zone_key(key)] = ZoneState(float(since), bool(dwell_fired), outside_since, bool(rest[1:2] and rest[1]))
    smoothed = raw.get("smoothed")
    return DeviceState(
        raw.get("last_ts"),
        raw.get("last_lon"),
        raw.get("last_lat"),
        zones,
        int(raw.get("rejected_jumps", 0)),
        float(raw.get("last_accuracy_m") or 0.0),
        raw.get("last_seen_ts"),
        Smoothed(*smoothed) if smoothed else None,
        {_zone_key(key): float(depth) for key, depth in (raw.get("last_depths") or {}).items()},
    )


def _zone_key(text: str) -> ZoneKey:
    fence_id, zone = text.split(":")
    return int(fence_id), int(zone)


def dump_state(state: DeviceState[ZoneKey]) -> dict[str, Any]:
    return {
        "last_ts": state.last_ts,
        "last_lon": state.last_lon,
        "last_lat": state.last_lat,
        "rejected_jumps": state.rejected_jumps,
        "last_accuracy_m": state.last_accuracy_m,
        "last_seen_ts": state.last_seen_ts,
        "smoothed": list(state.smoothed) if state.smoothed else None,
        "last_depths": {f"{f}:{z}": depth for (f, z), depth in state.last_depths.items()},
        "fences": {f"{f}:{z}": list(zone) for (f, z), zone in state.fences.items()},
    }


def run_transitions(
    index: FenceIndex,
    state: DeviceState[ZoneKey],
    fixes: Sequence[FixRecord],
    config: TransitionConfig,
    assumed_accuracy_m: float = math.nan,
    received_at: datetime | None = None,
    late_after_s: float = math.inf,
) -> tuple[DeviceState[ZoneKey], list[TransitionEvent[ZoneKey]]]:
    """Pure: one device's fixes in device-time order through the index and the transition rules.

    This is what every fix request runs (and what `bench.flap` and `bench.engine` measure). A fix without
    accuracy is judged with `assumed_accuracy_m` (the client protocol's, see settings); places' tuning
    (`index.tuning`) gives their zones their own parameters. A fix measured more than `late_after_s` before
    `received_at` is late: its events are flagged (`is_late`), and so is the dwell of a zone it entered.
    """
    ordered = sorted(fixes, key=lambda f: f.ts)
    inside: list[set[ZoneKey]]
    if len(ordered) == 1:  # most requests; a bulk query's numpy set-up costs ~20x a point lookup
        inside = [index.zones_at(ordered[0].lon, ordered[0].lat)]
    else:
        lons = np.fromiter((f.lon for f in ordered), np.float64, len(ordered))
        lats = np.fromiter((f.lat for f in ordered), np.float64, len(ordered))
        hits = index.query_bulk(lons, lats)
        inside = [set() for _ in ordered]
        for fix_idx, fence_id, zone in zip(
            hits.fix_idx.tolist(), hits.fence_ids.tolist(), hits.zones.tolist(), strict=True
        ):
            inside[fix_idx].add((fence_id, zone))
    events: list[TransitionEvent[ZoneKey]] = []
    for position, record in enumerate(ordered):
        accuracy = record.accuracy_m if record.accuracy_m is not None else assumed_accuracy_m
        fix = Fix(record.ts.timestamp(), record.lon, record.lat, accuracy, record.speed_mps)
        smoothed = smooth(state, fix, config)
        # The mean sits on the fix after a restart (a move, a first fix): one lookup then answers both.
        same = smoothed.lon == record.lon and smoothed.lat == record.lat
        at_mean = inside[position] if same else index.zones_at(smoothed.lon, smoothed.lat)
        keys = list(inside[position].union(at_mean, state.fences))
        if same:
            signed = mean_signed = _signed(index, keys, [(inside[position], record.lon, record.lat)])[0]
        else:
            signed, mean_signed = _signed(
                index, keys, [(inside[position], record.lon, record.lat), (at_mean, smoothed.lon, smoothed.lat)]
            )
        late = received_at is not None and is_late(fix.ts, received_at, late_after_s)
        configs = _zone_configs(index, keys, config)
        # Zones the fix is in and the previous accepted fix was not: where that fix was (a walk in?). Rare: one more
        # index call only when a fix crosses into a zone.
        fresh = [key for key in inside[position] if key not in state.last_depths]
        previous_signed = None
        if fresh and state.last_lon is not None and state.last_lat is not None:
            previous_signed = _signed(index, fresh, [(set(), state.last_lon, state.last_lat)])[0]
        state, new = step(state, fix, signed, config, configs, smoothed, mean_signed, late, previous_signed)
        events += new
    return state, events


def _signed(
    index: FenceIndex, keys: list[ZoneKey], points: list[tuple[set[ZoneKey], float, float]]
) -> list[dict[ZoneKey, float]]:
    """Signed distances of `keys`' zones at each point (`(zones containing it, lon, lat)`), in one index call."""
    if not keys:
        return [{} for _ in points]
    n = len(keys)
    measured = index.signed_distance_m(
        [k[0] for k in keys] * len(points),
        [lon for _, lon, _ in points for _ in range(n)],
        [lat for _, _, lat in points for _ in range(n)],
        [k[1] for k in keys] * len(points),
    ).tolist()
    out = []
    for number, (inside, _, _) in enumerate(points):
        signed = dict(zip(keys, measured[number * n : (number + 1) * n], strict=True))
        for key in inside:  # the index's containment is the truth on the boundary itself
            signed[key] = max(signed[key], 0.0)
        out.append(signed)
    return out


def is_late(event_ts: float, received_at: datetime, late_after_s: float) -> bool:
    """Whether an event's fix reached the server later than the organisation's limit (it then never pushes)."""
    return received_at.timestamp() - event_ts > late_after_s


def _zone_configs(index: FenceIndex, keys: list[ZoneKey], config: TransitionConfig) -> dict[ZoneKey, TransitionConfig]:
    tuning = index.tuning
    if not tuning:
        return {}
    return {key: config.with_overrides(tuning[key[0]]) for key in keys if key[0] in tuning}


# ---- persistence ----

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
    -- `state_places`) and no fence; nothing is recorded for a place that is gone.
    WHERE g.id IS NOT NULL OR (e.kind = 'exit' AND p.id IS NOT NULL)
    ORDER BY e.n
    RETURNING id, kind, place_id, fence_id, zone, occurred_at, late
)
SELECT inserted.*, p.name AS place_name FROM inserted JOIN places p ON p.id = inserted.place_id
ORDER BY inserted.id
""")


async def lock_state(session: AsyncSession, device_id: int) -> DeviceState[ZoneKey]:
    raw = (
        await session.execute(text("SELECT state FROM device_states WHERE device_id = :d FOR UPDATE"), {"d": device_id})
    ).scalar_one_or_none()
    if raw is None:
        raise NotFound("device not found (erased?)")
    return load_state(raw)


async def _driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction (statements are prepared and cached).

    SQLAlchemy's asyncpg adapter sends BEGIN only with the first statement it runs itself. When the fix's raw
    statements come first (a single fix from a device whose credential is cached), they would run in autocommit:
    the state lock released at once, two requests of one device interleaving (double enters, a second open
    visit) and fixes committed without their events. So the transaction is started here, the adapter's own way.
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
    return raw.driver_connection


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
            visit_id = await current_visit(session, device.device_id, event.place_id)
            if not still_inside and visit_id is not None:
                await session.execute(
                    # never before it began: a check-in without a device time started it on the server's clock
                    text("UPDATE visits SET ended_at = GREATEST(started_at, :at) WHERE id = :v"),
                    {"at": event.occurred_at, "v": visit_id},
                )
        if visit_id is not None:
            await session.execute(text("UPDATE events SET visit_id = :v WHERE id = :e"), {"v": visit_id, "e": event.id})
        out.append(replace(event, visit_id=visit_id))
    return out


async def current_visit(session: AsyncSession, device_id: int, place_id: int) -> int | None:
    return (
        await session.execute(
            text("SELECT id FROM visits WHERE device_id = :d AND place_id = :p AND ended_at IS NULL"),
            {"d": device_id, "p": place_id},
        )
    ).scalar_one_or_none()


async def open_visit(
    session: AsyncSession,
    device: DeviceAuth,
    place_id: int,
    at: datetime,
    *,
    detected: bool = False,
    checked_in: bool = False,
) -> int:
    existing = await current_visit(session, device.device_id, place_id)
    if existing is not None:
        flag = "detected" if detected else "checked_in"
        await session.execute(text(f"UPDATE visits SET {flag} = true WHERE id = :v"), {"v": existing})
        return existing
    visit_id: int = (
        await session.execute(
            text(
                "INSERT INTO visits (organisation_id, device_id, place_id, started_at, detected, checked_in)"
                " VALUES (:o, :d, :p, :at, :det, :chk) RETURNING id"
            ),
            {
                "o": device.organisation_id,
                "d": device.device_id,
                "p": place_id,
                "at": at,
                "det": detected,
                "chk": checked_in,
            },
        )
    ).scalar_one()
    return visit_id


async def write_outbox(session: AsyncSession, event_ids: list[int]) -> None:
    if event_ids:
        await session.execute(
            text("INSERT INTO outbox (event_id) SELECT unnest(CAST(:ids AS bigint[]))"), {"ids": event_ids}
        )


def _content(fixes: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """(ts, lon, lat, accuracy, speed) rows as comparable values, in no particular order (a client may resend its
    batch reordered); None sorts apart from every number."""
    return sorted((ts, lon, lat, acc is None, acc or 0.0, v is None, v or 0.0) for ts, lon, lat, acc, v in fixes)


async def _replayed(session: AsyncSession, device_id: int, batch_id: str, fixes: Sequence[FixRecord]) -> int:
    """A claimed batch id sent again: the first answer's count when the fixes are the same, else a 409.

    The batch's own fixes are its record (stored in the claim's transaction, so with its `received_at`); once
    retention has dropped them only the count can be compared.
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
    same = len(fixes) == count and (
        len(stored) != count
        or _content(stored) == _content([(f.ts, f.lon, f.lat, f.accuracy_m, f.speed_mps) for f in fixes])
    )
    if not same:
        raise Conflict(
            "this batch_id was already used for different fixes; send new fixes with a new batch_id",
            [Problem("batch_id", f"already used for a different batch of {count} fixes", "batch_id_reused")],
        )
    return int(count)


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
    if batch_id is not None:
        claimed = (
            await session.execute(
                text(
                    "INSERT INTO fix_batches (device_id, batch_id, fix_count) VALUES (:d, :b, :n)"
                    " ON CONFLICT DO NOTHING RETURNING fix_count"
                ),
                {"d": device.device_id, "b": batch_id, "n": len(fixes)},
            )
        ).scalar_one_or_none()
        if claimed is None:
            return FixOutcome(accepted=await _replayed(session, device.device_id, batch_id, fixes), duplicate=True)
    # The hot path of every fix: asyncpg directly, one round trip to store the fixes and lock the state.
    driver = await _driver(session)
    locked = await driver.fetchrow(
        STORE_AND_LOCK,
        device.organisation_id,
        device.device_id,
        [f.ts for f in fixes],
        [f.lon for f in fixes],
        [f.lat for f in fixes],
        [f.accuracy_m for f in fixes],
        [f.speed_mps for f in fixes],
        batch_id,
        source,
    )
    if locked is None:
        raise NotFound("device not found (erased?)")
    raw_state, organisation_late_s = locked
    if organisation_late_s is not None:
        late_after_s = float(organisation_late_s)
    raw = orjson.loads(raw_state) if isinstance(raw_state, str | bytes) else raw_state
    state = load_state(raw)
    new_state, transitions = run_transitions(index, state, fixes, config, assumed_accuracy_m, received_at, late_after_s)
    places = await state_places(session, raw, new_state)
    saved = with_places(dump_state(new_state), new_state, places)
    await driver.execute(SAVE_STATE, device.device_id, orjson.dumps(saved).decode())
    if not transitions:
        return FixOutcome(accepted=len(fixes))
    rows = (
        await session.execute(
            INSERT_EVENTS,
            {
                "org": device.organisation_id,
                "device": device.device_id,
                "fence": [t.key[0] for t in transitions],
                "place": [places.get(t.key[0]) for t in transitions],
                "kind": [t.kind for t in transitions],
                "zone": [ZONES[t.key[1]] for t in transitions],
                "at": [datetime.fromtimestamp(t.ts, UTC) for t in transitions],
                "late": [t.late for t in transitions],
            },
        )
    ).all()
    recorded = [
        RecordedEvent(r.id, r.kind, r.place_id, r.fence_id, r.zone, r.occurred_at, None, r.place_name, r.late)
        for r in rows
    ]
    fence_places = await _fence_places(session, [f for f, _ in new_state.inside()])
    recorded = await _attach_visits(session, device, recorded, new_state, fence_places)
    await write_outbox(session, [e.id for e in recorded])
    return FixOutcome(accepted=len(fixes), events=recorded)


async def _fence_places(session: AsyncSession, fence_ids: list[int]) -> dict[int, int]:
    if not fence_ids:
        return {}
    rows = await session.execute(
        text("SELECT id, place_id FROM geofences WHERE id = ANY(CAST(:ids AS bigint[]))"), {"ids": fence_ids}
    )
    return {int(r.id): int(r.place_id) for r in rows}


# ---- the place of every fence in a device's state, so that an exit outlives its fence ----
#
# An admin may remove a fence while devices are inside it. The index no longer knows it, so the transition rules
# exit it like any other zone (it is infinitely far), but its row is gone: the state therefore keeps the place of
# each fence it holds under "places" ({"<fence_id>": place_id}, beside what `dump_state` writes), and INSERT_EVENTS
# records such an exit with that place and no fence.

PLACES_KEY = "places"


async def state_places(session: AsyncSession, raw: Mapping[str, Any], state: DeviceState[ZoneKey]) -> dict[int, int]:
    """Fence id -> place id for the fences of the state as stored (`raw`) and of `state` (after this batch): the
    remembered ones, and the others from `geofences` (queried only when a fence is new to the state)."""
    places = {int(f): int(p) for f, p in (raw.get(PLACES_KEY) or {}).items()}
    missing = list({f for f, _ in state.fences} - places.keys())
    if missing:
        places.update(await _fence_places(session, missing))
    return places


def with_places(dumped: dict[str, Any], state: DeviceState[ZoneKey], places: Mapping[int, int]) -> dict[str, Any]:
    """`dump_state`'s JSON plus the places of the fences `state` still holds."""
    held = {f for f, _ in state.fences}
    return {**dumped, PLACES_KEY: {str(f): p for f, p in places.items() if f in held}}

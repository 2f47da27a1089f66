"""The fix path's pure part: fixes, events and a device's state as plain data, the state's JSON form, and
`run_transitions`, which takes one device's fixes through the fence index and the transition rules.

No I/O: `services.tracking` loads and saves around it (`services.tracking_repository` holds the SQL), and the
benchmarks (`bench.flap`, `bench.engine`) measure exactly this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from geofences.index import FenceIndex
from geofences.transitions import DeviceState, Fix, Smoothed, TransitionConfig, TransitionEvent, ZoneState, smooth, step

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


# ---- the place of every fence in a device's state, so that an exit outlives its fence ----
#
# An admin may remove a fence while devices are inside it. The index no longer knows it, so the transition rules
# exit it like any other zone (it is infinitely far), but its row is gone: the state therefore keeps the place of
# each fence it holds under "places" ({"<fence_id>": place_id}, beside what `dump_state` writes), and the event
# insert (`tracking_repository.insert_events`) records such an exit with that place and no fence.

PLACES_KEY = "places"


def remembered_places(raw: Mapping[str, Any]) -> dict[int, int]:
    """Fence id -> place id as the stored state (`raw`) remembers them."""
    return {int(f): int(p) for f, p in (raw.get(PLACES_KEY) or {}).items()}


def with_places(dumped: dict[str, Any], state: DeviceState[ZoneKey], places: Mapping[int, int]) -> dict[str, Any]:
    """`dump_state`'s JSON plus the places of the fences `state` still holds."""
    held = {f for f, _ in state.fences}
    return {**dumped, PLACES_KEY: {str(f): p for f, p in places.items() if f in held}}

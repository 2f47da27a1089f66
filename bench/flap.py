"""Flap benchmark: the product's transition rules against the previous ones, on realistic GPS traces.

Both run over the same traces (`bench.gps_corpus`: real Helsinki buildings, drifting phone error, outliers,
network fixes, missing accuracy, offline batches) through the same fence index. The new rules are driven
exactly as a fix request drives them: `services.tracking.run_transitions`, one request per fix (one per
batch for offline uploads), device state carried between requests. The old rules are the frozen copy in
`bench.legacy_transitions`, fed as the old fix path fed them.

The truth is the true path's containment, second by second, of the trace's building (a straight walk may cut
through other buildings; their events are not judged). A model event matches a true crossing of the
same building when it follows it (an enter up to `EARLY_S` before the crossing also counts: the phone's
error can reach the door first) and comes before the next crossing; every other enter or exit is false.
Enter delay is measured on real walks in.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bench import legacy_transitions as legacy
from bench.gps_corpus import SCENARIOS, Trace, corpus, helsinki
from geofences.index import ZONE_BUILDING, FenceIndex
from geofences.transitions import DeviceState, TransitionConfig
from infra.settings import Settings
from services.tracking import FixRecord, ZoneKey, run_transitions

EARLY_S = 30.0
BRIEF_S = 30
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
NEAR_WALLS = ("wall_outside", "wall_inside", "wall_no_accuracy", "indoor_drift", "network_fixes", "multipath_outside")
# What the service assumes for a Traccar/OsmAnd client that sends no accuracy, and its late limit: the defaults.
ASSUMED_ACCURACY_M = Settings.model_fields["assumed_accuracy_m"].get_default(call_default_factory=True)["osmand"]
LATE_AFTER_S = float(Settings.model_fields["late_fix_after_s"].get_default())


@dataclass
class Tally:
    traces: int = 0
    hours: float = 0.0
    false_enters: int = 0
    false_exits: int = 0
    true_enters: int = 0
    missed_enters: int = 0
    missed_exits: int = 0
    delays: list[float] = field(default_factory=list)
    pushed_late: int = 0  # enter/dwell events from fixes that arrived later than the limit, and would push

    def add(self, other: Tally) -> None:
        for name in ("traces", "hours", "false_enters", "false_exits", "true_enters", "missed_enters"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.missed_exits += other.missed_exits
        self.pushed_late += other.pushed_late
        self.delays += other.delays

    @property
    def false_per_hour(self) -> float:
        return (self.false_enters + self.false_exits) / self.hours if self.hours else 0.0


def _truth(index: FenceIndex, trace: Trace) -> dict[int, list[tuple[float, str]]]:
    """fence id -> true crossings [(second, "enter"|"exit")], from the true path's containment."""
    lonlat = [trace.building.to_lonlat(x, y) for x, y in trace.true_path]
    hits = index.query_bulk([p[0] for p in lonlat], [p[1] for p in lonlat])
    inside: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(len(lonlat), dtype=np.bool_))
    for second, fence_id, zone in zip(hits.fix_idx.tolist(), hits.fence_ids.tolist(), hits.zones.tolist(), strict=True):
        if zone == ZONE_BUILDING:
            inside[fence_id][second] = True
    crossings: dict[int, list[tuple[float, str]]] = {}
    for fence_id, flags in inside.items():
        _debounce(flags)
        changes = np.flatnonzero(np.diff(flags.astype(np.int8)))
        out = [(0.0, "enter")] if flags[0] else []
        out += [(float(c + 1), "enter" if flags[c + 1] else "exit") for c in changes.tolist()]
        crossings[fence_id] = out
    return crossings


def _debounce(flags: np.ndarray) -> None:
    """Stays and absences shorter than `BRIEF_S` are no crossing a person would count (a path clipping a
    corner, a step out of the door): they take the state around them."""
    changes = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
    bounds = [0, *changes.tolist(), flags.size]
    for start, end in itertools.pairwise(bounds):
        if end - start < BRIEF_S and start > 0:
            flags[start:end] = flags[start - 1]


def _score(trace: Trace, truth: dict[int, list[tuple[float, str]]], events: Iterable[tuple[str, int, float]]) -> Tally:
    tally = Tally(traces=1, hours=trace.hours)
    by_fence: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for kind, fence_id, ts in events:
        if kind in ("enter", "exit"):
            by_fence[fence_id].append((ts, kind))
    for fence_id in (trace.building.fence_id,):  # other buildings a straight walk cuts through are not judged
        crossings = truth.get(fence_id, [])
        used: set[int] = set()
        for ts, kind in by_fence.get(fence_id, []):
            match = None
            for n, (at, true_kind) in enumerate(crossings):
                following = crossings[n + 1][0] if n + 1 < len(crossings) else math.inf
                early = EARLY_S if kind == "enter" else 0.0
                if true_kind == kind and n not in used and at - early <= ts < following:
                    match = n
                    break
            if match is None:
                tally.false_enters += kind == "enter"
                tally.false_exits += kind == "exit"
                continue
            used.add(match)
            if kind == "enter" and trace.walk and crossings[match][0] > 0:
                tally.delays.append(ts - crossings[match][0])
        for n, (at, kind) in enumerate(crossings):
            if kind == "enter":
                tally.true_enters += 1
                tally.missed_enters += n not in used
            elif n not in used and len(trace.true_path) - at > 90:  # an exit needs time outside to be seen
                tally.missed_exits += 1
    return tally


def _records(trace: Trace) -> list[tuple[FixRecord, float]]:
    out = []
    for f in trace.fixes:
        lon, lat = trace.building.to_lonlat(f.x, f.y)
        out.append((FixRecord(T0 + timedelta(seconds=f.ts), lon, lat, f.accuracy_m, None), f.late_s))
    return out


def run_new(index: FenceIndex, trace: Trace, config: TransitionConfig) -> tuple[list[tuple[str, int, float]], int]:
    """The product's rules, one request per fix (one per upload for an offline batch)."""
    state: DeviceState[ZoneKey] = DeviceState()
    events: list[tuple[str, int, float]] = []
    pushed_late = 0
    records = _records(trace)
    batches = [records] if trace.scenario == "offline_batch" else [[r] for r in records]
    for batch in batches:
        received = max(r.ts + timedelta(seconds=late) for r, late in batch)
        state, happened = run_transitions(
            index, state, [r for r, _ in batch], config, ASSUMED_ACCURACY_M, received, LATE_AFTER_S
        )
        for event in happened:
            events.append((event.kind, event.key[0], (datetime.fromtimestamp(event.ts, UTC) - T0).total_seconds()))
            # What the product would push: an enter or dwell of a fix that arrived late, not flagged late.
            fix_late = received.timestamp() - event.ts > LATE_AFTER_S
            pushed_late += event.kind in ("enter", "dwell") and fix_late and not event.late
    return events, pushed_late


def run_old(index: FenceIndex, trace: Trace) -> tuple[list[tuple[str, int, float]], int]:
    """The previous rules as the previous fix path ran them: unknown accuracy counted as infinitely bad."""
    config = legacy.TransitionConfig()
    state: legacy.DeviceState[ZoneKey] = legacy.DeviceState()
    events: list[tuple[str, int, float]] = []
    pushed_late = 0
    for record, late_s in _records(trace):
        inside = index.zones_at(record.lon, record.lat)
        outside = [key for key in state.fences if key not in inside]
        distances = dict(
            zip(
                outside,
                index.distance_m([k[0] for k in outside], record.lon, record.lat, [k[1] for k in outside]),
                strict=True,
            )
        )
        accuracy = math.nan if record.accuracy_m is None else record.accuracy_m
        fix = legacy.Fix(record.ts.timestamp(), record.lon, record.lat, accuracy, None)
        state, happened = legacy.step(state, fix, inside, distances, config)
        for event in happened:
            events.append((event.kind, event.key[0], (record.ts - T0).total_seconds()))
            pushed_late += event.kind in ("enter", "dwell") and late_s > LATE_AFTER_S
    return events, pushed_late


def run_flap_bench(per_scenario: int = 20, seed: int = 7, config: TransitionConfig | None = None) -> dict[str, Any]:
    city = helsinki()
    index = FenceIndex.build(city.entries)
    config = config or TransitionConfig()
    tallies: dict[str, dict[str, Tally]] = {"old": defaultdict(Tally), "new": defaultdict(Tally)}
    for trace in corpus(per_scenario, seed):
        truth = _truth(index, trace)
        for rules, (events, pushed_late) in (("old", run_old(index, trace)), ("new", run_new(index, trace, config))):
            tally = _score(trace, truth, events)
            tally.pushed_late = pushed_late
            tallies[rules][trace.scenario].add(tally)
    return {rules: _summary(by_scenario) for rules, by_scenario in tallies.items()}


def _summary(by_scenario: dict[str, Tally]) -> dict[str, Any]:
    def pack(tally: Tally) -> dict[str, Any]:
        return {
            "traces": tally.traces,
            "device_hours": round(tally.hours, 2),
            "false_enters": tally.false_enters,
            "false_exits": tally.false_exits,
            "false_per_device_hour": round(tally.false_per_hour, 3),
            "true_enters": tally.true_enters,
            "missed_enters": tally.missed_enters,
            "missed_exits": tally.missed_exits,
            "late_enters_over_15s": sum(d > 15 for d in tally.delays),
            "median_enter_delay_s": round(statistics.median(tally.delays), 1) if tally.delays else None,
            "p90_enter_delay_s": round(float(np.percentile(tally.delays, 90)), 1) if tally.delays else None,
            "pushes_from_late_fixes": tally.pushed_late,
        }

    near, walks, everything = Tally(), Tally(), Tally()
    for scenario, tally in by_scenario.items():
        everything.add(tally)
        if scenario in NEAR_WALLS:
            near.add(tally)
        if scenario.startswith("walk_in") or scenario == "offline_batch":
            walks.add(tally)
    return {
        "near_walls": pack(near),
        "walks_in": pack(walks),
        "all": pack(everything),
        "scenarios": {s: pack(by_scenario[s]) for s in SCENARIOS if s in by_scenario},
    }

"""The fix path's pure part (`services.tracking.run_transitions`) on a real index: what a protocol without
accuracy is judged as, and which events are late."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.domain import FenceSpec
from geofences.geodesy import EARTH_RADIUS_M
from geofences.index import FenceIndex
from geofences.transitions import DeviceState, TransitionConfig
from services.tracking import FixRecord, ZoneKey, run_transitions

LON0, LAT0 = 24.94, 60.17
M_LAT = math.radians(1.0) * EARTH_RADIUS_M
M_LON = M_LAT * math.cos(math.radians(LAT0))
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
# A 120 m x 120 m building west of x = 0.
BUILDING = shapely.box(LON0 - 120 / M_LON, LAT0 - 60 / M_LAT, LON0, LAT0 + 60 / M_LAT)
INDEX = FenceIndex.build([(1, 1, FenceSpec("polygon", BUILDING))])
CONFIG = TransitionConfig()


def walk(start_x: float, depth: float, every_s: float, stay_s: float, accuracy: float | None) -> list[FixRecord]:
    """Walk east-west at 1.4 m/s from `start_x` m east of the wall to `depth` m inside, stay, walk back out."""
    xs: list[float] = []
    x = start_x
    while x > -depth:
        xs.append(x)
        x -= 1.4 * every_s
    xs += [-depth] * int(stay_s / every_s)
    while x < start_x + 100:
        xs.append(x)
        x += 1.4 * every_s
    return [FixRecord(T0 + timedelta(seconds=n * every_s), LON0 + x / M_LON, LAT0, accuracy) for n, x in enumerate(xs)]


def replay(fixes: list[FixRecord], **kwargs: object) -> list[tuple[str, float, bool]]:
    state: DeviceState[ZoneKey] = DeviceState()
    out: list[tuple[str, float, bool]] = []
    for record in fixes:  # one request per fix, as phones send them
        state, events = run_transitions(INDEX, state, [record], CONFIG, **kwargs)  # type: ignore[arg-type]
        out += [(e.kind, e.ts, e.late) for e in events]
    return out


# Walks a person would call a visit: outdoor accuracy, 25-50 m into the building, a few minutes there.
WALKS = st.tuples(
    st.floats(40, 200), st.floats(25, 50), st.sampled_from([5.0, 10.0, 30.0]), st.floats(150, 900), st.floats(5, 15)
)


@settings(max_examples=40, deadline=None)
@given(WALKS)
def test_a_fix_without_accuracy_is_judged_with_the_protocols_assumed_accuracy(
    params: tuple[float, float, float, float, float],
) -> None:
    start, depth, every_s, stay_s, accuracy = params
    without = replay(walk(start, depth, every_s, stay_s, None), assumed_accuracy_m=accuracy)
    assert without == replay(walk(start, depth, every_s, stay_s, accuracy))
    assert [kind for kind, _, _ in without if kind != "dwell"] == ["enter", "exit"]  # never "infinitely bad"


@settings(max_examples=40, deadline=None)
@given(WALKS, st.floats(601, 6 * 3600))
def test_events_of_fixes_that_arrive_late_are_late_and_only_those(
    params: tuple[float, float, float, float, float], delay_s: float
) -> None:
    start, depth, every_s, stay_s, accuracy = params
    fixes = walk(start, depth, every_s, stay_s, accuracy)
    # An offline batch: all of it uploaded `delay_s` after its last fix.
    received = fixes[-1].ts + timedelta(seconds=delay_s)
    state: DeviceState[ZoneKey] = DeviceState()
    state, events = run_transitions(INDEX, state, fixes, CONFIG, received_at=received, late_after_s=600)
    assert events and all(event.late for event in events)
    # The same walk reported live: nothing is late.
    assert not any(late for _, _, late in replay(fixes, received_at=None))


def test_a_dwell_counted_from_a_late_enter_is_late() -> None:
    fixes = walk(60, 40, 10, 600, 5)
    inside_at = next(n for n, f in enumerate(fixes) if f.lon < LON0 - 20 / M_LON)
    state: DeviceState[ZoneKey] = DeviceState()
    late_part, live_part = fixes[: inside_at + 2], fixes[inside_at + 2 :]
    state, early = run_transitions(INDEX, state, late_part, CONFIG, received_at=live_part[0].ts, late_after_s=0.0)
    assert [(e.kind, e.late) for e in early] == [("enter", True)]
    kinds = []
    for record in live_part:
        state, events = run_transitions(INDEX, state, [record], CONFIG, received_at=record.ts, late_after_s=600)
        kinds += [(e.kind, e.late) for e in events]
    assert kinds == [("dwell", True), ("exit", False)]

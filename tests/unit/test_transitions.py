"""Transition rules on a one-dimensional fence: the device is inside key "F" while x <= 0 m.

x is metres east of the fence's edge; a fix's position is placed on the map accordingly so the jump
check sees real distances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.transitions import DeviceState, FenceState, Fix, TransitionConfig, TransitionEvent, step

CONFIG = TransitionConfig(max_enter_accuracy_m=50, min_exit_margin_m=10, dwell_after_s=300, max_speed_mps=80)
LON0, LAT0 = 24.94, 60.17
M_PER_DEG_LON = math.radians(1.0) * 6371008.8 * math.cos(math.radians(LAT0))
State = DeviceState[str]


def fix(ts: float, x: float, accuracy: float = 5.0, speed: float | None = None) -> Fix:
    return Fix(ts, LON0 + x / M_PER_DEG_LON, LAT0, accuracy, speed)


def x_of(f: Fix) -> float:
    return (f.lon - LON0) * M_PER_DEG_LON


def apply(state: State, f: Fix, config: TransitionConfig = CONFIG) -> tuple[State, list[TransitionEvent[str]]]:
    x = x_of(f)
    inside = {"F"} if x <= 0 else set()
    return step(state, f, inside, {"F": max(x, 0.0)}, config)


def run(fixes: Sequence[Fix], config: TransitionConfig = CONFIG) -> tuple[State, list[TransitionEvent[str]]]:
    state: State = DeviceState()
    events: list[TransitionEvent[str]] = []
    for f in fixes:
        state, happened = apply(state, f, config)
        events += happened
    return state, events


def kinds(events: Sequence[TransitionEvent[str]]) -> list[str]:
    return [event.kind for event in events]


def test_first_fix_already_inside_is_an_enter() -> None:
    state, events = run([fix(0, -20)])
    assert events == [TransitionEvent("enter", "F", 0)]
    assert state.fences["F"].entered_at == 0


def test_enter_waits_for_an_accurate_fix() -> None:
    _, events = run([fix(0, -20, accuracy=200), fix(10, -20, accuracy=51), fix(20, -20, accuracy=50)])
    assert events == [TransitionEvent("enter", "F", 20)]


def test_unknown_accuracy_never_enters() -> None:
    assert run([fix(0, -20, accuracy=math.nan), fix(10, -20, accuracy=-1)])[1] == []


@pytest.mark.parametrize(
    ("outside_m", "accuracy", "exits"),
    [(9.9, 5, False), (10, 5, True), (25, 30, False), (30, 30, True), (500, math.nan, False)],
)
def test_exit_needs_a_margin_of_the_fix_accuracy_and_at_least_the_floor(
    outside_m: float, accuracy: float, exits: bool
) -> None:
    _, events = run([fix(0, -5), fix(10, outside_m, accuracy)])
    assert kinds(events) == (["enter", "exit"] if exits else ["enter"])


def test_dwell_fires_once_after_the_dwell_time_and_again_on_the_next_visit() -> None:
    visit = [fix(t, -5) for t in range(0, 601, 60)]
    back = [fix(700, 50), fix(710, -5), fix(1009, -5), fix(1010, -5), fix(1300, -5)]
    _, events = run(visit + back)
    assert [(e.kind, e.ts) for e in events] == [
        ("enter", 0),
        ("dwell", 300),
        ("exit", 700),
        ("enter", 710),
        ("dwell", 1010),
    ]


def test_dwell_counts_time_in_the_hysteresis_band() -> None:
    _, events = run([fix(0, -5), fix(100, 5), fix(301, 5)])
    assert kinds(events) == ["enter", "dwell"]


@pytest.mark.parametrize("ts", [100.0, 99.0])
def test_stale_and_replayed_fixes_fire_nothing_and_change_nothing(ts: float) -> None:
    state, _ = run([fix(0, 500), fix(100, 400)])
    new_state, events = apply(state, fix(ts, -20))
    assert events == [] and new_state is state


def test_an_implausible_jump_is_ignored() -> None:
    state, _ = run([fix(0, 2000)])
    jumped, events = apply(state, fix(10, -5))  # 2 km in 10 s
    assert events == []
    assert (jumped.last_ts, jumped.last_lon, jumped.fences) == (state.last_ts, state.last_lon, state.fences)
    _, events = apply(jumped, fix(40, -5))  # 2 km in 40 s from the last accepted fix: plausible
    assert kinds(events) == ["enter"]


def test_a_reported_speed_over_the_limit_is_ignored() -> None:
    state, _ = run([fix(0, 100)])
    assert apply(state, fix(10, -5, speed=81)) == (state, [])
    assert kinds(apply(state, fix(10, -5, speed=80))[1]) == ["enter"]


def test_after_enough_consecutive_jumps_the_new_position_is_believed() -> None:
    """One bad accepted fix must not anchor the device until time alone makes a jump plausible."""
    config = TransitionConfig(max_rejected_jumps=2)
    state, _ = run([fix(0, 50_000)], config)
    for t in (10, 20):
        state, events = apply(state, fix(t, -5), config)
        assert events == []
    state, events = apply(state, fix(30, -5), config)
    assert kinds(events) == ["enter"] and state.rejected_jumps == 0


def test_non_finite_fixes_are_ignored() -> None:
    state, _ = run([fix(0, 100)])
    for bad in (Fix(math.nan, LON0, LAT0, 5), Fix(10, math.inf, LAT0, 5), Fix(10, LON0, math.nan, 5)):
        assert apply(state, bad) == (state, [])


def test_within_one_fix_exits_come_before_enters() -> None:
    state: State = DeviceState(0.0, LON0, LAT0, {"A": FenceState(0.0)})
    _, events = step(state, fix(10, 0), {"B"}, {"A": 20.0})
    assert kinds(events) == ["exit", "enter"] and [e.key for e in events] == ["A", "B"]


# --- properties --------------------------------------------------------------------------------

times = st.lists(st.floats(1, 120), min_size=1, max_size=60).map(
    lambda gaps: [sum(gaps[: i + 1]) for i in range(len(gaps))]
)


@settings(max_examples=150, deadline=None)
@given(times, st.data())
def test_jitter_around_the_boundary_fires_at_most_one_event(ts: list[float], data: st.DataObject) -> None:
    noise = data.draw(st.lists(st.floats(-9.99, 9.99), min_size=len(ts), max_size=len(ts)))
    _, events = run([fix(t, e) for t, e in zip(ts, noise, strict=True)])
    assert kinds(events) in ([], ["enter"], ["enter", "dwell"])


@settings(max_examples=150, deadline=None)
@given(times, st.data())
def test_a_route_with_noise_below_half_the_margin_fires_once_per_true_crossing(
    ts: list[float], data: st.DataObject
) -> None:
    """Enter needs true x < 5 m and exit true x > 5 m, so events alternate with crossings of x = 5."""
    true_x = data.draw(st.lists(st.floats(-60, 60), min_size=len(ts), max_size=len(ts)))
    noise = data.draw(st.lists(st.floats(-4.99, 4.99), min_size=len(ts), max_size=len(ts)))
    _, events = run([fix(t, x + e) for t, x, e in zip(ts, true_x, noise, strict=True)])
    transitions = [k for k in kinds(events) if k != "dwell"]
    assert transitions == ["enter", "exit"] * (len(transitions) // 2) + ["enter"] * (len(transitions) % 2)
    crossings = sum((a >= 5) != (b >= 5) for a, b in pairwise(true_x))
    assert len(transitions) <= 1 + crossings


@settings(max_examples=150, deadline=None)
@given(times, st.data())
def test_staying_inside_with_noise_below_the_margin_is_one_enter_and_no_exit(
    ts: list[float], data: st.DataObject
) -> None:
    true_x = data.draw(st.lists(st.floats(-40, 0), min_size=len(ts), max_size=len(ts)))
    noise = data.draw(st.lists(st.floats(-9.99, 9.99), min_size=len(ts), max_size=len(ts)))
    fixes = [fix(t, x + e) for t, x, e in zip(ts, true_x, noise, strict=True)]
    _, events = run(fixes)
    # Judge inside/outside on the position as stored (degrees), as the rules see it.
    assert kinds(events).count("enter") == (1 if min(x_of(f) for f in fixes) <= 0 else 0)
    assert "exit" not in kinds(events)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 2000), st.floats(-100, 100), st.sampled_from([3.0, 40.0, 300.0])),
        min_size=1,
        max_size=60,
    )
)
def test_stale_fixes_never_emit_and_dwell_fires_at_most_once_per_visit(
    raw: list[tuple[float, float, float]],
) -> None:
    state: State = DeviceState()
    visit_dwells, entered_at = 0, None
    for t, x, accuracy in raw:
        before = state
        state, events = apply(state, fix(t, x, accuracy))
        if before.last_ts is not None and t <= before.last_ts:
            assert events == [] and state is before
        for event in events:
            if event.kind == "enter":
                visit_dwells, entered_at = 0, event.ts
            elif event.kind == "dwell":
                visit_dwells += 1
                assert entered_at is not None and event.ts - entered_at >= CONFIG.dwell_after_s
            assert visit_dwells <= 1

"""Transition rules on a one-dimensional fence: the device is inside key "F" while x <= 0 m.

x is metres east of the fence's wall (the fence is the half-plane west of it); a fix's position is placed on the
map accordingly so the jump check and the mean position see real distances. The signed distance the rules get
is -x (depth inside positive), for the fix and for the mean position, as `services.tracking` hands it over.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import EARTH_RADIUS_M
from geofences.transitions import DeviceState, Fix, TransitionConfig, TransitionEvent, smooth, step

CONFIG = TransitionConfig()
LON0, LAT0 = 24.94, 60.17
M_PER_DEG_LON = math.radians(1.0) * EARTH_RADIUS_M * math.cos(math.radians(LAT0))
State = DeviceState[str]


def fix(ts: float, x: float, accuracy: float = 5.0, speed: float | None = None) -> Fix:
    return Fix(ts, LON0 + x / M_PER_DEG_LON, LAT0, accuracy, speed)


def x_of(lon: float) -> float:
    return (lon - LON0) * M_PER_DEG_LON


def apply(state: State, f: Fix, config: TransitionConfig = CONFIG) -> tuple[State, list[TransitionEvent[str]]]:
    mean = smooth(state, f, config)
    at_fix = {"F": -x_of(f.lon)} if x_of(f.lon) <= 0 or "F" in state.fences else {}
    at_mean = {"F": -x_of(mean.lon)} if x_of(mean.lon) <= 0 or "F" in state.fences else {}
    # As run_transitions does: where the previous fix was, for a zone this fix is in and that one was not.
    previous = (
        {"F": -x_of(state.last_lon)} if "F" in at_fix and "F" not in state.last_depths and state.last_lon else None
    )
    return step(state, f, at_fix, config, None, mean, at_mean, previous_signed_m=previous)


def run(fixes: Sequence[Fix], config: TransitionConfig = CONFIG) -> tuple[State, list[TransitionEvent[str]]]:
    state: State = DeviceState()
    events: list[TransitionEvent[str]] = []
    for f in fixes:
        state, happened = apply(state, f, config)
        events += happened
    return state, events


def kinds(events: Sequence[TransitionEvent[str]]) -> list[str]:
    return [event.kind for event in events if event.kind != "dwell"]


def walk(start_x: float, end_x: float, seconds: float, every_s: float = 5.0, t0: float = 0.0) -> list[Fix]:
    steps = int(seconds / every_s)
    return [fix(t0 + i * every_s, start_x + (end_x - start_x) * i / steps) for i in range(steps + 1)]


def test_one_deep_fix_enters_unless_the_device_was_sitting_elsewhere_moments_ago() -> None:
    state, events = run([fix(0, -30)])
    assert events == [TransitionEvent("enter", "F", 0)] and state.fences["F"].since == 0
    assert kinds(run([fix(0, 200), fix(300, -30)])[1]) == ["enter"]  # reports rarely: nothing contradicts it
    assert kinds(run([fix(0, 200), fix(30, -30)])[1]) == ["enter"]  # just switched on: nothing contradicts it
    sitting = [fix(t, 200) for t in range(0, 100, 10)]  # outside for 90 s
    state, events = run([*sitting, fix(100, -30)])
    assert events == []  # sitting outside 10 s ago: this fix may be an outlier ...
    state, events = apply(state, fix(105, -30))
    assert events == []  # ... a second one says the device moved ...
    state, events = apply(state, fix(110, -30))
    assert events == [TransitionEvent("enter", "F", 110)]  # ... and on the move, a fix inside enters


def test_a_multipath_outlier_enters_nothing() -> None:
    fixes = [fix(10 * i, 25) for i in range(10)] + [fix(100, -150, accuracy=15)]
    fixes += [fix(110 + 10 * i, 25) for i in range(10)]
    assert run(fixes)[1] == []


def test_a_walk_in_is_confirmed_within_two_fixes_of_the_crossing() -> None:
    # 1.4 m/s from 60 m outside, a fix every 5 s; the wall is crossed at ~43 s.
    _, events = run(walk(60, -60, 86, every_s=5))
    enters = [e for e in events if e.kind == "enter"]
    assert len(enters) == 1 and 43 <= enters[0].ts <= 43 + 15


def test_a_walk_in_enters_on_the_first_fix_inside_when_its_depth_rose_at_a_walking_pace() -> None:
    # 10 s fixes, 1.4 m/s: 4 m outside, then 10 m inside (rose 14 m, more than the fix's 8 m accuracy).
    before = [fix(0, 60, 8.0), fix(10, 46, 8.0), fix(20, 32, 8.0), fix(30, 18, 8.0), fix(40, 4, 8.0)]
    _, events = run([*before, fix(50, -10, 8.0)])
    assert kinds(events) == ["enter"] and events[0].ts == 50
    # Risen by less than the fix's accuracy (noise along a wall can do that): the next fix inside decides.
    _, events = run([*before, fix(50, -6, 12.0)])
    assert events == []
    # Faster than approach_max_mps (a multipath fix, not a walker): nothing.
    _, events = run([*before[:-1], fix(40, 2, 8.0), fix(42, -12, 8.0)])
    assert events == []


def test_a_walk_in_and_out_is_one_enter_and_one_exit() -> None:
    fixes = walk(80, -40, 90) + walk(-40, -40, 300, t0=95) + walk(-40, 120, 115, t0=400)
    _, events = run(fixes)
    assert kinds(events) == ["enter", "exit"]


def test_coarse_fixes_never_enter_nor_exit() -> None:
    _, events = run([fix(0, -300, accuracy=150), fix(10, -300, accuracy=101)])
    assert events == []
    state, events = run([fix(0, -30), fix(5, -30), *(fix(10 + 10 * i, 3000, accuracy=2500) for i in range(30))])
    assert kinds(events) == ["enter"] and "F" in state.fences


def test_a_coarse_fix_does_not_move_the_device_for_the_jump_check() -> None:
    # A network fix 3 km away, then accurate fixes where the device is: no jump, no exit, no second enter.
    fixes = [fix(0, -30), fix(5, -30), fix(10, 3000, accuracy=2500), *(fix(20 + 10 * i, -30) for i in range(10))]
    state, events = run(fixes)
    assert kinds(events) == ["enter"] and state.rejected_jumps == 0


def test_missing_accuracy_is_coarse_here_the_caller_assumes_one() -> None:
    assert run([fix(0, -300, accuracy=math.nan), fix(10, -300, accuracy=math.nan)])[1] == []
    assert kinds(run([fix(0, -300, accuracy=30.0), fix(10, -300, accuracy=30.0)])[1]) == ["enter"]


def test_the_jump_check_allows_for_both_fixes_accuracy() -> None:
    # 1 s apart, 150 m apart: 150 m/s without accuracy, but both fixes may be 40 m off: (150 - 80) / 1 < 80.
    state, _ = run([fix(0, 500, accuracy=40), fix(1, 650, accuracy=40)])
    assert state.rejected_jumps == 0 and state.last_ts == 1
    state, _ = run([fix(0, 500, accuracy=5), fix(1, 650, accuracy=5)])
    assert state.rejected_jumps == 1 and state.last_ts == 0


@pytest.mark.parametrize(
    ("metres_per_second", "jump"),
    [(79.0, False), (85.0, True), (100.0, True), (120.0, True), (159.0, True)],
)
def test_the_speed_limit_is_metres_per_second(metres_per_second: float, jump: bool) -> None:
    # Accuracy 5 m each: 10 m of the distance is explained by error; 10 s apart.
    travelled = metres_per_second * 10 + 10
    state, _ = run([fix(0, 1000), fix(10, 1000 + travelled)])
    assert (state.rejected_jumps == 1) is jump
    reported, _ = run([fix(0, 1000), fix(10, 1000, speed=metres_per_second)])
    assert (reported.last_ts == 0) is (metres_per_second > CONFIG.max_speed_mps)


def test_after_max_rejected_jumps_the_next_fix_is_believed() -> None:
    fixes = [fix(0, 0), *(fix(t, 10_000) for t in (1, 2, 3, 4))]
    state, _ = run(fixes, TransitionConfig(max_rejected_jumps=3))
    assert state.last_ts == 4 and state.rejected_jumps == 0


@pytest.mark.parametrize(("outside_m", "exits"), [(9.9, False), (10.0, True), (40.0, True)])
def test_the_exit_margin_boundary(outside_m: float, exits: bool) -> None:
    # Mean uncertainty at its floor and the exit margin 10 m: the deciding fix must be >= 10 m outside.
    config = TransitionConfig(exit_sigmas=0.0)
    state, _ = run([fix(0, -30), fix(5, -30)], config)
    state, first = apply(state, fix(100, outside_m), config)  # the device moved: its mean restarts here
    state, events = apply(state, fix(130, outside_m), config)  # outside for min_exit_s
    assert first == [] and (kinds(events) == ["exit"]) is exits


def test_an_exit_needs_the_device_outside_for_min_exit_s() -> None:
    fixes = [fix(0, -30), fix(5, -30), *(fix(100 + 5 * i, 200) for i in range(10))]
    _, events = run(fixes)
    exits = [e for e in events if e.kind == "exit"]
    assert len(exits) == 1 and exits[0].ts - 100 >= CONFIG.min_exit_s


def test_dwell_fires_once_per_stay() -> None:
    fixes = [fix(0, -30), *(fix(30 * i, -30) for i in range(1, 25))]
    _, events = run(fixes)
    assert [e.ts for e in events if e.kind == "dwell"] == [300]


def test_a_deleted_fence_is_exited_at_the_next_fix() -> None:
    state, _ = run([fix(0, -30), fix(5, -30)])
    state, events = step(state, fix(10, -30), {}, CONFIG)
    assert events == [TransitionEvent("exit", "F", 10)]


def test_a_tuned_place_uses_its_own_margins() -> None:
    glass = CONFIG.with_overrides({"min_enter_depth_m": 60.0, "enter_depth_sigmas": 20.0, "unknown": 1})
    mean = smooth(DeviceState(), fix(0, -30), CONFIG)
    _, events = step(DeviceState(), fix(0, -30), {"F": 30.0}, CONFIG, {"F": glass}, mean, {"F": 2.0})
    assert events == []
    assert CONFIG.with_overrides({}) is CONFIG


def gauss_trace(seed: int, x: float, accuracy: float, hours: float = 1.0, every_s: float = 10.0) -> list[Fix]:
    """A phone standing still at x, reporting Gaussian fixes (sigma per axis = accuracy, the worst reading)."""
    rng = random.Random(seed)
    return [fix(i * every_s, x + rng.gauss(0, accuracy / 1.51), accuracy) for i in range(int(hours * 3600 / every_s))]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    distance=st.floats(3, 30),
    accuracy=st.floats(5, 40),
    inside=st.booleans(),
)
def test_standing_still_near_a_wall_never_exits_and_enters_at_most_once(
    seed: int, distance: float, accuracy: float, inside: bool
) -> None:
    _, events = run(gauss_trace(seed, -distance if inside else distance, accuracy))
    assert kinds(events).count("enter") <= 1
    assert "exit" not in kinds(events)


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(60, 300),
    depth=st.floats(25, 200),
    speed=st.floats(0.8, 2.0),
    every_s=st.sampled_from([1.0, 5.0, 10.0]),
    stay_s=st.floats(60, 1800),
)
def test_a_walk_in_and_out_is_exactly_one_enter_and_one_exit(
    start: float, depth: float, speed: float, every_s: float, stay_s: float
) -> None:
    there = (start + depth) / speed
    fixes = walk(start, -depth, there, every_s)
    fixes += walk(-depth, -depth, stay_s, every_s, t0=there + every_s)
    back = there + stay_s + 2 * every_s
    fixes += walk(-depth, start + 100, (start + 100 + depth) / speed, every_s, t0=back)
    _, events = run(fixes)
    assert kinds(events) == ["enter", "exit"]
    crossing = start / speed
    assert events[0].ts - crossing <= max(15.0, 2 * every_s) + 5.0  # ~15 s, or two fixes


@settings(max_examples=60, deadline=None)
@given(
    positions=st.lists(st.floats(-3000, 3000), min_size=1, max_size=30),
    accuracy=st.floats(100.001, 10_000),
)
def test_coarse_fixes_never_exit(positions: list[float], accuracy: float) -> None:
    state, _ = run([fix(0, -30), fix(5, -30)])
    for n, x in enumerate(positions, start=1):
        state, events = apply(state, fix(n * 10.0, x, accuracy))
        assert "exit" not in kinds(events)
    assert "F" in state.fences


@settings(max_examples=60, deadline=None)
@given(
    ages=st.lists(st.floats(0, 5000), min_size=1, max_size=20),
)
def test_replayed_and_out_of_order_fixes_change_nothing(ages: list[float]) -> None:
    state, _ = run([fix(0, 200), fix(6000, -30)])
    for age in ages:
        again, events = apply(state, fix(6000 - age, 500))
        assert events == [] and again == state


def test_every_rule_parameter_is_a_setting_with_the_rules_default() -> None:
    """`mobile_api.api.transition_config` reads every field from the settings: one missing is a 500 on every fix."""
    from dataclasses import fields

    from infra.settings import Settings

    for field in fields(TransitionConfig):
        assert field.name in Settings.model_fields, field.name
        assert Settings.model_fields[field.name].get_default() == getattr(CONFIG, field.name), field.name

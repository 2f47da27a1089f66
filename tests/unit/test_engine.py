"""The batch engine must give exactly what `step`, called fix by fix in timestamp order, gives."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofences.domain import FenceSpec
from geofences.engine import BatchResult, EngineEvent, State, ZoneKey, process_batch
from geofences.index import ZONE_NAMES, FenceIndex
from geofences.transitions import DeviceState, Fix, TransitionConfig, step

LON0, LAT0 = 24.94, 60.17
M_PER_DEG_LAT = math.radians(1.0) * 6371008.8
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(LAT0))
CONFIG = TransitionConfig(max_enter_accuracy_m=50, dwell_after_s=60, max_speed_mps=30, max_rejected_jumps=2)
Row = tuple[Hashable, float, float, float, float, float]  # device, ts, lon, lat, accuracy, speed
Batch = list[Row]


def at(east: float, north: float) -> tuple[float, float]:
    return LON0 + east / M_PER_DEG_LON, LAT0 + north / M_PER_DEG_LAT


def square(east: float, north: float, side: float) -> shapely.Polygon:
    return shapely.Polygon(
        [at(east, north), at(east + side, north), at(east + side, north + side), at(east, north + side)]
    )


INDEX = FenceIndex.build(
    [
        (1, 10, FenceSpec("polygon", square(-50, -50, 100))),
        (2, 20, FenceSpec("polygon", square(30, 30, 60))),  # overlaps fence 1
        (3, 30, FenceSpec("circle", shapely.Point(at(-150, 120)), 60.0)),
        (4, 40, FenceSpec("polygon", square(150, -200, 40))),
    ],
    approach_m={10: 25.0, 30: 40.0},
)
ZONE_CODES = {name: code for code, name in enumerate(ZONE_NAMES)}


def reference(
    index: FenceIndex, states: Mapping[Hashable, State], batch: Sequence[Row], config: TransitionConfig
) -> tuple[dict[Hashable, State], dict[Hashable, list[EngineEvent]]]:
    """Sort each device's fixes by timestamp (stable, NaN last) and `step` them one by one."""
    new_states: dict[Hashable, State] = {}
    events: dict[Hashable, list[EngineEvent]] = defaultdict(list)
    order = sorted(
        range(len(batch)),
        key=lambda i: (batch[i][0], math.inf if math.isnan(batch[i][1]) else batch[i][1], i),
    )
    for i in order:
        device, ts, lon, lat, accuracy, speed = batch[i]
        state = new_states.get(device, states.get(device, DeviceState()))
        inside = {(hit.fence_id, ZONE_CODES[hit.zone]) for hit in index.query(lon, lat)}
        outside = [key for key in state.fences if key not in inside]
        metres = index.distance_m(
            [k[0] for k in outside], [lon] * len(outside), [lat] * len(outside), [k[1] for k in outside]
        )
        fix = Fix(ts, lon, lat, accuracy, None if math.isnan(speed) else speed)
        new_states[device], happened = step(
            state, fix, inside, dict(zip(outside, metres.tolist(), strict=True)), config
        )
        for e in happened:
            events[device].append(EngineEvent(device, e.key[0], ZONE_NAMES[e.key[1]], e.kind, e.ts))
    return new_states, events


def engine(
    index: FenceIndex, states: Mapping[Hashable, State], batch: Sequence[Row], config: TransitionConfig
) -> BatchResult:
    devices = np.array([row[0] for row in batch])
    ts, lons, lats, accuracy, speed = (np.array([row[i] for row in batch], dtype=float) for i in range(1, 6))
    return process_batch(index, states, devices, ts, lons, lats, accuracy, speed, config=config)


def assert_same(index: FenceIndex, batches: Sequence[Sequence[Row]], config: TransitionConfig = CONFIG) -> BatchResult:
    ours: dict[Hashable, State] = {}
    theirs: dict[Hashable, State] = {}
    result = BatchResult({}, [])
    for batch in batches:
        result = engine(index, ours, batch, config)
        expected_states, expected_events = reference(index, theirs, batch, config)
        by_device: dict[Hashable, list[EngineEvent]] = defaultdict(list)
        for event in result.events:
            by_device[event.device_id].append(event)
        assert by_device == expected_events
        assert result.states == expected_states
        assert [e.ts for e in result.events] == sorted(e.ts for e in result.events)
        ours.update(result.states)
        theirs.update(expected_states)
    return result


# Near the fences, or at one of a few spots far from every fence and from each other (so devices
# jump between them), or nowhere at all.
coordinates = st.one_of(
    st.tuples(st.floats(-250, 250), st.floats(-250, 250)),
    st.sampled_from([(1500.0, 1500.0), (1520.0, 1500.0), (-1500.0, 900.0), (900.0, -2000.0)]),
    st.sampled_from([(math.nan, math.nan), (math.nan, 0.0), (0.0, math.inf)]),
)
fixes = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.integers(0, 400).map(float), st.sampled_from([100.0, 100.5, math.nan])),
    coordinates,
    st.sampled_from([3.0, 20.0, 49.0, 51.0, 400.0, math.nan]),
    st.sampled_from([math.nan, 2.0, 31.0]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(fixes, max_size=40), min_size=1, max_size=3))
def test_engine_equals_step_fix_by_fix(
    raw_batches: list[list[tuple[str, float, tuple[float, float], float, float]]],
) -> None:
    """Random devices hopping around overlapping fences, with replays, disorder, NaNs and jumps."""
    batches = [
        [(device, ts, *at(*xy), accuracy, speed) for device, ts, xy, accuracy, speed in raw] for raw in raw_batches
    ]
    assert_same(INDEX, batches)


def walks(n_devices: int, n_fixes: int, seed: int) -> Batch:
    """Smooth walks at 1.5 m/s, a fix every 10 s: long quiet runs inside and outside fences."""
    rng = np.random.default_rng(seed)
    heading = rng.uniform(0, 2 * np.pi, n_devices) + np.cumsum(rng.normal(0, 0.6, (n_fixes, n_devices)), axis=0)
    east = rng.uniform(-300, 300, n_devices) + np.cumsum(15 * np.cos(heading), axis=0) + rng.normal(0, 3, heading.shape)
    north = rng.uniform(-300, 300, n_devices) + np.cumsum(15 * np.sin(heading), axis=0)
    batch: Batch = []
    for step_no in range(n_fixes):
        for device in range(n_devices):
            lon, lat = at(
                float(np.clip(east[step_no, device], -400, 400)),
                float(np.clip(north[step_no, device], -400, 400)),
            )
            batch.append((device, 10.0 * step_no + device, lon, lat, 8.0, math.nan))
    return batch


def test_long_walks_in_big_batches_equal_step_fix_by_fix() -> None:
    """Many fixes per device per batch exercise the quiet-run skipping, dwell deadlines included."""
    whole = walks(n_devices=30, n_fixes=200, seed=1)
    result = assert_same(INDEX, [whole[:2500], whole[2500:]])
    assert {e.kind for e in result.events} == {"enter", "exit", "dwell"}
    assert result.stepped_fixes < len(whole[2500:]) / 4  # most fixes never reach `step`


def test_one_fix_at_a_time_equals_one_big_batch() -> None:
    """Single-fix requests take the direct path; it must agree with the vectorised one."""
    walk = walks(n_devices=3, n_fixes=150, seed=2)
    big = engine(INDEX, {}, walk, CONFIG)
    states: dict[Hashable, State] = {}
    events: list[EngineEvent] = []
    for fix in walk:
        result = engine(INDEX, states, [fix], CONFIG)
        states.update(result.states)
        events += result.events
    assert events == big.events and states == big.states
    assert len(events) > 10


def test_dwell_fires_at_the_first_fix_past_the_deadline_inside_one_batch() -> None:
    batch: Batch = [("d", 1000.0 + 7 * i, *at(0, 0), 5.0, math.nan) for i in range(30)]
    result = engine(INDEX, {}, batch, CONFIG)
    dwells = sorted((e.fence_id, e.zone, e.ts) for e in result.events if e.kind == "dwell")
    assert dwells == [(1, "approach", 1063.0), (1, "building", 1063.0)]  # 63 s >= 60 s, 56 s is not
    assert result.stepped_fixes <= 3


def test_devices_that_touch_no_zone_never_reach_step() -> None:
    batch: Batch = [(d, 100.0 + t, *at(1000 + 10 * d, 5 * t), 5.0, math.nan) for d in range(50) for t in range(20)]
    result = engine(INDEX, {}, batch, CONFIG)
    assert result.events == [] and result.stepped_fixes == 0
    assert result.states[7] == DeviceState(119.0, *at(1070, 95), {}, 0)


def test_stale_fixes_of_a_device_inside_change_nothing() -> None:
    first = engine(INDEX, {}, [("d", 100.0, *at(0, 0), 5.0, math.nan)], CONFIG)
    replay = engine(
        INDEX,
        first.states,
        [("d", 100.0, *at(500, 500), 5.0, math.nan), ("d", 50.0, *at(0, 0), 5.0, math.nan)],
        CONFIG,
    )
    assert replay.events == [] and replay.states["d"] is first.states["d"]


def test_a_device_inside_exits_when_the_next_batch_hits_nothing() -> None:
    first = engine(INDEX, {}, [("d", 100.0, *at(0, 0), 5.0, math.nan)], CONFIG)
    away = [("d", 400.0 + 10 * i, *at(1500 + 10 * i, 1500), 5.0, math.nan) for i in range(10)]
    later = engine(INDEX, first.states, away, CONFIG)  # big enough for the vectorised path
    assert sorted((e.zone, e.kind) for e in later.events) == [("approach", "exit"), ("building", "exit")]
    assert later.states["d"].fences == {}


def test_a_device_touching_nothing_still_ignores_replays_and_jumps() -> None:
    far, farther = at(1500, 1500), at(-1500, 900)
    others: Batch = [(f"other-{i}", 1.0, *far, 5.0, math.nan) for i in range(5)]  # take the vectorised path
    batch: Batch = [("d", 5.0, *far, 5.0, math.nan), ("d", 5.0, *farther, 5.0, math.nan)]  # a replayed ts
    assert engine(INDEX, {}, batch + others, CONFIG).states["d"][:3] == (5.0, *far)
    batch = [("d", 5.0, *far, 5.0, math.nan), ("d", 6.0, *farther, 5.0, math.nan)]  # 3 km in 1 s
    assert engine(INDEX, {}, batch + others, CONFIG).states["d"] == DeviceState(5.0, *far, {}, 1)
    batch = [("d", 5.0, *far, 5.0, math.nan), ("d", 6.0, math.nan, math.nan, 5.0, math.nan)]  # no position
    assert engine(INDEX, {}, batch + others, CONFIG).states["d"] == DeviceState(5.0, *far, {}, 0)


def test_an_empty_batch() -> None:
    assert engine(INDEX, {}, [], CONFIG) == BatchResult({}, [])


def test_string_and_integer_device_ids_and_zone_keys() -> None:
    result = engine(INDEX, {}, [("phone-1", 1.0, *at(0, 0), 5.0, math.nan)], CONFIG)
    keys: set[ZoneKey] = set(result.states["phone-1"].fences)
    assert keys == {(1, 0), (1, 1)}
    assert {(e.device_id, e.fence_id, e.zone, e.kind) for e in result.events} == {
        ("phone-1", 1, "building", "enter"),
        ("phone-1", 1, "approach", "enter"),
    }

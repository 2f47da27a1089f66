"""The transition rules as they were before the GPS-realistic model (geofences/transitions.py at 2bd10f0).

Kept only as the "old rules" column of `bench.flap`, which runs them side by side with the product's rules on the
same traces. Nothing in the product imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, Literal, NamedTuple, TypeVar

from geofences.geodesy import haversine_m

K = TypeVar("K", bound=Hashable)
TransitionKind = Literal["enter", "exit", "dwell"]
Verdict = Literal["accept", "ignore", "jump"]


@dataclass(frozen=True, slots=True)
class TransitionConfig:
    max_enter_accuracy_m: float = 100.0
    min_exit_margin_m: float = 10.0
    dwell_after_s: float = 300.0
    max_speed_mps: float = 80.0
    # After this many implausible jumps in a row, the next fix is believed: otherwise one bad
    # accepted fix would anchor the device until time alone made the distance plausible.
    max_rejected_jumps: int = 3


DEFAULT_CONFIG = TransitionConfig()


# The per-fix value types are NamedTuples: immutable like frozen dataclasses, but built ~3x faster,
# which is most of the cost of a step.


class FenceState(NamedTuple):
    """A zone the device is inside; zones it is outside of have no state at all."""

    entered_at: float
    dwell_fired: bool = False


class DeviceState(NamedTuple, Generic[K]):
    """What the previous fixes left behind. Never mutated: `step` returns a new one."""

    last_ts: float | None = None
    last_lon: float | None = None
    last_lat: float | None = None
    fences: Mapping[K, FenceState] = MappingProxyType({})
    rejected_jumps: int = 0  # consecutive implausible jumps since the last accepted fix


class Fix(NamedTuple):
    ts: float
    lon: float
    lat: float
    accuracy_m: float  # NaN or negative means unknown, treated as infinitely inaccurate
    speed_mps: float | None = None


class TransitionEvent(NamedTuple, Generic[K]):
    kind: TransitionKind
    key: K
    ts: float


def accuracy_of(fix: Fix) -> float:
    return fix.accuracy_m if fix.accuracy_m >= 0 else math.inf  # NaN fails the comparison too


def assess(state: DeviceState[K], fix: Fix, config: TransitionConfig) -> Verdict:
    """Whether the fix may move the device: accept it, ignore it, or count it as a jump."""
    if not (math.isfinite(fix.ts) and math.isfinite(fix.lon) and math.isfinite(fix.lat)):
        return "ignore"
    if state.last_ts is not None and fix.ts <= state.last_ts:
        return "ignore"  # stale, out of order or replayed
    if fix.speed_mps is not None and fix.speed_mps > config.max_speed_mps:
        return "ignore"
    if state.last_ts is None or state.last_lon is None or state.last_lat is None:
        return "accept"
    travelled = haversine_m(state.last_lon, state.last_lat, fix.lon, fix.lat)
    if travelled / (fix.ts - state.last_ts) > config.max_speed_mps:
        return "jump" if state.rejected_jumps < config.max_rejected_jumps else "accept"
    return "accept"


def step(
    state: DeviceState[K],
    fix: Fix,
    inside: AbstractSet[K],
    distance_m: Mapping[K, float],
    config: TransitionConfig = DEFAULT_CONFIG,
) -> tuple[DeviceState[K], list[TransitionEvent[K]]]:
    """Apply one fix.

    `inside` holds the zones containing the fix; `distance_m` must give, for every zone in
    `state.fences` that is not in `inside`, the fix's distance to it in metres. Events of one fix
    come exits first, then enters, then dwells.
    """
    verdict = assess(state, fix, config)
    if verdict == "ignore":
        return state, []
    if verdict == "jump":
        return state._replace(rejected_jumps=state.rejected_jumps + 1), []
    accuracy = accuracy_of(fix)
    fences = dict(state.fences)
    events: list[TransitionEvent[K]] = []
    _exit(fences, events, fix.ts, inside, distance_m, max(accuracy, config.min_exit_margin_m))
    if accuracy <= config.max_enter_accuracy_m:
        _enter(fences, events, fix.ts, inside)
    _dwell(fences, events, fix.ts, config.dwell_after_s)
    return DeviceState(fix.ts, fix.lon, fix.lat, fences, 0), events


# The helpers below update `fences` and append to `events` in place: both are step's own fresh
# objects, and a step costs less without building and joining intermediate lists.


def _exit(
    fences: dict[K, FenceState],
    events: list[TransitionEvent[K]],
    ts: float,
    inside: AbstractSet[K],
    distance_m: Mapping[K, float],
    margin: float,
) -> None:
    for key in [key for key in fences if key not in inside and distance_m[key] >= margin]:
        del fences[key]
        events.append(TransitionEvent("exit", key, ts))


def _enter(fences: dict[K, FenceState], events: list[TransitionEvent[K]], ts: float, inside: AbstractSet[K]) -> None:
    for key in inside:
        if key not in fences:
            fences[key] = FenceState(ts)
            events.append(TransitionEvent("enter", key, ts))


def _dwell(fences: dict[K, FenceState], events: list[TransitionEvent[K]], ts: float, dwell_after_s: float) -> None:
    # Checked on every accepted fix while the state says inside, including fixes in the
    # hysteresis band just outside: the device has not left, so its time there counts.
    for key, fence in fences.items():
        if not fence.dwell_fired and ts - fence.entered_at >= dwell_after_s:
            fences[key] = FenceState(fence.entered_at, dwell_fired=True)  # same key: safe while iterating
            events.append(TransitionEvent("dwell", key, ts))

"""Pure transition logic: a device's previous state and one fix -> its new state and events.

Times are the device's own timestamps (float epoch seconds), so replays and out-of-order uploads
are recognised by what the device says, not by when they arrive. Keys identify one zone of one
fence (the tracking service uses `(fence_id, zone)`); this module only hashes and compares them.

The model is built from how phones report. A fix is a noisy estimate: its accuracy is the radius of
68 % confidence (Android's definition; iOS's is close), so a phone standing still a few metres from a
wall reports fixes on both sides of it, often several in a row (GPS error drifts slowly, it is not
independent from fix to fix). Deciding on one fix flaps (the previous rules: 24 false transitions per
device-hour near walls, `bench.flap`). These rules decide on evidence:

- **Where the device is sitting**: an accuracy-weighted mean of its recent fixes (`smooth`), fading with
  `memory_s`, each fix weighted by the time since the previous one over `decorrelation_s` (ten fixes in ten
  seconds are one look at a slowly drifting error, not ten), restarted at the new fix when the device has
  clearly moved (farther than `moved_sigmas` combined accuracies). Its uncertainty shrinks as evidence
  accumulates. Averaging positions, not per-fix verdicts, is what tells a visitor in a narrow building
  (fixes scatter out of both long walls) from a phone on the pavement (fixes scatter across one wall).
- **Enter** when the mean position is inside by `enter_sigmas` of its uncertainty (and `min_depth_m`), or
  at once on one fix deep enough (`enter_depth_sigmas` accuracies and `min_enter_depth_m`) from a device on the
  move, when the fix before it was inside too or, just outside, shows a walk in (its depth rose by more than this
  fix's accuracy at a walking pace: `approach_*`): a walk in with outdoor accuracy is confirmed within one or two
  fixes.
- **Exit** is deliberately harder (a false exit re-fires the next enter, the flapping people notice): the
  mean position outside by `exit_sigmas` of its uncertainty and `min_exit_margin_m` for `min_exit_s`, and
  the deciding fix itself `exit_fix_sigmas` accuracies outside. A device that has not moved since it entered
  (its mean position not restarted since: a device does not leave without moving, its error drifts) needs its
  mean `still_exit_sigmas` accuracies outside (a wall moved by an admin is that far).
- **Coarse fixes** (accuracy worse than `max_accuracy_m`: network and cell fixes) never enter or exit and
  do not move the device; they only let time pass for dwell. A fix without accuracy must be given the
  protocol's assumed accuracy by the caller (`infra/settings.py`); NaN here counts as coarse.
- **Jumps**: a fix implying a speed above `max_speed_mps` (metres per second) once both fixes' accuracy is
  allowed for is ignored, up to `max_rejected_jumps` in a row (then believed, so one bad fix cannot anchor
  the device). A reported speed above the limit is ignored too.
- **Dwell** fires once per stay after `dwell_after_s` inside.

Every parameter is a setting (`infra/settings.py`), and a place may override the zone parameters
(`places.gps_tuning`, e.g. a wide glass façade that reflects GPS needs wider margins): `step` takes a
per-key config. `bench/flap.py` measures these rules against the previous ones on realistic traces.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from geofences.geodesy import haversine_m

K = TypeVar("K", bound=Hashable)
TransitionKind = Literal["enter", "exit", "dwell"]
Verdict = Literal["accept", "coarse", "ignore", "jump"]


@dataclass(frozen=True, slots=True)
class TransitionConfig:
    max_accuracy_m: float = 100.0  # coarser fixes never enter or exit
    min_sigma_m: float = 5.0  # no fix is trusted to better than this
    enter_sigmas: float = 1.5  # the mean position this many of its uncertainties inside enters
    min_depth_m: float = 2.0  # ... and at least this deep
    min_mean_age_s: float = 120.0  # ... once the device has sat there this long (outlasting a drift of its error)
    min_mean_sigma_m: float = 2.0  # the mean position is never trusted to better than this
    enter_depth_sigmas: float = 0.5  # one fix this many accuracies deep enters at once ...
    min_enter_depth_m: float = 5.0  # ... if it is also at least this deep
    lone_fix_sigmas: float = 2.0  # a fix from a device not sitting still (new, rare, moving) enters this deep
    # A walk in without a previous fix inside: the fix deep enough (as above), on the move, its depth risen since
    # the previous fix by this many of its accuracies and metres, from a previous fix no farther outside than this
    # many of that fix's accuracies, at no more than this pace (metres per second: a multipath outlier jumps).
    approach_rise_sigmas: float = 1.0
    approach_rise_m: float = 5.0
    approach_from_sigmas: float = 1.0
    approach_max_mps: float = 4.0
    settled_after_s: float = 60.0  # a device whose mean position has not moved for this long sits still ...
    settled_within_s: float = 60.0  # ... if it was seen this recently
    exit_sigmas: float = 3.5
    exit_fix_sigmas: float = 2.0  # the deciding fix at least this many accuracies outside ...
    still_exit_sigmas: float = 3.0  # a device that has not moved since it entered: its mean this far outside
    min_exit_margin_m: float = 10.0  # ... and this many metres, and the mean too
    min_exit_s: float = 30.0  # the mean position outside for at least this long
    decorrelation_s: float = 15.0  # fixes closer in time count as a fraction of one observation
    memory_s: float = 900.0  # older fixes fade from the mean position (e-folding time)
    moved_sigmas: float = 2.0  # a fix this many combined accuracies from the mean restarts it
    dwell_after_s: float = 300.0
    max_speed_mps: float = 80.0  # metres per second (~290 km/h)
    # After this many implausible jumps in a row, the next fix is believed: otherwise one bad
    # accepted fix would anchor the device until time alone made the distance plausible.
    max_rejected_jumps: int = 3

    def with_overrides(self, overrides: Mapping[str, Any]) -> TransitionConfig:
        """A copy with the zone parameters a place may tune (`ZONE_TUNABLES`) replaced."""
        values = {name: float(overrides[name]) for name in ZONE_TUNABLES if name in overrides}
        if not values:
            return self
        return TransitionConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **values})


# What a place may override (places.gps_tuning): how its walls are judged, not device-wide limits.
ZONE_TUNABLES = (
    "max_accuracy_m",
    "min_sigma_m",
    "enter_sigmas",
    "min_depth_m",
    "min_mean_age_s",
    "enter_depth_sigmas",
    "min_enter_depth_m",
    "lone_fix_sigmas",
    "exit_sigmas",
    "exit_fix_sigmas",
    "still_exit_sigmas",
    "min_exit_margin_m",
    "min_exit_s",
    "dwell_after_s",
)
DEFAULT_CONFIG = TransitionConfig()


# The per-fix value types are NamedTuples: immutable like frozen dataclasses, but built ~3x faster,
# which is most of the cost of a step.


class ZoneState(NamedTuple):
    """A zone the device is inside: `since` it entered; `outside_since`: since when its mean position has been
    outside, an exit pending. Zones the device is outside of have no state."""

    since: float
    dwell_fired: bool = False
    outside_since: float | None = None
    entered_late: bool = False  # entered by a late fix: its dwell is late too (never pushed)


class Smoothed(NamedTuple):
    """Where the device is sitting: the accuracy-weighted, fading mean of its recent fixes."""

    lon: float
    lat: float
    sigma_m: float  # its uncertainty
    precision: float  # sum of weight / sigma^2 behind it, faded
    ts: float
    fixes: int = 1  # fixes behind it since it last restarted: one fix alone (an outlier?) decides nothing
    started: float = 0.0  # when it last restarted: since then the device has been sitting there
    # A fix far from the mean, held back: an outlier unless the next fix is far from the mean too (then the
    # device moved, and the mean restarts from both).
    held_lon: float | None = None
    held_lat: float | None = None
    held_sigma_m: float = 0.0
    held_ts: float = 0.0
    moved: bool = False  # it restarted because the device moved (not its first fix): the device is on the move


class DeviceState(NamedTuple, Generic[K]):
    """What the previous fixes left behind. Never mutated: `step` returns a new one."""

    last_ts: float | None = None
    last_lon: float | None = None
    last_lat: float | None = None
    fences: Mapping[K, ZoneState] = MappingProxyType({})
    rejected_jumps: int = 0  # consecutive implausible jumps since the last accepted fix
    last_accuracy_m: float = 0.0
    last_seen_ts: float | None = None  # the newest fix of any kind (coarse ones included)
    smoothed: Smoothed | None = None
    last_depths: Mapping[K, float] = MappingProxyType({})  # the last accepted fix's depth in the zones it was in

    def inside(self) -> list[K]:
        return list(self.fences)


class Fix(NamedTuple):
    ts: float
    lon: float
    lat: float
    accuracy_m: float  # NaN or negative: unknown, treated as coarse (callers substitute an assumed accuracy)
    speed_mps: float | None = None


class TransitionEvent(NamedTuple, Generic[K]):
    kind: TransitionKind
    key: K
    ts: float
    late: bool = False  # from a fix that arrived late (or a dwell counted from a late enter): never pushed


def sigma_of(fix: Fix, config: TransitionConfig) -> float:
    """The fix's accuracy as used for evidence: floored, inf when unknown."""
    return max(fix.accuracy_m, config.min_sigma_m) if fix.accuracy_m >= 0 else math.inf  # NaN fails too


def assess(state: DeviceState[K], fix: Fix, config: TransitionConfig) -> Verdict:
    """Whether the fix may move the device: accept it, let only time pass (coarse), ignore it, or a jump."""
    if not (math.isfinite(fix.ts) and math.isfinite(fix.lon) and math.isfinite(fix.lat)):
        return "ignore"
    newest = state.last_seen_ts if state.last_seen_ts is not None else state.last_ts
    if newest is not None and fix.ts <= newest:
        return "ignore"  # stale, out of order or replayed
    if fix.speed_mps is not None and fix.speed_mps > config.max_speed_mps:
        return "ignore"
    if not sigma_of(fix, config) <= config.max_accuracy_m:
        return "coarse"
    if state.last_ts is None or state.last_lon is None or state.last_lat is None:
        return "accept"
    travelled = haversine_m(state.last_lon, state.last_lat, fix.lon, fix.lat)
    # Both fixes may be off by their accuracy: only movement beyond that is evidence of a jump.
    unexplained = travelled - max(state.last_accuracy_m, config.min_sigma_m) - sigma_of(fix, config)
    if unexplained / (fix.ts - state.last_ts) > config.max_speed_mps:
        return "jump" if state.rejected_jumps < config.max_rejected_jumps else "accept"
    return "accept"


def smooth(state: DeviceState[K], fix: Fix, config: TransitionConfig) -> Smoothed:
    """The device's mean position with this (accepted) fix added; callers look its zones up for `step`.

    A fix farther from the mean than `moved_sigmas` combined accuracies restarts it there (the device moved),
    unless the device has been sitting still: then one such fix is held back as an outlier (multipath) and
    leaves the mean alone, and two in a row mean the device moved, and the mean restarts from them.
    """
    sigma = sigma_of(fix, config)
    previous = state.smoothed
    if previous is None:
        return Smoothed(fix.lon, fix.lat, sigma, 1 / (sigma * sigma), fix.ts, 1, fix.ts)
    precision = previous.precision * math.exp(-(fix.ts - previous.ts) / config.memory_s)
    spread = math.sqrt(sigma * sigma + 1 / precision) if precision > 0 else math.inf
    if precision > 0 and haversine_m(previous.lon, previous.lat, fix.lon, fix.lat) <= config.moved_sigmas * spread:
        weight = min(1.0, max(fix.ts - previous.ts, 0.0) / config.decorrelation_s)
        gain = weight / (sigma * sigma)
        total = precision + gain
        lon = previous.lon + (fix.lon - previous.lon) * gain / total
        lat = previous.lat + (fix.lat - previous.lat) * gain / total
        sigma_m = max(1 / math.sqrt(total), config.min_mean_sigma_m)
        return Smoothed(lon, lat, sigma_m, total, fix.ts, previous.fixes + 1, previous.started, moved=previous.moved)
    held = previous.held_lon is not None and fix.ts - previous.held_ts <= config.settled_within_s
    if not held and not _sitting(previous, fix.ts, config):  # nothing contradicts it: moving, or just started
        return Smoothed(fix.lon, fix.lat, sigma, 1 / (sigma * sigma), fix.ts, 1, fix.ts, moved=True)
    if not held or previous.held_lon is None or previous.held_lat is None:
        return previous._replace(held_lon=fix.lon, held_lat=fix.lat, held_sigma_m=sigma, held_ts=fix.ts)
    # Moved: restart from the held fix and this one, weighted by accuracy.
    first, second = 1 / previous.held_sigma_m**2, 1 / (sigma * sigma)
    total = first + second
    lon = (previous.held_lon * first + fix.lon * second) / total
    lat = (previous.held_lat * first + fix.lat * second) / total
    sigma_m = max(1 / math.sqrt(total), config.min_mean_sigma_m)
    return Smoothed(lon, lat, sigma_m, total, fix.ts, 2, previous.held_ts, moved=True)


def step(
    state: DeviceState[K],
    fix: Fix,
    signed_m: Mapping[K, float],
    config: TransitionConfig = DEFAULT_CONFIG,
    zone_configs: Mapping[K, TransitionConfig] | None = None,
    smoothed: Smoothed | None = None,
    mean_signed_m: Mapping[K, float] | None = None,
    late: bool = False,
    previous_signed_m: Mapping[K, float] | None = None,
) -> tuple[DeviceState[K], list[TransitionEvent[K]]]:
    """Apply one fix.

    `signed_m` maps each zone containing the fix, and each zone in `state.fences`, to the fix's signed
    distance from the zone's boundary in metres: >= 0 inside (the depth; on the boundary counts as
    inside), < 0 outside. A state zone missing from it (a deleted fence) is infinitely far. `smoothed` is
    `smooth(state, fix, config)` and `mean_signed_m` the same distances for its position (zones containing
    it included); without them the fix alone is the mean. `zone_configs` gives zones their place's tuned
    config. `late`: the fix reached the server late; its events, and a later dwell of a zone it entered, are
    flagged late. `previous_signed_m`: for zones containing the fix but not the previous accepted fix, that fix's
    signed distance (a walk in, `_approached`); without it a fast enter needs the previous fix inside.
    Events of one fix come exits first, then enters, then dwells.
    """
    verdict = assess(state, fix, config)
    if verdict == "ignore":
        return state, []
    if verdict == "jump":
        return state._replace(rejected_jumps=state.rejected_jumps + 1), []
    zones = dict(state.fences)
    events: list[TransitionEvent[K]] = []
    if verdict == "coarse":
        _dwell(zones, events, fix.ts, config, zone_configs, late)
        return state._replace(fences=zones, last_seen_ts=fix.ts), events
    if smoothed is None or mean_signed_m is None:
        smoothed, mean_signed_m = smooth(state, fix, config), signed_m
    enters: list[TransitionEvent[K]] = []
    for key in set(signed_m).union(mean_signed_m, zones):
        zone_config = config if zone_configs is None else zone_configs.get(key, config)
        sigma = sigma_of(fix, zone_config)
        if not sigma <= zone_config.max_accuracy_m:
            continue  # coarse for this building's tuning: changes nothing here
        depth = signed_m.get(key, -math.inf)
        mean_depth = mean_signed_m.get(key, -math.inf)
        current = zones.get(key)
        if current is not None:
            _judge_exit(zones, events, key, current, fix.ts, depth, sigma, mean_depth, smoothed, zone_config, late)
        elif (
            fix.ts - smoothed.started >= zone_config.min_mean_age_s
            and smoothed.fixes >= 2
            and mean_depth >= max(zone_config.enter_sigmas * smoothed.sigma_m, zone_config.min_depth_m)
        ) or (
            # A walk in: a fix deep enough while the device is on the move, the fix before it inside too, so
            # that one multipath outlier enters nothing; or one deeper fix from a device not sitting anywhere
            # (just switched on, reporting rarely, moving): nothing contradicts it.
            (
                depth >= max(zone_config.enter_depth_sigmas * sigma, zone_config.min_enter_depth_m)
                and _on_the_move(state, fix.ts, zone_config)
                and (
                    key in state.last_depths
                    or _approached(state, fix, previous_signed_m, key, depth, sigma, zone_config)
                )
            )
            or (
                depth >= max(zone_config.lone_fix_sigmas * sigma, zone_config.min_enter_depth_m)
                and (state.smoothed is None or not _sitting(state.smoothed, fix.ts, zone_config))
            )
        ):
            zones[key] = ZoneState(fix.ts, entered_late=late)
            enters.append(TransitionEvent("enter", key, fix.ts, late))
    events += enters
    _dwell(zones, events, fix.ts, config, zone_configs, late, signed_m)
    depths = {key: depth for key, depth in signed_m.items() if depth >= 0}
    return DeviceState(fix.ts, fix.lon, fix.lat, zones, 0, fix.accuracy_m, fix.ts, smoothed, depths), events


def _approached(
    state: DeviceState[K],
    fix: Fix,
    previous_signed_m: Mapping[K, float] | None,
    key: K,
    depth: float,
    sigma: float,
    config: TransitionConfig,
) -> bool:
    """Whether the fix, first inside the zone, comes from a walk in: the previous fix just outside (within
    `approach_from_sigmas` of its accuracy), and the depth risen since by `approach_rise_sigmas` of this fix's
    accuracy (and `approach_rise_m`), no faster than `approach_max_mps` (a multipath outlier jumps farther). One
    fix of noise along a wall rises by less than its accuracy; a walker at 10 s intervals gains 11-16 m."""
    previous = None if previous_signed_m is None else previous_signed_m.get(key)
    if previous is None or state.last_ts is None:
        return False
    rise = depth - previous
    return (
        previous >= -config.approach_from_sigmas * max(state.last_accuracy_m, config.min_sigma_m)
        and rise >= max(config.approach_rise_m, config.approach_rise_sigmas * sigma)
        and rise <= config.approach_max_mps * (fix.ts - state.last_ts)
    )


def _on_the_move(state: DeviceState[K], ts: float, config: TransitionConfig) -> bool:
    """Whether the device was seen moving moments ago: its mean position restarted because it moved, less than
    `settled_after_s` ago. A device sitting still is moved inside by the evidence of its mean position."""
    mean = state.smoothed
    return mean is not None and mean.moved and not _sitting(mean, ts, config)


def _sitting(mean: Smoothed, ts: float, config: TransitionConfig) -> bool:
    """Whether the device has been sitting still (its mean position not restarted for `settled_after_s`) until
    moments ago (`settled_within_s`): then one fix elsewhere is more likely an outlier than a move."""
    return ts - mean.started >= config.settled_after_s and ts - mean.ts < config.settled_within_s


# The helpers below update `zones` and append to `events` in place: both are step's own fresh
# objects, and a step costs less without building and joining intermediate lists.


def _judge_exit(
    zones: dict[K, ZoneState],
    events: list[TransitionEvent[K]],
    key: K,
    current: ZoneState,
    ts: float,
    depth: float,
    sigma: float,
    mean_depth: float,
    smoothed: Smoothed,
    config: TransitionConfig,
    late: bool,
) -> None:
    if depth == -math.inf:  # the fence is gone (deleted, or its place's approach zone removed)
        del zones[key]
        events.append(TransitionEvent("exit", key, ts, late))
        return
    margin = max(config.exit_sigmas * smoothed.sigma_m, config.min_exit_margin_m)
    if not (smoothed.moved and smoothed.started > current.since):
        # It has not moved since it entered, and a device does not leave without moving: its error drifting
        # out must go much farther than its accuracy to count (a wall moved by an admin does).
        margin = max(margin, config.still_exit_sigmas * sigma)
    if -mean_depth < margin:
        if current.outside_since is not None:
            zones[key] = current._replace(outside_since=None)
        return
    # Outside since the earlier of this fix and the restart of the mean (a move confirmed by a second fix began
    # with the first).
    since = current.outside_since if current.outside_since is not None else min(ts, smoothed.started)
    if -depth >= max(config.exit_fix_sigmas * sigma, config.min_exit_margin_m) and ts - since >= config.min_exit_s:
        del zones[key]
        events.append(TransitionEvent("exit", key, ts, late))
    elif current.outside_since is None:
        zones[key] = current._replace(outside_since=since)


def _dwell(
    zones: dict[K, ZoneState],
    events: list[TransitionEvent[K]],
    ts: float,
    config: TransitionConfig,
    zone_configs: Mapping[K, TransitionConfig] | None,
    late: bool,
    signed_m: Mapping[K, float] | None = None,
) -> None:
    # Checked on every fix while the state says inside, coarse fixes included (they do not say the device left),
    # but not while an exit is pending or on a fix well outside (a rarely reporting phone seen leaving): a
    # device on its way out has not dwelled.
    for key, zone in zones.items():
        if zone.dwell_fired or zone.outside_since is not None:
            continue
        zone_config = config if zone_configs is None else zone_configs.get(key, config)
        if signed_m is not None and signed_m.get(key, -math.inf) <= -zone_config.min_exit_margin_m:
            continue
        if ts - zone.since >= zone_config.dwell_after_s:
            zones[key] = zone._replace(dwell_fired=True)  # same key: safe while iterating
            events.append(TransitionEvent("dwell", key, ts, late or zone.entered_late))

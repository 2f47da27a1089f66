"""A place's GPS tuning (`places.gps_tuning`): its overrides of the transition rules' zone parameters, checked.

Pure: no I/O. The wire format, in the admin API and as a GeoJSON property, is one flat object
`{"<parameter>": <number>, ...}`: only the parameters `geofences.transitions.ZONE_TUNABLES` names, each a finite
number (not a boolean, not a string) within its range in `TUNING_RANGES`; `{}` (or leaving it out) means the
organisation's settings. `check_gps_tuning` says what is wrong per key (`gps_tuning.<key>`), so the API answers
422 naming it, and the index builder uses `clean_gps_tuning` to drop what a hand-edited row might hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from geofences.transitions import ZONE_TUNABLES
from geofences.validation import GeometryProblem, json_type


@dataclass(frozen=True, slots=True)
class TuningRange:
    """The sane values of one parameter: `low` (excluded when `low_open`) to `high`, in `unit`."""

    low: float
    high: float
    unit: str
    low_open: bool = False

    def contains(self, value: float) -> bool:
        return (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def describe(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}] {self.unit}".rstrip()


_SIGMAS = TuningRange(0.0, 20.0, "accuracies")  # multiples of a fix's (or the mean position's) accuracy
_METRES = TuningRange(0.0, 500.0, "m")
_SECONDS = TuningRange(0.0, 86400.0, "s")
_FLOOR_M = TuningRange(0.0, 500.0, "m", low_open=True)  # an accuracy floor: zero would trust a fix perfectly

# The one table of ranges. Every parameter in ZONE_TUNABLES must have a row (tests/unit/test_gps_tuning.py);
# a row for a parameter that is not tunable (min_mean_sigma_m today) allows nothing by itself.
TUNING_RANGES: Mapping[str, TuningRange] = {
    "max_accuracy_m": TuningRange(5.0, 5000.0, "m"),
    "min_sigma_m": _FLOOR_M,
    "min_mean_sigma_m": _FLOOR_M,
    "enter_sigmas": _SIGMAS,
    "min_depth_m": _METRES,
    "enter_depth_sigmas": _SIGMAS,
    "min_enter_depth_m": _METRES,
    "lone_fix_sigmas": _SIGMAS,
    "min_mean_age_s": _SECONDS,
    "exit_sigmas": _SIGMAS,
    "exit_fix_sigmas": _SIGMAS,
    "still_exit_sigmas": _SIGMAS,
    "min_exit_margin_m": _METRES,
    "min_exit_s": _SECONDS,
    "dwell_after_s": _SECONDS,
}
ALLOWED = tuple(name for name in ZONE_TUNABLES if name in TUNING_RANGES)


def check_gps_tuning(value: object, field: str = "gps_tuning") -> tuple[dict[str, float], list[GeometryProblem]]:
    """The tuning as numbers, and every problem with it (each naming `<field>.<key>`); the tuning is only
    meaningful when there are no problems."""
    if not isinstance(value, Mapping):
        return {}, [GeometryProblem(field, f"{field} must be an object, got {json_type(value)}", "wrong_type")]
    tuning: dict[str, float] = {}
    problems: list[GeometryProblem] = []
    for key, raw in value.items():
        path = f"{field}.{key}"
        limits = TUNING_RANGES.get(key) if key in ALLOWED else None
        if limits is None:
            reason = f"unknown GPS parameter {str(key)[:80]!r}; allowed: {', '.join(ALLOWED)}"
            problems.append(GeometryProblem(path, reason, "unknown_key"))
        elif isinstance(raw, bool) or not isinstance(raw, int | float):
            problems.append(GeometryProblem(path, f"{key} must be a number, got {json_type(raw)}", "wrong_type"))
        elif not math.isfinite(raw):
            problems.append(GeometryProblem(path, f"{key} must be a finite number", "not_finite"))
        elif not limits.contains(raw):
            problems.append(GeometryProblem(path, f"{key} must be within {limits.describe()}", "out_of_range"))
        else:
            tuning[key] = float(raw)
    return tuning, problems


def clean_gps_tuning(value: object) -> dict[str, float]:
    """What a stored tuning may safely give the rules: its valid keys only (the API stores nothing else, but a
    row edited by hand must not break every fix of the organisation)."""
    return check_gps_tuning(value)[0]  # the valid keys, whatever is wrong with the others

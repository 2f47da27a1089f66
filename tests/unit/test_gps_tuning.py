"""A place's GPS tuning, pure: the table of ranges, the checks, the index's immutable `tuning` and its hand-over."""

from __future__ import annotations

import math
from types import MappingProxyType

import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from geofences.builder import hand_over, take_over
from geofences.domain import FenceSpec, PlaceSpec
from geofences.geojson_io import features_to_places, places_to_feature_collection
from geofences.registry import FenceRows, build_index
from geofences.transitions import DEFAULT_CONFIG, ZONE_TUNABLES
from geofences.tuning import ALLOWED, TUNING_RANGES, check_gps_tuning, clean_gps_tuning

SQUARE = FenceSpec("polygon", shapely.box(24.9420, 60.1735, 24.9440, 60.1745))
CIRCLE = FenceSpec("circle", shapely.Point(24.95, 60.17), 40.0)


def test_every_tunable_parameter_has_a_range_that_holds_its_default() -> None:
    assert set(ZONE_TUNABLES) <= set(TUNING_RANGES) and ALLOWED == ZONE_TUNABLES
    for name in ZONE_TUNABLES:
        assert TUNING_RANGES[name].contains(getattr(DEFAULT_CONFIG, name)), name
        assert TUNING_RANGES[name].low >= 0


def test_a_good_tuning_comes_back_as_floats() -> None:
    tuning, problems = check_gps_tuning(
        {"max_accuracy_m": 5, "min_exit_s": 86400, "exit_sigmas": 0, "min_sigma_m": 0.5}
    )
    assert problems == [] and tuning == {
        "max_accuracy_m": 5.0,
        "min_exit_s": 86400.0,
        "exit_sigmas": 0.0,
        "min_sigma_m": 0.5,
    }
    assert all(type(v) is float for v in tuning.values())


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (True, "wrong_type"),
        ("3", "wrong_type"),
        (None, "wrong_type"),
        (math.nan, "not_finite"),
        (math.inf, "not_finite"),
    ],
)
def test_a_value_that_is_not_a_finite_number_is_refused(value: object, code: str) -> None:
    tuning, problems = check_gps_tuning({"min_depth_m": value}, "features[2].properties.gps_tuning")
    assert tuning == {} and [(p.field, p.code) for p in problems] == [
        ("features[2].properties.gps_tuning.min_depth_m", code)
    ]


@given(st.sampled_from(ZONE_TUNABLES), st.floats(allow_nan=True, allow_infinity=True))
def test_a_number_is_accepted_exactly_when_it_is_in_its_range(name: str, value: float) -> None:
    limits = TUNING_RANGES[name]
    tuning, problems = check_gps_tuning({name: value})
    ok = (
        math.isfinite(value)
        and (limits.low < value if limits.low_open else limits.low <= value)
        and value <= limits.high
    )
    assert (tuning == {name: value}) is ok and (problems == []) is ok
    if not ok:
        assert problems[0].field == f"gps_tuning.{name}"
        assert problems[0].code == ("not_finite" if not math.isfinite(value) else "out_of_range")
        assert problems[0].code == "not_finite" or limits.describe() in problems[0].reason


def test_an_unknown_key_names_the_allowed_ones_and_a_non_object_is_refused() -> None:
    _, problems = check_gps_tuning({"min_mean_sigma_m": 3, "max_speed_mps": 10})
    assert [p.code for p in problems] == ["unknown_key", "unknown_key"]
    assert all(name in problems[0].reason for name in ZONE_TUNABLES)
    assert [p.field for p in check_gps_tuning([1, 2])[1]] == ["gps_tuning"]


def test_a_stored_tuning_edited_by_hand_keeps_only_what_is_valid() -> None:
    stored = {"exit_sigmas": 5, "min_exit_s": "soon", "nope": 1, "max_accuracy_m": -3, "dwell_after_s": True}
    assert clean_gps_tuning(stored) == {"exit_sigmas": 5.0}
    assert clean_gps_tuning(None) == {} and clean_gps_tuning([1]) == {}


def test_the_index_maps_the_fences_of_tuned_places_to_their_tuning_immutably() -> None:
    tuning = {"min_exit_margin_m": 25.0}
    rows: FenceRows = [(1, 10, SQUARE, None, tuning), (2, 10, CIRCLE, None, tuning), (3, 11, CIRCLE, 50.0, {})]
    index = build_index(rows, 4)
    assert dict(index.tuning) == {1: tuning, 2: tuning}
    assert isinstance(index.tuning, MappingProxyType) and isinstance(index.tuning[1], MappingProxyType)
    with pytest.raises(TypeError):
        index.tuning[1]["exit_sigmas"] = 1.0  # type: ignore[index]
    tuning["min_exit_margin_m"] = 99.0  # the rows' dicts are not the index's
    assert index.tuning[1]["min_exit_margin_m"] == 25.0
    assert build_index([(3, 11, CIRCLE, 50.0, {"junk": 1})], 1).tuning == {}


def test_the_tuning_survives_the_hand_over_file() -> None:
    rows: FenceRows = [(1, 10, SQUARE, None, {"exit_sigmas": 5.0}), (2, 10, CIRCLE, None, {"exit_sigmas": 5.0})]
    rows.append((3, 11, CIRCLE, 20.0, {"dwell_after_s": 60.0}))
    index = build_index(rows, 9)
    again = take_over(hand_over(index))
    assert again.version == 9 and dict(again.tuning) == {
        1: {"exit_sigmas": 5.0},
        2: {"exit_sigmas": 5.0},
        3: {"dwell_after_s": 60.0},
    }
    assert isinstance(again.tuning, MappingProxyType) and isinstance(again.tuning[3], MappingProxyType)
    assert again.tuning[1] is again.tuning[2]  # one place's mapping stays shared by its fences
    assert take_over(hand_over(build_index(rows[2:], 1))).tuning == {3: {"dwell_after_s": 60.0}}
    untuned = take_over(hand_over(build_index([(4, 12, SQUARE, None, {})], 2)))
    assert untuned.tuning == {} and len(untuned) == 1


def test_geojson_carries_the_tuning_and_leaving_it_out_is_not_saying() -> None:
    tuned = PlaceSpec("Hall", "hall", [SQUARE], external_ref="h", gps_tuning={"exit_sigmas": 6.0})
    untold = PlaceSpec("Kiosk", "kiosk", [CIRCLE], external_ref="k")
    collection = places_to_feature_collection(
        [(1, tuned), (2, untold), (3, PlaceSpec("Empty", "x", [CIRCLE], gps_tuning={}))]
    )
    props = [f["properties"] for f in collection["features"]]
    assert (
        props[0]["gps_tuning"] == {"exit_sigmas": 6.0} and "gps_tuning" not in props[1] and "gps_tuning" not in props[2]
    )
    places, refused = features_to_places(collection)
    assert refused == [] and places[0] == tuned and places[1] == untold and places[2].gps_tuning is None
    assert "gps_tuning" not in places[0].properties

    collection["features"][0]["properties"]["gps_tuning"] = {"exit_sigmas": 50, "x": 1}
    _, refused = features_to_places(collection)
    assert [p.field for p in refused[0].problems] == [
        "features[0].properties.gps_tuning.exit_sigmas",
        "features[0].properties.gps_tuning.x",
    ]

"""Wire formats of OwnTracks and Traccar Client / OsmAnd, fed with the payloads the real clients send.

Payloads are copied from the clients' sources and issue trackers (named at each one); old timestamps in
them are fine because FixIn accepts any fix from 2000 on that is not in the future.
"""

from __future__ import annotations

import base64
import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mobile_api.protocols import (
    OsmAndFix,
    OwnTracksMessage,
    ProtocolError,
    parse_osmand_json,
    parse_osmand_params,
    parse_owntracks,
)

HEADERS = {"x-limit-u": "jane", "x-limit-d": "phone"}


@pytest.fixture(autouse=True)
def _any_fix_age(monkeypatch: pytest.MonkeyPatch) -> None:
    """These are parsing tests on real clients' example requests, some years old: the age limit (a fix older
    than 7 days is a 422, tested in tests/api/test_mobile_api.py) is not what they check."""
    import mobile_api.schemas

    monkeypatch.setattr(mobile_api.schemas, "MAX_FIX_AGE", timedelta(days=365 * 100))


def basic(user: str, password: str = "secret") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def at(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def error_of(parse: Any, *args: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(*args)
    return info.value


def query(url: str) -> dict[str, str]:
    """What a framework hands over for a request such as the decoder tests' `/?id=...&lat=...`."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


# --- OwnTracks ---------------------------------------------------------------------------------------

# owntracks/android issue #629 (app 2.1.0) as posted, coordinates filled in (they were redacted) and
# `topic` + `created_at` added as HttpMessageProcessorEndpoint / MessageWithCreatedAt send them today.
ANDROID_LOCATION = {
    "_type": "location",
    "acc": 66,
    "alt": 167,
    "batt": 9,
    "conn": "w",
    "created_at": 1544227360,
    "lat": 60.1699,
    "lon": 24.9384,
    "tid": "px",
    "topic": "owntracks/jane/phone",
    "tst": 1544227351,
    "vac": 2,
    "vel": 0,
}
# owntracks/ios issue #447 (app 9.3.0); the post was cut off after "tid".
IOS_LOCATION = json.loads(
    '{"cog":136,"batt":75,"lon":9.227956132971894,"acc":10,"vel":0,"vac":4,"lat":47.72337962412063,'
    '"t":"u","conn":"m","tst":1494851972,"alt":394,"_type":"location","tid":"df"}'
)
# Shape of owntracks/android MessageTransition.kt; the topic carries the `/event` suffix.
ANDROID_TRANSITION = {
    "_type": "transition",
    "acc": 14.0,
    "desc": "Oodi",
    "event": "enter",
    "lat": 60.1738,
    "lon": 24.9380,
    "rid": "a1b2c3",
    "t": "c",
    "tid": "px",
    "topic": "owntracks/jane/phone/event",
    "tst": 1700000000,
    "wtst": 1690000000,
}


def test_android_location_becomes_a_fix_with_every_unit_converted() -> None:
    message = parse_owntracks(ANDROID_LOCATION, {**HEADERS, "authorization": basic("jane")})
    assert (message.kind, message.device_key, message.tracker_id) == ("location", "jane/phone", "px")
    assert message.fix is not None
    assert (message.fix.lat, message.fix.lon) == (60.1699, 24.9384)
    assert message.fix.ts == at(1544227351)
    assert (message.fix.accuracy_m, message.fix.altitude_m, message.fix.battery) == (66, 167, 9)
    assert message.fix.speed_mps == 0
    assert message.created_at == at(1544227360)
    assert message.transition is None


def test_ios_location_keeps_course_and_trigger() -> None:
    message = parse_owntracks(IOS_LOCATION, HEADERS)
    assert message.fix is not None
    assert message.fix.heading == 136
    assert message.fix.ts == at(1494851972)
    assert message.trigger == "u"


@pytest.mark.parametrize(("kmh", "mps"), [(36, 10.0), (3.6, 1.0), (100, 100 * 1000 / 3600), (1, 1 / 3.6)])
def test_velocity_km_h_to_m_s(kmh: float, mps: float) -> None:
    fix = parse_owntracks({**ANDROID_LOCATION, "vel": kmh}, HEADERS).fix
    assert fix is not None
    assert fix.speed_mps == pytest.approx(mps, rel=1e-15)


def test_negative_speed_course_and_battery_mean_unknown() -> None:
    fix = parse_owntracks({**IOS_LOCATION, "vel": -1, "cog": -1, "batt": -1}, HEADERS).fix
    assert fix is not None
    assert (fix.speed_mps, fix.heading, fix.battery) == (None, None, None)


def test_transition_is_a_fix_plus_the_region_event() -> None:
    message = parse_owntracks(ANDROID_TRANSITION, {"authorization": basic("jane")})
    assert message.kind == "transition"
    assert message.device_key == "jane/phone"  # user from basic auth, device from the topic before /event
    assert message.fix is not None
    assert (message.fix.lat, message.fix.accuracy_m, message.fix.ts) == (60.1738, 14.0, at(1700000000))
    assert message.transition is not None
    assert message.transition.event == "enter"
    assert (message.transition.region, message.transition.region_id) == ("Oodi", "a1b2c3")
    assert message.transition.region_created_at == at(1690000000)
    leave = parse_owntracks({**ANDROID_TRANSITION, "event": "leave"}, HEADERS)
    assert leave.transition is not None and leave.transition.event == "leave"


@pytest.mark.parametrize("event", [None, "exit", "ENTER", 1])
def test_transition_needs_enter_or_leave(event: object) -> None:
    assert error_of(parse_owntracks, {**ANDROID_TRANSITION, "event": event}, HEADERS).field == "event"


@pytest.mark.parametrize(
    "body",
    [
        {"_type": "lwt", "tst": "1571457804"},  # iOS sent tst as a string for years (owntracks/ios #604)
        {"_type": "waypoint", "desc": "Home", "lat": 60.1, "lon": 24.9, "rad": 50, "tst": 1700000000},
        {"_type": "waypoints", "waypoints": []},
        {"_type": "card", "name": "Jane", "tid": "px"},
        {"_type": "status", "iOS": {"version": "18.3.2"}, "topic": "owntracks/jane/phone/status"},
        {"_type": "steps", "steps": -1, "from": 1, "to": 2, "tst": 3},
        {"_type": "cmd", "action": "reportLocation"},
        {"_type": "beacon", "uuid": "x", "major": 1, "minor": 2},
        {"_type": "configuration", "mode": 3},
        {"_type": "some-future-type"},
    ],
)
def test_other_types_are_ignored_without_checking_their_fields(body: dict[str, Any]) -> None:
    message = parse_owntracks(body, HEADERS)
    assert (message.kind, message.fix, message.message_type) == ("ignored", None, body["_type"])
    assert message.device_key == "jane/phone"


def test_encrypted_payload_is_refused_with_a_fix_for_the_user() -> None:
    error = error_of(parse_owntracks, {"_type": "encrypted", "data": "1Vu7Owp...="}, HEADERS)
    assert error.field == "_type"
    assert "encrypted payloads are not supported" in error.reason
    assert "encryptionKey" in error.reason


@pytest.mark.parametrize(
    ("headers", "body_extra", "key"),
    [
        (HEADERS, {"topic": "owntracks/someone/else"}, "jane/phone"),  # the headers win over the topic
        ({"authorization": basic("jane")}, {}, "jane/phone"),  # basic-auth user + topic
        ({"authorization": basic("jane"), "x-limit-d": "tablet"}, {}, "jane/tablet"),
        ({}, {"topic": "custom/base/anna/watch"}, "anna/watch"),  # configurable pubTopicBase
        ({"authorization": basic("jane")}, {"topic": None}, "jane/px"),  # tid is the last resort
        ({"authorization": "Bearer abc.def", "x-limit-u": "jane"}, {"topic": None}, "jane/px"),
    ],
)
def test_identity_sources_in_order(headers: dict[str, str], body_extra: dict[str, Any], key: str) -> None:
    body = {k: v for k, v in {**ANDROID_LOCATION, **body_extra}.items() if v is not None}
    assert parse_owntracks(body, headers).device_key == key


@pytest.mark.parametrize(
    ("headers", "body_extra", "field"),
    [
        ({"x-limit-u": "mallory", "authorization": basic("jane")}, {}, "x-limit-u"),
        ({"x-limit-d": "phone"}, {"topic": None}, "x-limit-u"),  # nobody named the user
        ({"x-limit-u": "jane"}, {"topic": None, "tid": None}, "x-limit-d"),
        ({"authorization": "Basic not-base64!"}, {}, "authorization"),
        ({"authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, {}, "authorization"),
        ({"x-limit-u": "a/b", "x-limit-d": "phone"}, {}, "x-limit-u"),
        ({"x-limit-u": "jane", "x-limit-d": "x" * 100}, {}, "x-limit-d"),
        ({"x-limit-u": "jane\x00", "x-limit-d": "phone"}, {}, "x-limit-u"),
        (HEADERS, {"topic": 42}, "topic"),
    ],
)
def test_identity_errors(headers: dict[str, str], body_extra: dict[str, Any], field: str) -> None:
    body = {k: v for k, v in {**ANDROID_LOCATION, **body_extra}.items() if v is not None}
    assert error_of(parse_owntracks, body, headers).field == field


def far_future() -> int:
    return int(time.time()) + 11 * 60


@pytest.mark.parametrize(
    ("change", "field", "reason_part"),
    [
        ({"lat": "60.1699"}, "lat", "not a string"),  # the apps send numbers; a string is a broken client
        ({"lat": None}, "lat", "missing"),
        ({"lat": math.nan}, "lat", "finite"),
        ({"lon": math.inf}, "lon", "finite"),
        ({"lat": 10**400}, "lat", "finite"),
        ({"lat": True}, "lat", "boolean"),
        ({"lat": 90.5}, "lat", "less than or equal to 90"),
        ({"lon": -180.5}, "lon", "greater than or equal to -180"),
        ({"tst": None}, "tst", "missing"),
        ({"tst": "1544227351"}, "tst", "not a string"),
        ({"tst": 1e300}, "tst", "epoch"),
        ({"acc": -5}, "acc", "greater than or equal to 0"),
        ({"batt": 101}, "batt", "less than or equal to 100"),
        ({"cog": 361}, "cog", "less than or equal to 360"),
        ({"alt": [1]}, "alt", "an array"),
        ({"tid": 7}, "tid", "must be a string"),
        ({"created_at": "soon"}, "created_at", "number"),
    ],
)
def test_bad_location_fields_are_named(change: dict[str, Any], field: str, reason_part: str) -> None:
    body = {k: v for k, v in {**ANDROID_LOCATION, **change}.items() if v is not None}
    error = error_of(parse_owntracks, body, HEADERS)
    assert (error.field, reason_part in error.reason) == (field, True), error


def test_clock_skew_limit_applies_to_tst() -> None:
    error = error_of(parse_owntracks, {**ANDROID_LOCATION, "tst": far_future()}, HEADERS)
    assert error.field == "tst" and "future" in error.reason
    slightly_ahead = int(time.time()) + 5 * 60
    assert parse_owntracks({**ANDROID_LOCATION, "tst": slightly_ahead}, HEADERS).fix is not None


@pytest.mark.parametrize(("body", "field"), [([ANDROID_LOCATION], "body"), ("{}", "body"), ({"lat": 1}, "_type")])
def test_body_must_be_a_typed_object(body: object, field: str) -> None:
    assert error_of(parse_owntracks, body, HEADERS).field == field


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
PLAUSIBLE = JSON | st.floats(-200, 200) | st.integers(0, 2_000_000_000) | st.sampled_from(["enter", "leave"])
OWNTRACKS_KEYS = ["lat", "lon", "tst", "acc", "vel", "cog", "alt", "batt", "tid", "t", "topic", "created_at"]
OWNTRACKS_KEYS += ["event", "desc", "rid", "wtst"]
OWNTRACKS_BODIES = JSON | st.fixed_dictionaries(
    {"_type": st.sampled_from(["location", "transition", "lwt", "encrypted"]) | JSON},
    optional=dict.fromkeys(OWNTRACKS_KEYS, PLAUSIBLE),
)
HEADER_MAPS = st.dictionaries(
    st.sampled_from(["x-limit-u", "x-limit-d", "authorization"]),
    st.text(max_size=12) | st.just(basic("jane")) | st.just("Basic %%%"),
)


@settings(max_examples=300, deadline=None)
@given(body=OWNTRACKS_BODIES, headers=HEADER_MAPS)
def test_owntracks_any_json_gives_a_message_or_a_protocol_error(body: object, headers: dict[str, str]) -> None:
    try:
        assert isinstance(parse_owntracks(body, headers), OwnTracksMessage)
    except ProtocolError as error:
        assert error.field and error.reason


# --- Traccar Client / OsmAnd: query or form parameters -----------------------------------------------


def test_example_query_string() -> None:
    result = parse_osmand_params(
        query("/?id=123456&lat=60.1699&lon=24.9384&timestamp=1700000000&hdop=0&altitude=10&speed=1.5")
    )
    assert result.device_id == "123456"
    assert (result.fix.lat, result.fix.lon, result.fix.altitude_m) == (60.1699, 24.9384, 10)
    assert result.fix.ts == at(1700000000)
    assert result.fix.speed_mps == pytest.approx(1.5 * 1852 / 3600, rel=1e-15)
    assert (result.valid, result.mock) == (True, False)


def test_traccar_client_android_request() -> None:
    # ProtocolFormatter.kt: speed is location.speed * 1.943844 (knots), so 10 m/s arrives as 19.43844.
    result = parse_osmand_params(
        query(
            "/?id=48241179&timestamp=1700000000&lat=60.1699&lon=24.9384&speed=19.43844&bearing=271.5"
            "&altitude=12.0&accuracy=4.5&batt=87.0&mock=true"
        )
    )
    assert result.fix.speed_mps == pytest.approx(10.0, rel=1e-6)
    assert (result.fix.heading, result.fix.accuracy_m, result.fix.battery) == (271.5, 4.5, 87.0)
    assert result.mock is True


# Every request of traccar's OsmAndProtocolDecoderTest.testDecodeQuery that carries an id and a position,
# with the device id and coordinates Traccar reads from it.
DECODER_TEST_REQUESTS = [
    (
        "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0&altitude=224.0&speed=0.0",
        ("902064", 42.06288, -88.23412),
    ),
    (
        "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0&altitude=224.0&speed=0.0",
        ("902064", 42.06288, -88.23412),
    ),
    (
        "/?lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0&id=353861053849681",
        ("353861053849681", 49.60688, 6.15788),
    ),
    (
        "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0&altitude=0&hdop=0.0",
        ("123456", 60.0, 30.0),
    ),
    ("/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0", ("123456", 60.0, 30.0)),
    (
        "/?lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456",
        ("123456", 60.0, 30.0),
    ),
    (
        "/?id=861001000719969&lat=41.666667&lon=-0.883333&altitude=350.059479&speed=0.000000&batt=87",
        ("861001000719969", 41.666667, -0.883333),
    ),
    ("/?id=123456&timestamp=1377177267&location=60.0,30.0", ("123456", 60.0, 30.0)),
    (
        "/?id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571"
        "&bearing=7.19889788244&speed=40&ignition=true&rpm=933&fuel=24",
        ("123456789012345", 40.7232948571, -74.0061408571),
    ),
]


@pytest.mark.parametrize(("url", "expected"), DECODER_TEST_REQUESTS)
def test_traccar_decoder_test_requests(url: str, expected: tuple[str, float, float]) -> None:
    result = parse_osmand_params(query(url))
    assert (result.device_id, result.fix.lat, result.fix.lon) == expected


def test_decoder_test_requests_traccar_refuses_are_refused() -> None:
    assert error_of(parse_osmand_params, query("/?timestamp=1377177267&lat=60.0&lon=30.0")).field == "id"
    cells_only = "/?id=123456&timestamp=1377177267&cell=257,02,16,2224&wifi=00-14-22-01-23-45,-80"
    assert error_of(parse_osmand_params, query(cells_only)).field == "lat"  # no position to store


@pytest.mark.parametrize(
    "stamp",
    [
        "1700000000",
        "1700000000000",
        "2023-11-14T22:13:20Z",
        "2023-11-15T00:13:20.000+02:00",
        "2023-11-14 22:13:20",
    ],
)
def test_timestamp_spellings_give_the_same_instant(stamp: str) -> None:
    result = parse_osmand_params({"id": "1", "lat": "60.1", "lon": "24.9", "timestamp": stamp})
    assert result.fix.ts == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_timestamp_milliseconds_keep_their_fraction_and_the_seconds_threshold_is_traccars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = parse_osmand_params(query("/?id=1&lat=1&lon=1&timestamp=1442068686579"))
    assert result.fix.ts == at(1442068686) + timedelta(milliseconds=579)
    # 2**31 - 1 is already milliseconds (25 days after 1970), so FixIn refuses it as too old.
    import mobile_api.schemas

    monkeypatch.setattr(mobile_api.schemas, "MAX_FIX_AGE", timedelta(days=7))
    error = error_of(parse_osmand_params, {"id": "1", "lat": "1", "lon": "1", "timestamp": str(2**31 - 1)})
    assert (error.field, "7 days" in error.reason) == ("timestamp", True)


def test_missing_timestamp_is_stamped_on_arrival() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_osmand_params({"id": "1", "lat": "1", "lon": "1"}, now=now).fix.ts == now
    before = datetime.now(UTC)
    assert parse_osmand_params({"id": "1", "lat": "1", "lon": "1", "timestamp": ""}).fix.ts >= before


@pytest.mark.parametrize(("knots", "mps"), [("1", 1852 / 3600), ("40", 40 * 1852 / 3600), ("0", 0.0)])
def test_speed_knots_to_m_s(knots: str, mps: float) -> None:
    result = parse_osmand_params({"id": "1", "lat": "1", "lon": "1", "speed": knots})
    assert result.fix.speed_mps == pytest.approx(mps, rel=1e-15)


@pytest.mark.parametrize(
    ("value", "valid"),
    [(None, True), ("true", True), ("TRUE", True), ("1", True), ("false", False), ("0", False)],
)
def test_valid_flag_follows_traccar(value: str | None, valid: bool) -> None:
    params = {"id": "1", "lat": "1", "lon": "1"} | ({} if value is None else {"valid": value})
    assert parse_osmand_params(params).valid is valid


def test_empty_values_are_skipped_like_traccar_does() -> None:
    result = parse_osmand_params({"id": "7", "lat": "1", "lon": "2", "speed": "", "bearing": "", "heading": "90"})
    assert (result.fix.speed_mps, result.fix.heading) == (None, 90)


@pytest.mark.parametrize(
    ("change", "field", "reason_part"),
    [
        ({"id": ""}, "id", "missing"),
        ({"id": " "}, "id", "missing"),
        ({"id": "x" * 201}, "id", "200"),
        ({"lat": "abc"}, "lat", "not a decimal number"),
        ({"lat": "60,17"}, "lat", "decimal separator"),
        ({"lat": "NaN"}, "lat", "not a decimal number"),
        ({"lon": "Infinity"}, "lon", "not a decimal number"),
        ({"lat": "1e999"}, "lat", "out of range"),
        ({"lat": "1_0"}, "lat", "not a decimal number"),
        ({"lat": "91"}, "lat", "less than or equal to 90"),
        ({"lon": None}, "lon", "missing"),
        ({"accuracy": "-1"}, "accuracy", "greater than or equal to 0"),
        ({"speed": "-2"}, "speed", "greater than or equal to 0"),
        ({"bearing": "400"}, "bearing", "less than or equal to 360"),
        ({"heading": "400"}, "heading", "less than or equal to 360"),
        ({"altitude": "high"}, "altitude", "not a decimal number"),
        ({"hdop": "x"}, "hdop", "not a decimal number"),
        ({"batt": "150"}, "batt", "less than or equal to 100"),
        ({"timestamp": "yesterday"}, "timestamp", "ISO 8601"),
        ({"timestamp": "2023-13-45T99:00:00Z"}, "timestamp", "ISO 8601"),
        ({"timestamp": "9" * 19}, "timestamp", "epoch"),
    ],
)
def test_bad_parameters_are_named(change: dict[str, str | None], field: str, reason_part: str) -> None:
    params = {k: v for k, v in ({"id": "1", "lat": "60.1", "lon": "24.9"} | change).items() if v is not None}
    error = error_of(parse_osmand_params, params)
    assert (error.field, reason_part in error.reason) == (field, True), error


def test_future_timestamp_is_refused() -> None:
    error = error_of(parse_osmand_params, {"id": "1", "lat": "1", "lon": "1", "timestamp": str(far_future())})
    assert error.field == "timestamp" and "future" in error.reason


@pytest.mark.parametrize("location", ["60.0", "60.0,30.0,5", "60.0,", "a,b"])
def test_bad_location_pair(location: str) -> None:
    assert error_of(parse_osmand_params, {"id": "1", "location": location}).field == "location"


OSMAND_KEYS = ["id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading"]
OSMAND_KEYS += ["altitude", "accuracy", "hdop", "batt", "valid", "mock"]
PARAM_VALUES = st.text(max_size=16) | st.from_regex(r"-?\d{1,14}(\.\d{1,6})?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(params=st.dictionaries(st.sampled_from(OSMAND_KEYS) | st.text(max_size=6), PARAM_VALUES))
def test_osmand_any_parameters_give_a_fix_or_a_protocol_error(params: dict[str, str]) -> None:
    try:
        assert isinstance(parse_osmand_params(params), OsmAndFix)
    except ProtocolError as error:
        assert error.field and error.reason


# --- Traccar Client: JSON body -----------------------------------------------------------------------

# The three bodies of traccar's OsmAndProtocolDecoderTest.testDecodeJson, verbatim.
JSON_STILL = (
    '{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,"longitude":-122.084,'
    '"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,"odometer":0,"event":"motionchange",'
    '"battery":{"level":1,"is_charging":false},"activity":{"type":"still"},"extras":{},'
    '"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}'
)
JSON_IOS_SIMULATOR = (
    '{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,"longitude":-122.406417,'
    '"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,"latitude":37.785834000000001,"accuracy":5,'
    '"altitude_accuracy":-1,"altitude":0,"heading":-1},"is_moving":false,"age":188,"odometer":0,'
    '"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange","battery":{"level":-1,'
    '"is_charging":false},"activity":{"type":"unknown","confidence":100},"timestamp":"2025-05-09T04:11:30.579Z"},'
    '"device_id":"658765"}'
)
JSON_MOVING = (
    '{"location":{"event":"motionchange","is_moving":false,"uuid":"0e9a2473-a9a7-4c00-997b-fb97d2154e75",'
    '"timestamp":"2021-07-21T08:06:34.444Z","odometer":0,"coords":{"latitude":-6.1148096,"longitude":106.6837015,'
    '"accuracy":3.8,"speed":18.67,"speed_accuracy":0.26,"heading":63,"heading_accuracy":0.28,"altitude":35.7,'
    '"altitude_accuracy":3.8},"activity":{"type":"still","confidence":100},"battery":{"is_charging":false,'
    '"level":0.79},"extras":{}},"device_id":"8737767034"}'
)


def test_json_body_speed_is_already_m_s_and_battery_a_fraction() -> None:
    result = parse_osmand_json(json.loads(JSON_MOVING))
    assert result.device_id == "8737767034"
    assert (result.fix.lat, result.fix.lon) == (-6.1148096, 106.6837015)
    assert result.fix.ts == datetime(2021, 7, 21, 8, 6, 34, 444000, tzinfo=UTC)
    assert (result.fix.speed_mps, result.fix.heading, result.fix.altitude_m) == (18.67, 63, 35.7)
    assert result.fix.accuracy_m == 3.8
    assert result.fix.battery == pytest.approx(79)
    assert result.mock is False


def test_json_body_minus_one_means_unknown() -> None:
    result = parse_osmand_json(json.loads(JSON_IOS_SIMULATOR))
    assert (result.fix.speed_mps, result.fix.heading, result.fix.battery) == (None, None, None)
    assert result.fix.lat == pytest.approx(37.785834)
    assert result.mock is True
    still = parse_osmand_json(json.loads(JSON_STILL))
    assert (still.fix.speed_mps, still.fix.heading, still.fix.battery) == (0, None, 100)
    assert still.fix.ts == datetime(2025, 6, 15, 13, 45, 12, 862000, tzinfo=UTC)


def test_json_body_needs_only_id_timestamp_and_position() -> None:
    minimal = {
        "device_id": "7",
        "location": {"timestamp": "2024-01-02T03:04:05Z", "coords": {"latitude": 1, "longitude": 2}},
    }
    result = parse_osmand_json(minimal)
    assert (result.fix.lat, result.fix.lon, result.fix.battery, result.fix.accuracy_m) == (1, 2, None, None)
    assert (result.device_id, result.mock, result.valid) == ("7", False, True)


def _moving(**location_changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(JSON_MOVING)
    body["location"].update(location_changes)
    return body


def _coords(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(JSON_MOVING)
    body["location"]["coords"].update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "field", "reason_part"),
    [
        ([json.loads(JSON_MOVING)], "body", "an array"),
        ({"location": json.loads(JSON_MOVING)["location"]}, "device_id", "missing"),
        ({**json.loads(JSON_MOVING), "device_id": 8737767034}, "device_id", "must be a string"),
        ({**json.loads(JSON_MOVING), "device_id": ""}, "device_id", "missing"),
        ({"device_id": "1", "location": [json.loads(JSON_MOVING)["location"]]}, "location", "batch"),
        ({"device_id": "1"}, "location", "null"),
        (_moving(timestamp=None), "location.timestamp", "null"),
        (_moving(timestamp=1626854794), "location.timestamp", "a number"),
        (_moving(timestamp="21.07.2021 08:06"), "location.timestamp", "ISO 8601"),
        (
            # Far enough ahead to stay in the future however long the suite runs before this case.
            _moving(timestamp=f"{datetime.now(UTC) + timedelta(days=2):%Y-%m-%dT%H:%M:%SZ}"),
            "location.timestamp",
            "future",
        ),
        (_moving(coords=None), "location.coords", "missing"),
        (_moving(battery=0.5), "location.battery", "a number"),
        (_moving(battery={"level": 1.5}), "location.battery.level", "less than or equal to 100"),
        (_moving(mock="yes"), "location.mock", "true or false"),
        (_coords(latitude="-6.1"), "location.coords.latitude", "a string"),
        (_coords(latitude=None), "location.coords.latitude", "missing"),
        (_coords(longitude=200), "location.coords.longitude", "less than or equal to 180"),
        (_coords(accuracy=-3), "location.coords.accuracy", "greater than or equal to 0"),
        (_coords(speed=math.nan), "location.coords.speed", "finite"),
        (_coords(altitude=math.inf), "location.coords.altitude", "finite"),
    ],
)
def test_bad_json_bodies_are_named(body: object, field: str, reason_part: str) -> None:
    error = error_of(parse_osmand_json, body)
    assert (error.field, reason_part in error.reason) == (field, True), error


COORD_KEYS = ["latitude", "longitude", "accuracy", "speed", "heading", "altitude"]
COORDS = st.fixed_dictionaries({}, optional=dict.fromkeys(COORD_KEYS, PLAUSIBLE))
LOCATIONS = st.fixed_dictionaries(
    {"timestamp": JSON | st.just("2021-07-21T08:06:34.444Z")},
    optional={
        "coords": JSON | COORDS,
        "battery": JSON | st.fixed_dictionaries({"level": PLAUSIBLE}),
        "mock": JSON,
    },
)
JSON_BODIES = JSON | st.fixed_dictionaries({"device_id": JSON | st.just("1")}, optional={"location": JSON | LOCATIONS})


@settings(max_examples=300, deadline=None)
@given(body=JSON_BODIES)
def test_osmand_json_any_body_gives_a_fix_or_a_protocol_error(body: object) -> None:
    try:
        assert isinstance(parse_osmand_json(body), OsmAndFix)
    except ProtocolError as error:
        assert error.field and error.reason


def test_protocol_error_carries_field_and_reason() -> None:
    error = ProtocolError("lat", "missing (required)")
    assert (error.field, error.reason, str(error)) == ("lat", "missing (required)", "lat: missing (required)")

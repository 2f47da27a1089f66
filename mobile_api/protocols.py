"""Wire-format adapters for OwnTracks (HTTP mode) and Traccar Client / OsmAnd; pure, no FastAPI or DB.

Every parser takes untrusted input and returns a `FixIn`-based result or raises `ProtocolError` naming the
field as the client spelt it - never any other exception. Formats as read in the clients' own sources:
- OwnTracks booklet `docs/tech/json.md` (types; `acc`/`alt` m, `vel` km/h, `cog` degrees, `batt` %,
  `tst`/`wtst`/`created_at` epoch s), `docs/tech/http.md` (X-Limit-U/X-Limit-D, basic auth, answer `[]`),
  `docs/features/encrypt.md`; owntracks/android `MessageLocation.kt`, `MessageTransition.kt`,
  `MessageLocationDeserializer.kt`, `HttpMessageProcessorEndpoint.kt` (all values JSON numbers; X-Limit-U =
  basic-auth user, X-Limit-D = device id); owntracks/ios `OwnTracking.m` (-1 = invalid speed/course).
- traccar/traccar `OsmAndProtocolDecoder.java` + `OsmAndProtocolDecoderTest.java`: parameters `id`|
  `deviceid`, `lat`/`lon` or `location=lat,lon`, `timestamp` (epoch s below 2**31-1, else ms; ISO 8601 if it
  contains "T"; else "yyyy-MM-dd HH:mm:ss"), `speed` knots, `bearing`|`heading`, `altitude`, `accuracy`,
  `hdop`, `batt`, `valid`, empty values skipped; JSON body `device_id` + transistorsoft location with
  `coords.speed` in m/s, -1 = unknown speed/heading/battery, `battery.level` a 0..1 fraction.
- traccar-client-android `Position.kt`/`ProtocolFormatter.kt`, traccar-client-ios `Position.swift`/
  `ProtocolFormatter.swift` (speed = m/s * 1.943844 knots, epoch-seconds timestamp, `mock=true`), OsmAnd's
  `LiveSender.java` (user-made URL template, time in epoch ms).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import ValidationError

from mobile_api.schemas import FixIn

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Traccar's own rule: an integer timestamp below Integer.MAX_VALUE is seconds, otherwise milliseconds.
_MS_THRESHOLD = 2**31 - 1
# What Java's Double.parseDouble accepts for plain decimals, minus its NaN/Infinity/hex spellings and
# minus Python float()'s extras ("1_0", "nan", "inf").
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,4})?")
_INTEGER = re.compile(r"[+-]?\d{1,19}")
# DeviceIn.external_id holds at most 200 characters, so each half of "user/device" gets 99.
_MAX_ID, _MAX_ID_PART = 200, 99
# Sub-topics the apps append to the base topic `owntracks/<user>/<device>` (booklet, "Topics").
_TOPIC_SUFFIXES = frozenset(
    ("event", "cmd", "step", "steps", "beacon", "dump", "status", "info", "waypoint", "waypoints")
)
_JSON_TYPES = {type(None): "null", bool: "a boolean", str: "a string", list: "an array", dict: "an object"}


class ProtocolError(Exception):
    """A request a client sent that cannot become a fix; `field` is the name on the wire."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Transition:
    """An OwnTracks region event; the app's own geofence fired, ours still decides from the fix."""

    event: Literal["enter", "leave"]
    region: str | None  # `desc`, the region's name as configured in the app
    region_id: str | None  # `rid`
    region_created_at: datetime | None  # `wtst`


@dataclass(frozen=True, slots=True)
class OwnTracksMessage:
    user: str
    device: str
    message_type: str  # `_type` as sent, for logs
    kind: Literal["location", "transition", "ignored"]
    fix: FixIn | None = None  # set for "location" and "transition"
    transition: Transition | None = None  # set for "transition"
    tracker_id: str | None = None  # `tid`
    trigger: str | None = None  # `t`: p ping, c region, u user, r remote request, ...
    created_at: datetime | None = None  # when the app built the message (vs `tst`, when it measured)

    @property
    def device_key(self) -> str:
        """The `external_id` a device is registered with (see DeviceIn): "user/device"."""
        return f"{self.user}/{self.device}"


@dataclass(frozen=True, slots=True)
class OsmAndFix:
    device_id: str
    fix: FixIn
    valid: bool = True  # `valid=false` from the client: the fix is known to be unreliable
    mock: bool = False  # the phone reported a mock (simulated) location provider


# --- shared helpers -----------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _number(obj: Mapping[str, object], key: str, field: str | None = None) -> float | None:
    """An optional JSON number; null counts as absent (transistorsoft sends `"floor": null`)."""
    value, field = obj.get(key), field or key
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(field, f"must be a JSON number, not {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ProtocolError(field, "must be a finite number in range (no NaN or Infinity)")
    return number


def _required_number(obj: Mapping[str, object], key: str, field: str | None = None) -> float:
    number = _number(obj, key, field)
    if number is None:
        raise ProtocolError(field or key, "missing (required)")
    return number


def _text(obj: Mapping[str, object], key: str, max_len: int = 200) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProtocolError(key, f"must be a string, not {_json_type(value)}")
    if len(value) > max_len:
        raise ProtocolError(key, f"longer than {max_len} characters")
    return value


def _epoch(value: float, field: str, unit: Literal["s", "ms"] = "s") -> datetime:
    try:
        return _EPOCH + (timedelta(seconds=value) if unit == "s" else timedelta(milliseconds=value))
    except OverflowError:
        raise ProtocolError(field, "not a usable epoch time") from None


def _optional_epoch(obj: Mapping[str, object], key: str) -> datetime | None:
    seconds = _number(obj, key)
    return None if seconds is None else _epoch(seconds, key)


def _iso(text: str, field: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(field, "not an ISO 8601 time such as 2025-06-15T13:45:12.862Z") from None


def _identifier(value: object, field: str, max_len: int = _MAX_ID) -> str:
    if value is not None and not isinstance(value, str):
        raise ProtocolError(field, f"must be a string, not {_json_type(value)}")
    if not value or not value.strip():
        raise ProtocolError(field, "missing or empty")
    if len(value) > max_len:
        raise ProtocolError(field, f"longer than {max_len} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ProtocolError(field, "contains control characters")
    return value


def _unknown_if_negative(value: float | None) -> float | None:
    # CoreLocation (iOS) and transistorsoft report an unknown speed, course or battery as -1: that is
    # "not measured", not bad input, and rejecting it would drop an otherwise good fix.
    return None if value is None or value < 0 else value


def _fix(values: dict[str, object], wire_names: Mapping[str, str]) -> FixIn:
    """FixIn owns the range rules (lat/lon, accuracy, clock skew); only the field name is translated."""
    try:
        return FixIn.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "body"
        raise ProtocolError(wire_names.get(name, name), first["msg"].removeprefix("Value error, ")) from None


# --- OwnTracks, HTTP mode -----------------------------------------------------------------------------

_OWNTRACKS_NAMES = {"ts": "tst", "accuracy_m": "acc", "speed_mps": "vel", "heading": "cog"}
_OWNTRACKS_NAMES |= {"altitude_m": "alt", "battery": "batt"}


def parse_owntracks(body: object, headers: Mapping[str, str]) -> OwnTracksMessage:
    """Translate one OwnTracks HTTP-mode POST body (parsed JSON) and its headers (lower-case names).

    `location` and `transition` carry a fix; every other `_type` (waypoint(s), lwt, card, status, steps,
    cmd, beacon, configuration, unknown future types) is "ignored" - the app still expects `[]` back.

    Identity, first match wins:
      user:   X-Limit-U header, else the basic-auth user name, else `topic` ("owntracks/<user>/<device>")
      device: X-Limit-D header, else `topic`, else `tid`
    Both apps send X-Limit-U (the basic-auth user name) and X-Limit-D (the device id) on every POST, so
    the fallbacks only serve proxies and hand-made requests. A X-Limit-U that differs from the basic-auth
    user is refused: the app never does that, and it would let one credential speak for another user.
    The result is a claim: the endpoint still has to check it against the authenticated device.
    """
    if not isinstance(body, dict):
        raise ProtocolError("body", f"must be a JSON object with a `_type`, not {_json_type(body)}")
    message_type = body.get("_type")
    if not isinstance(message_type, str) or not message_type:
        raise ProtocolError("_type", "missing or not a string; every OwnTracks message names its type")
    if message_type == "encrypted":
        raise ProtocolError(
            "_type",
            "encrypted payloads are not supported: turn off payload encryption in the OwnTracks app "
            "(clear the encryption key, `encryptionKey`); HTTPS already protects the connection",
        )
    user, device = _owntracks_identity(body, headers)
    if message_type not in ("location", "transition"):
        return OwnTracksMessage(user, device, message_type, "ignored")

    values: dict[str, object] = {
        "lat": _required_number(body, "lat"),
        "lon": _required_number(body, "lon"),
        "ts": _epoch(_required_number(body, "tst"), "tst"),
        "accuracy_m": _number(body, "acc"),
    }
    transition = None
    if message_type == "transition":
        event = body.get("event")
        if event not in ("enter", "leave"):
            raise ProtocolError("event", "must be 'enter' or 'leave'")
        region, region_id = _text(body, "desc"), _text(body, "rid")
        transition = Transition(
            "enter" if event == "enter" else "leave", region, region_id, _optional_epoch(body, "wtst")
        )
    else:
        vel = _unknown_if_negative(_number(body, "vel"))
        values |= {
            # `vel` is km/h; * 1000 / 3600 keeps whole km/h exact (36 -> 10.0), unlike * (1 / 3.6).
            "speed_mps": None if vel is None else vel * 1000 / 3600,
            "heading": _unknown_if_negative(_number(body, "cog")),
            "altitude_m": _number(body, "alt"),
            "battery": _unknown_if_negative(_number(body, "batt")),
        }
    kind: Literal["location", "transition"] = "location" if transition is None else "transition"
    fix, tid, trigger = _fix(values, _OWNTRACKS_NAMES), _text(body, "tid", _MAX_ID_PART), _text(body, "t", 16)
    created_at = _optional_epoch(body, "created_at")
    return OwnTracksMessage(user, device, message_type, kind, fix, transition, tid, trigger, created_at)


def _owntracks_identity(body: Mapping[str, object], headers: Mapping[str, str]) -> tuple[str, str]:
    header_user = headers.get("x-limit-u") or None
    basic_user = _basic_auth_user(headers.get("authorization"))
    if header_user is not None and basic_user is not None and header_user != basic_user:
        raise ProtocolError("x-limit-u", "differs from the basic-auth user name; the app sends the same name")
    topic_user, topic_device = _topic_identity(body.get("topic"))
    users = [("x-limit-u", header_user), ("authorization", basic_user), ("topic", topic_user)]
    devices = [("x-limit-d", headers.get("x-limit-d") or None), ("topic", topic_device)]
    devices.append(("tid", _text(body, "tid", _MAX_ID_PART)))
    user = next(((field, value) for field, value in users if value is not None), None)
    device = next(((field, value) for field, value in devices if value is not None), None)
    if user is None:
        raise ProtocolError("x-limit-u", "no user name: set one in the OwnTracks app's connection settings")
    if device is None:
        raise ProtocolError("x-limit-d", "no device name: set a device ID in the OwnTracks app's settings")
    for field, value in (user, device):
        if "/" in _identifier(value, field, _MAX_ID_PART):
            raise ProtocolError(field, "must not contain '/' (user and device are joined as user/device)")
    return user[1], device[1]


def _basic_auth_user(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None  # a bearer token names no user; authenticating it is the endpoint's job
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, separator, _ = decoded.partition(":")
    if not separator:
        raise ProtocolError("authorization", "malformed Basic credentials (base64 of user:password)")
    return user or None


def _topic_identity(topic: object) -> tuple[str | None, str | None]:
    if topic is None:
        return None, None
    if not isinstance(topic, str):
        raise ProtocolError("topic", f"must be a string, not {_json_type(topic)}")
    parts = topic.split("/")
    if len(parts) > 3 and parts[-1] in _TOPIC_SUFFIXES:
        parts = parts[:-1]
    # The base topic is configurable (`pubTopicBase`), so only its last two levels are user and device;
    # a topic of another shape is informational in HTTP mode and is not an error.
    if len(parts) < 3 or not parts[-2] or not parts[-1]:
        return None, None
    return parts[-2], parts[-1]


# --- Traccar Client / OsmAnd --------------------------------------------------------------------------


def parse_osmand_params(params: Mapping[str, str], *, now: datetime | None = None) -> OsmAndFix:
    """Translate OsmAnd-protocol query or form parameters (one value per name) into a fix.

    As in Traccar, a request without `timestamp` (OsmAnd's URL template may leave it out) is stamped
    with `now` (default: the current time). "yyyy-MM-dd HH:mm:ss" is read as UTC, where Traccar would use
    its server's zone. `hdop` is checked but not kept; `speed` is knots, as the Traccar decoder reads it.
    """
    id_key = "deviceid" if not (params.get("id") or "").strip() and "deviceid" in params else "id"
    device_id = _identifier(params.get(id_key), id_key)
    lat, lon = _param_number(params, "lat"), _param_number(params, "lon")
    if lat is None and lon is None and (params.get("location") or "").strip():
        pair = [_param_number({"location": part}, "location") for part in params["location"].split(",")]
        if len(pair) != 2 or None in pair:
            raise ProtocolError("location", "expected 'lat,lon', e.g. location=60.1699,24.9384")
        lat, lon = pair
    for key, value in (("lat", lat), ("lon", lon)):
        if value is None:
            raise ProtocolError(key, "missing: send lat and lon (or location=lat,lon)")
    heading_key = "bearing" if (params.get("bearing") or "").strip() else "heading"
    speed = _param_number(params, "speed")
    _param_number(params, "hdop")
    raw_time = (params.get("timestamp") or "").strip()
    values: dict[str, object] = {
        "lat": lat,
        "lon": lon,
        "ts": _param_timestamp(raw_time) if raw_time else (now or datetime.now(UTC)),
        "accuracy_m": _param_number(params, "accuracy"),
        # Knots to m/s: one knot is exactly 1852 m per hour.
        "speed_mps": None if speed is None else speed * 1852 / 3600,
        "heading": _param_number(params, heading_key),
        "altitude_m": _param_number(params, "altitude"),
        "battery": _unknown_if_negative(_param_number(params, "batt")),
    }
    names = {"ts": "timestamp", "accuracy_m": "accuracy", "speed_mps": "speed", "heading": heading_key}
    names |= {"altitude_m": "altitude", "battery": "batt"}
    # As in Traccar, `valid` other than "true" (any case) or "1" marks the fix invalid.
    valid, mock = _param_flag(params, "valid", default=True), _param_flag(params, "mock", default=False)
    return OsmAndFix(device_id, _fix(values, names), valid, mock)


def _param_number(params: Mapping[str, str], key: str) -> float | None:
    text = (params.get(key) or "").strip()
    if not text:
        return None  # newer Traccar decoders skip empty values instead of failing
    if not _DECIMAL.fullmatch(text):
        hint = " (use '.' as the decimal separator)" if "," in text else ""
        raise ProtocolError(key, f"not a decimal number: {text[:32]!r}{hint}")
    number = float(text)
    if not math.isfinite(number):
        raise ProtocolError(key, "number out of range")
    return number


def _param_timestamp(text: str) -> datetime:
    if _INTEGER.fullmatch(text):
        value = int(text)
        return _epoch(value, "timestamp", "s" if value < _MS_THRESHOLD else "ms")
    if "T" in text:
        return _iso(text, "timestamp")
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        reason = "expected epoch seconds, epoch milliseconds, ISO 8601 or 'yyyy-MM-dd HH:mm:ss'"
        raise ProtocolError("timestamp", reason) from None


def _param_flag(params: Mapping[str, str], key: str, *, default: bool) -> bool:
    text = (params.get(key) or "").strip()
    return default if not text else text.lower() == "true" or text == "1"


_COORDS = {"lat": "latitude", "lon": "longitude", "accuracy_m": "accuracy", "speed_mps": "speed"}
_COORDS |= {"heading": "heading", "altitude_m": "altitude"}
_JSON_NAMES = {field: f"location.coords.{name}" for field, name in _COORDS.items()}
_JSON_NAMES |= {"ts": "location.timestamp", "battery": "location.battery.level"}


def parse_osmand_json(body: object) -> OsmAndFix:
    """Translate the JSON body of the current Traccar Client (a transistorsoft background-geolocation
    location plus `device_id`). Its speed is m/s already; -1 marks an unknown speed, heading or battery.
    """
    if not isinstance(body, dict):
        raise ProtocolError("body", f"must be a JSON object with `location`, not {_json_type(body)}")
    device_id = _identifier(body.get("device_id"), "device_id")
    location = body.get("location")
    if isinstance(location, list):
        raise ProtocolError("location", "a list of locations (batch sync) is not supported; send one each")
    if not isinstance(location, dict):
        raise ProtocolError("location", f"must be an object, not {_json_type(location)}")
    timestamp = location.get("timestamp")
    if not isinstance(timestamp, str):
        raise ProtocolError("location.timestamp", f"must be an ISO 8601 string, not {_json_type(timestamp)}")
    coords = location.get("coords")
    if not isinstance(coords, dict):
        raise ProtocolError("location.coords", "missing: a location without coordinates cannot be stored")
    battery = location.get("battery")
    battery = {} if battery is None else battery
    if not isinstance(battery, dict):
        raise ProtocolError("location.battery", f"must be an object, not {_json_type(battery)}")
    mock = location.get("mock", False)
    if not isinstance(mock, bool):
        raise ProtocolError("location.mock", "must be true or false")
    level = _unknown_if_negative(_number(battery, "level", _JSON_NAMES["battery"]))

    def coord(field: str) -> float | None:
        return _number(coords, _COORDS[field], _JSON_NAMES[field])

    values: dict[str, object] = {
        "ts": _iso(timestamp, _JSON_NAMES["ts"]),
        "lat": _required_number(coords, "latitude", _JSON_NAMES["lat"]),
        "lon": _required_number(coords, "longitude", _JSON_NAMES["lon"]),
        "accuracy_m": coord("accuracy_m"),
        # Already m/s and degrees on this wire: only the -1 "unknown" needs care.
        "speed_mps": _unknown_if_negative(coord("speed_mps")),
        "heading": _unknown_if_negative(coord("heading")),
        "altitude_m": coord("altitude_m"),
        "battery": None if level is None else level * 100,  # a 0..1 fraction on this wire
    }
    return OsmAndFix(device_id, _fix(values, _JSON_NAMES), mock=mock)

"""Wire shapes of the mobile API (`/v1`). Coordinates are checked here, at the edge."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from kernel.timezones import time_zone
from services.orgs import MAX_FIX_AGE

# A device clock may run a little fast; beyond this a timestamp is a bug, not drift.
MAX_CLOCK_SKEW = timedelta(minutes=10)


def _sane_timestamp(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError("timestamp is in the future (more than 10 minutes ahead of the server clock)")
    if value < datetime.now(UTC) - MAX_FIX_AGE:
        raise ValueError("timestamp is more than 7 days old: such fixes are not accepted")
    return value


# Strict models take numbers as JSON numbers and booleans as JSON booleans: `battery: false` or `"lat": "60.1"` is a
# client's bug, answered 422. A timestamp stays lax: an ISO 8601 string or epoch seconds, as documented.
Timestamp = Annotated[
    datetime,
    Field(strict=False),
    AfterValidator(_sane_timestamp),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}),
]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False, description="WGS 84 latitude")]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False, description="WGS 84 longitude")]


class FixIn(BaseModel):
    """One location fix as every protocol (native, OwnTracks, Traccar/OsmAnd) delivers it."""

    model_config = ConfigDict(extra="ignore", strict=True)
    lat: Latitude
    lon: Longitude
    ts: Timestamp = Field(description="When the device measured the fix (ISO 8601 or epoch seconds)")
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False)
    speed_mps: float | None = Field(default=None, ge=0, le=1000, allow_inf_nan=False)
    heading: float | None = Field(default=None, ge=0, le=360, allow_inf_nan=False)
    altitude_m: float | None = Field(default=None, ge=-1000, le=100_000, allow_inf_nan=False)
    battery: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)


class FixBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    batch_id: str = Field(min_length=1, max_length=100, description="Client-chosen id; a replay stores nothing twice")
    fixes: list[FixIn] = Field(min_length=1, max_length=1000)


class FixAccepted(BaseModel):
    accepted: int
    duplicate: bool = False
    events: list[dict[str, object]] = Field(default_factory=list)


Purpose = Literal["offers", "tasks", "analytics"]


_TARGET_FIELDS = {"fcm_token", "firebase_installation_id"}


class PushTargetIn(BaseModel):
    """Where this device's pushes go: what the app's Firebase SDK gave it, one of the two kinds FCM addresses."""

    model_config = ConfigDict(extra="forbid")
    fcm_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="An FCM registration token (Android FirebaseMessaging.getToken(), iOS Messaging.messaging().token)",
    )
    firebase_installation_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{22}$",
        description="Or a Firebase installation ID (FirebaseInstallations.getId()), 22 characters",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> PushTargetIn:
        if self.fcm_token is not None and self.firebase_installation_id is not None:
            raise ValueError("send fcm_token or firebase_installation_id, not both: a device has one push target")
        return self

    def push_target(self) -> dict[str, str | None]:
        """The device columns: the target, and the kind that decides which field of the FCM message carries it."""
        if self.firebase_installation_id is not None:
            return {"fcm_token": self.firebase_installation_id, "push_target_kind": "fid", "push_channel": "fcm"}
        return {"fcm_token": self.fcm_token, "push_target_kind": "token", "push_channel": "fcm"}


class PushTargetUpdate(PushTargetIn):
    """A new push target (the SDK rotated it) or none (`{"fcm_token": null}`: no pushes, the inbox stays)."""

    @model_validator(mode="after")
    def _one_given(self) -> PushTargetUpdate:
        if len(self.model_fields_set & _TARGET_FIELDS) != 1:
            raise ValueError("send exactly one of fcm_token and firebase_installation_id (null: no push target)")
        return self


class DeviceIn(PushTargetIn):
    platform: Literal["android", "ios", "web"]
    role: Literal["visitor", "staff"] = "visitor"
    locale: str = Field(default="en", min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
    timezone: str = Field(default="Europe/Helsinki", max_length=64)
    consents: dict[Purpose, StrictBool] = Field(default_factory=dict)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=50)
    team: str | None = Field(default=None, max_length=100)
    external_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Id an OwnTracks/Traccar client sends (OwnTracks: 'user/device')",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        time_zone(value)  # an UnknownTimeZone is a ValueError: a 422 naming the field
        return value

    def device_fields(self) -> dict[str, object]:
        """The columns of the device row to insert."""
        return {**self.model_dump(exclude=_TARGET_FIELDS), **self.push_target()}


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64url_key(length: int, what: str) -> AfterValidator:
    def check(value: str) -> str:
        raw = _b64url(value)
        if len(raw) != length:
            raise ValueError(f"{what} must be {length} bytes, base64url-encoded; this is {len(raw)}")
        return value

    return AfterValidator(check)


def _p256_point(value: str) -> str:
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url(value))
    except ValueError as exc:
        raise ValueError("p256dh is not a point on P-256 (uncompressed, 65 bytes)") from exc
    return value


_B64URL = r"^[A-Za-z0-9_-]+={0,2}$"


class WebPushKeys(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    p256dh: Annotated[
        str, Field(pattern=_B64URL, max_length=100), _b64url_key(65, "p256dh"), AfterValidator(_p256_point)
    ] = Field(description="The browser's P-256 public key (base64url, 65 bytes uncompressed)")
    auth: Annotated[str, Field(pattern=_B64URL, max_length=50), _b64url_key(16, "auth")] = Field(
        description="The subscription's authentication secret (base64url, 16 bytes)"
    )


class WebPushSubscriptionIn(BaseModel):
    """A browser's `PushSubscription.toJSON()`, as `pushManager.subscribe({applicationServerKey})` gave it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    endpoint: str = Field(min_length=10, max_length=2048, pattern=r"^https?://", description="The push service URL")
    expirationTime: float | None = Field(default=None, description="Ignored; browsers send null")
    keys: WebPushKeys

    def subscription(self) -> dict[str, str | None]:
        """The device columns: the subscription, switched on, and the channel its pushes now go through."""
        return {
            "webpush_endpoint": self.endpoint,
            "webpush_p256dh": self.keys.p256dh,
            "webpush_auth": self.keys.auth,
            "push_channel": "webpush",
        }

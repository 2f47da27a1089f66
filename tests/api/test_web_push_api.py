"""Registering a browser's Web Push subscription: the shape `PushSubscription.toJSON()` has, and endpoints that
reach public push services only (the webhook rules), except the configured local push service in tests."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifications.webpush import vapid_public_key
from tests.world import World, register


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


P256DH = _b64(
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
)
AUTH = _b64(bytes(range(16)))
PUBLIC = "https://fcm.googleapis.com/fcm/send/abc:def"


def subscription(endpoint: str = PUBLIC, **keys: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": P256DH, "auth": AUTH, **keys}}


async def test_the_vapid_public_key_is_served(client, settings) -> None:
    answer = await client.get("/v1/push/vapid-public-key")
    assert answer.status_code == 200
    key = answer.json()["public_key"]
    assert key == vapid_public_key(settings.vapid_private_key.get_secret_value())
    assert len(base64.urlsafe_b64decode(key + "=")) == 65


async def test_a_subscription_switches_the_device_to_web_push(client, world: World) -> None:
    device = await register(client, world)
    assert (await client.put("/v1/devices/me/web-push", json=subscription(), headers=device)).status_code == 204
    row = (await client.get("/v1/devices/me", headers=device)).json()
    assert (row["push_channel"], row["webpush_endpoint"], row["webpush_active"]) == ("webpush", PUBLIC, True)
    # A new FCM token takes the device back to FCM; forgetting the subscription does too.
    await client.put("/v1/devices/me/fcm-token", json={"fcm_token": "tok-new"}, headers=device)
    assert (await client.get("/v1/devices/me", headers=device)).json()["push_channel"] == "fcm"
    await client.put("/v1/devices/me/web-push", json=subscription(), headers=device)
    assert (await client.delete("/v1/devices/me/web-push", headers=device)).status_code == 204
    row = (await client.get("/v1/devices/me", headers=device)).json()
    assert (row["push_channel"], row["webpush_endpoint"]) == ("fcm", None)


@pytest.mark.parametrize(
    "body",
    [
        subscription(p256dh=_b64(b"\x04" + bytes(63))),  # 64 bytes
        subscription(p256dh=_b64(b"\x04" + bytes(64))),  # 65 bytes, not a point on the curve
        subscription(auth=_b64(bytes(15))),
        subscription(auth="not base64url!"),
        subscription(endpoint="ftp://push.example.org/x"),
        {"endpoint": PUBLIC, "keys": {"p256dh": P256DH}},
        {**subscription(), "extra": 1},
    ],
)
async def test_malformed_subscriptions_are_422(client, world: World, body: dict[str, Any]) -> None:
    device = await register(client, world)
    answer = await client.put("/v1/devices/me/web-push", json=body, headers=device)
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example.org/x",  # not https
        "https://10.0.0.7/push/x",
        "https://127.0.0.1:8443/push/x",
        "https://[::ffff:169.254.169.254]/latest",
        "https://localhost/push/x",
        "https://push.internal/x",
    ],
)
async def test_private_or_plain_endpoints_are_refused(client, world: World, endpoint: str) -> None:
    device = await register(client, world)
    answer = await client.put("/v1/devices/me/web-push", json=subscription(endpoint), headers=device)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] == "endpoint"


async def test_the_local_push_service_is_allowed_outside_production(client, world: World, settings) -> None:
    device = await register(client, world)
    local = subscription(f"{settings.webpush_local_origin}/push/abc")
    assert (await client.put("/v1/devices/me/web-push", json=local, headers=device)).status_code == 204

"""Web Push through the real pipeline: content on enter → notification → `WebPushSender` (pywebpush's aes128gcm,
VAPID) → the local push service (`infra/fake_webpush.py`), which checks the VAPID JWT and decrypts the payload with
the subscription's keys. And the local push service itself: it refuses what a real one would."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from infra.fake_webpush import RunningWebPush, spawn
from notifications.push import ChannelSender, PushMessage
from notifications.webpush import WebPushSender, b64url, new_vapid_private_key
from tests.integration.test_pipeline_inbox import add_content, walk_in
from tests.integration.worker_helpers import run_worker
from tests.world import World, register

SUBJECT = "mailto:ops@example.org"


def raw_public(key: ec.EllipticCurvePrivateKey) -> str:
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url(point)


@pytest.fixture(scope="module")
def push_service(settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWebPush]:
    """The local push service on the port the test settings allow (PLACECAST_WEBPUSH_LOCAL_ORIGIN)."""
    port = urlsplit(settings.webpush_local_origin).port
    with spawn(port, tmp_path_factory.mktemp("webpush")) as fake:
        yield fake


def sender_for(settings) -> WebPushSender:
    return WebPushSender(
        settings.vapid_private_key.get_secret_value(), SUBJECT, local_origin=settings.webpush_local_origin
    )


async def subscribed_device(client, world: World, push_service: RunningWebPush, public_key: str):
    """A device enrolled with an FCM token that then subscribes to Web Push, as the web app does."""
    device = await register(client, world, platform="web", consents={"offers": True})
    subscription = push_service.subscribe(public_key)
    answer = await client.put("/v1/devices/me/web-push", json=subscription, headers=device)
    assert answer.status_code == 204, answer.text
    return device, subscription


async def push_state(app, client, device) -> tuple[str, str | None, datetime | None, bool, str | None]:
    device_id = (await client.get("/v1/devices/me", headers=device)).json()["id"]
    async with app.state.resources.session_factory() as session:
        row = (
            await session.execute(
                text(
                    "SELECT d.status, d.last_error, d.next_attempt_at, v.webpush_active, d.provider_id"
                    " FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
                    " JOIN devices v ON v.id = n.device_id WHERE d.channel = 'fcm' AND n.device_id = :d"
                ),
                {"d": device_id},
            )
        ).one()
    return row[0], row[1], row[2], row[3], row[4]


async def test_an_offer_arrives_encrypted_signed_and_decryptable(client, app, world: World, settings, push_service):
    sender = sender_for(settings)
    title = "Offer " + secrets.token_hex(3)
    await add_content(app, world, title=title, body="Coffee at the third floor")
    device, subscription = await subscribed_device(client, world, push_service, sender.public_key)
    await walk_in(client, device)
    try:
        # Through the worker's own dispatch by channel: this device's FCM token is not used.
        await run_worker(settings, sender=ChannelSender({"webpush": sender}))
    finally:
        await sender.aclose()
    status, _, _, active, provider_id = await push_state(app, client, device)
    assert (status, active) == ("sent", True)
    [message] = push_service.messages(subscription)
    assert provider_id == f"{push_service.origin}/m/{message['id']}"
    payload = message["payload"]
    assert (payload["title"], payload["body"]) == (title, "Coffee at the third floor")
    assert payload["notification_id"] > 0 and payload["data"]["place_id"] == str(world.place_id)
    # TTL (FCM's default, 4 weeks), urgency from the priority, the notification as the collapse topic.
    assert message["ttl"] == 28 * 86400 and message["urgency"] == "high"
    assert message["topic"] == f"n{payload['notification_id']}"
    # VAPID: signed by the server's key for this push service's origin, with our contact.
    assert message["vapid"]["k"] == sender.public_key
    assert message["vapid"]["aud"] == push_service.origin and message["vapid"]["sub"] == SUBJECT
    assert time.time() < message["vapid"]["exp"] <= time.time() + 24 * 3600


async def test_gone_deactivates_that_subscription_only(client, app, world: World, settings, push_service):
    sender = sender_for(settings)
    await add_content(app, world, title="Gone " + secrets.token_hex(3))
    device, subscription = await subscribed_device(client, world, push_service, sender.public_key)
    push_service.answer(subscription, 410)
    await walk_in(client, device)
    try:
        await run_worker(settings, sender=ChannelSender({"webpush": sender}))
    finally:
        await sender.aclose()
    status, error, _, active, _ = await push_state(app, client, device)
    assert status == "failed" and "GONE" in (error or "") and active is False
    # The browser's next subscription turns pushes back on; a late 410 about the old one must not touch it.
    fresh = push_service.subscribe(sender.public_key)
    assert (await client.put("/v1/devices/me/web-push", json=fresh, headers=device)).status_code == 204
    device_id = (await client.get("/v1/devices/me", headers=device)).json()["id"]
    from notifications import delivery_repository

    async with app.state.resources.session_factory() as session, session.begin():
        assert await delivery_repository.deactivate_subscription(session, device_id, subscription["endpoint"]) == 0
        active_now = (
            await session.execute(text("SELECT webpush_active FROM devices WHERE id = :d"), {"d": device_id})
        ).scalar_one()
    assert active_now is True


async def test_too_many_requests_retries_after_retry_after(client, app, world: World, settings, push_service):
    sender = sender_for(settings)
    await add_content(app, world, title="Busy " + secrets.token_hex(3))
    device, subscription = await subscribed_device(client, world, push_service, sender.public_key)
    push_service.answer(subscription, 429, retry_after=120, times=1)
    await walk_in(client, device)
    before = datetime.now(UTC)
    try:
        await run_worker(settings, sender=ChannelSender({"webpush": sender}))
    finally:
        await sender.aclose()
    status, error, next_attempt, active, _ = await push_state(app, client, device)
    assert status == "retry" and "TOO_MANY_REQUESTS" in (error or "") and active is True
    assert next_attempt is not None and next_attempt >= before + timedelta(seconds=120)
    assert push_service.messages(subscription) == []


async def test_a_device_without_a_web_push_sender_fails_with_a_reason(
    client, app, world: World, settings, push_service
):
    await add_content(app, world, title="Nobody " + secrets.token_hex(3))
    device, _ = await subscribed_device(client, world, push_service, sender_for(settings).public_key)
    await walk_in(client, device)
    await run_worker(settings, sender=ChannelSender({}))
    status, error, _, active, _ = await push_state(app, client, device)
    assert status == "failed" and "NO_SENDER" in (error or "") and active is True


def _message(subscription: dict[str, Any], **overrides) -> PushMessage:
    fields = {"title": "t", "body": "b", "channel": "webpush", "collapse_key": "n1", **overrides}
    keys = subscription["keys"]
    return PushMessage(1, subscription["endpoint"], p256dh=keys["p256dh"], auth=keys["auth"], **fields)


async def test_a_private_endpoint_is_refused_on_the_connection(settings) -> None:
    """Not the local push service: the public-only transport refuses a loopback endpoint without sending."""
    sender = WebPushSender(new_vapid_private_key(), SUBJECT)
    fake_keys = {"p256dh": raw_public(ec.generate_private_key(ec.SECP256R1())), "auth": b64url(bytes(16))}
    try:
        [outcome] = await sender.send([_message({"endpoint": "https://127.0.0.1:9/push/x", "keys": fake_keys})])
    finally:
        await sender.aclose()
    assert outcome.status == "failed" and outcome.error_code == "REFUSED"


# The local push service itself: it must refuse what a real push service refuses, or the tests above prove nothing.


def _post(push_service: RunningWebPush, endpoint: str, authorization: str, **headers: str) -> httpx.Response:
    with push_service.client() as http:
        return http.post(endpoint, content=b"", headers={"Authorization": authorization, "TTL": "60", **headers})


def _vapid(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], k: ec.EllipticCurvePrivateKey | None = None) -> str:
    token = jwt.encode(claims, key, algorithm="ES256", headers={"typ": "JWT"})
    return f"vapid t={token},k={raw_public(k or key)}"


def test_the_push_service_checks_vapid(push_service) -> None:
    subscription = push_service.subscribe()
    endpoint = subscription["endpoint"]
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    good = {"aud": push_service.origin, "exp": int(time.time()) + 3600, "sub": SUBJECT}
    assert _post(push_service, endpoint, _vapid(key, good)).status_code == 201
    # Signed by another key than the one it names.
    assert _post(push_service, endpoint, _vapid(key, good, k=other)).status_code == 401
    # Expired, too far ahead, for another origin, without a contact.
    assert _post(push_service, endpoint, _vapid(key, {**good, "exp": int(time.time()) - 10})).status_code == 401
    assert _post(push_service, endpoint, _vapid(key, {**good, "exp": int(time.time()) + 90000})).status_code == 401
    assert _post(push_service, endpoint, _vapid(key, {**good, "aud": "https://push.example"})).status_code == 401
    assert _post(push_service, endpoint, _vapid(key, {**good, "sub": "ops"})).status_code == 401
    assert _post(push_service, endpoint, "WebPush abc").status_code == 401
    # A TTL is required, urgency and topic must be RFC 8030's.
    with push_service.client() as http:
        assert http.post(endpoint, headers={"Authorization": _vapid(key, good)}).status_code == 400
    assert _post(push_service, endpoint, _vapid(key, good), Urgency="urgent").status_code == 400
    assert _post(push_service, endpoint, _vapid(key, good), Topic="x" * 33).status_code == 400
    # A subscription made for one applicationServerKey takes pushes signed by that key only.
    bound = push_service.subscribe(raw_public(key))
    assert _post(push_service, bound["endpoint"], _vapid(key, good)).status_code == 201
    assert _post(push_service, bound["endpoint"], _vapid(other, good)).status_code == 403
    assert _post(push_service, f"{push_service.origin}/push/nobody", _vapid(key, good)).status_code == 404


async def test_the_push_service_decrypts_only_with_the_subscription_keys(push_service) -> None:
    sender = WebPushSender(new_vapid_private_key(), SUBJECT, local_origin=push_service.origin)
    right, other = push_service.subscribe(), push_service.subscribe()
    mixed = {"endpoint": right["endpoint"], "keys": other["keys"]}  # encrypted for another browser
    try:
        ok, wrong = await sender.send([_message(right, title="for you"), _message(mixed)])
    finally:
        await sender.aclose()
    assert ok.status == "sent" and wrong.status == "failed" and "decrypt" in (wrong.reason or "")
    assert [m["payload"]["title"] for m in push_service.messages(right)] == ["for you"]

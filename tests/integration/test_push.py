"""FcmSender with firebase-admin's real client against the local FCM fake over TLS + HTTP/2.

The fake runs in a child process with its own CA, which this process trusts while this module's tests run
(then the environment is restored): httpx (the async path) reads SSL_CERT_FILE when firebase-admin builds its
client, requests (the OAuth2 grant and the threads path) reads REQUESTS_CA_BUNDLE on every request.
No PostGIS or Redis is needed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from firebase_admin import messaging
from google.oauth2 import service_account

from infra.fake_fcm import RunningFake, spawn, write_service_account
from infra.stack import free_port
from notifications.push import DEFAULT_SEND_PATH, FcmSender, PushMessage, SendPath

PROJECT = "placecast-demo"
PATHS: tuple[SendPath, ...] = ("async", "threads")


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def account(port: int, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service-account file whose token_uri is the fake's, as in the demo."""
    path = tmp_path_factory.mktemp("account") / "service-account.json"
    return write_service_account(path, f"https://127.0.0.1:{port}/token", PROJECT)


@pytest.fixture(scope="module")
def fake(port: int, account: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFake]:
    certs = tmp_path_factory.mktemp("certs")
    with spawn(port, certs, service_account=account) as running, pytest.MonkeyPatch.context() as env:
        assert running.tls is not None
        env.setenv("SSL_CERT_FILE", str(running.tls.ca))
        env.setenv("REQUESTS_CA_BUNDLE", str(running.tls.ca))
        yield running


@pytest.fixture(scope="module")
def access_token(fake: RunningFake, account: Path) -> str:
    """A token from the fake's /token, obtained by google-auth exactly as firebase-admin does."""
    credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(account), scopes=["https://www.googleapis.com/auth/firebase.messaging"]
    )
    credentials.refresh(google.auth.transport.requests.Request())
    return str(credentials.token)


@pytest.fixture(scope="module")
async def senders(fake: RunningFake, account: Path) -> AsyncIterator[dict[SendPath, FcmSender]]:
    made = {p: FcmSender(account, base_url=fake.base_url, send_path=p) for p in PATHS}
    yield made
    for fcm in made.values():
        await fcm.aclose()


def received(fake: RunningFake, token: str) -> list[dict[str, Any]]:
    with fake.client() as control:
        return [m for m in control.get("/_fake/messages").json() if m["token"] == token]


def unavailable_answers(fake: RunningFake) -> int:
    with fake.client() as control:
        return int(control.get("/_fake/stats").json().get("status/503", 0))


def message(notification_id: int, token: str, **extra: Any) -> PushMessage:
    return PushMessage(notification_id, token, "Oodi is open", "Come in", {"place": "42"}, **extra)


@pytest.mark.parametrize("path", PATHS)
async def test_a_push_arrives_with_notification_data_android_and_apns_options(
    path: SendPath, senders: dict[SendPath, FcmSender], fake: RunningFake
) -> None:
    high = message(1, f"high-{path}", collapse_key="oodi-offer", ttl_s=3600, deep_link="placecast://offer/7")
    normal = message(2, f"normal-{path}", priority="normal", image_url="https://example.org/oodi.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # e.g. Message.token, deprecated in 7.5 for fid
        outcomes = await senders[path].send([high, normal])

    assert [o.status for o in outcomes] == ["sent", "sent"]
    assert outcomes[0].provider_id is not None
    assert outcomes[0].provider_id.startswith(f"projects/{PROJECT}/messages/")
    [got] = received(fake, f"high-{path}")
    assert got["target"] == "token"  # a registration token, the default kind
    # ALPN gives httpx HTTP/2; requests only speaks HTTP/1.1
    assert got["http"] == {"async": "2", "threads": "1.1"}[path]
    assert got["notification"] == {"title": "Oodi is open", "body": "Come in"}
    assert got["data"] == {"place": "42", "notification_id": "1", "deep_link": "placecast://offer/7"}
    assert got["android"]["priority"] == "high"
    assert got["android"]["collapse_key"] == "oodi-offer"
    assert got["android"]["ttl"] == "3600s"
    headers = got["apns"]["headers"]
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "oodi-offer"
    assert int(headers["apns-expiration"]) == pytest.approx(time.time() + 3600, abs=60)
    [other] = received(fake, f"normal-{path}")
    assert other["android"]["priority"] == "normal"
    assert other["apns"]["headers"]["apns-priority"] == "5"
    assert other["notification"]["image"] == "https://example.org/oodi.png"
    assert other["apns"]["payload"]["aps"]["mutable-content"] == 1


@pytest.mark.parametrize("path", PATHS)
async def test_600_messages_go_in_batches_of_at_most_500_and_all_arrive(
    path: SendPath, senders: dict[SendPath, FcmSender], fake: RunningFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    name = {"async": "send_each_async", "threads": "send_each"}[path]
    original = getattr(messaging, name)

    def counting(messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(messages))
        return original(messages, *args, **kwargs)  # a coroutine for the async path, awaited by the sender

    monkeypatch.setattr(messaging, name, counting)
    outcomes = await senders[path].send([message(i, f"bulk-{path}-{i}") for i in range(600)])

    assert sizes == [500, 100]  # firebase-admin refuses more than 500 in one call
    assert [o.notification_id for o in outcomes] == list(range(600))
    assert {o.status for o in outcomes} == {"sent"}
    with fake.client() as control:
        tokens = {m["token"] for m in control.get("/_fake/messages").json()}
    assert {f"bulk-{path}-{i}" for i in range(600)} <= tokens


@pytest.mark.parametrize(("path", "least_s"), [("async", 0), ("threads", 4)])
async def test_fcm_errors_become_outcomes_per_message(
    path: SendPath, least_s: float, senders: dict[SendPath, FcmSender]
) -> None:
    tokens = [f"{kind}-{path}" for kind in ("ok", "unregistered", "invalid", "quota", "mismatch")] + [""]
    start = time.monotonic()
    outcomes = await senders[path].send([message(i, t) for i, t in enumerate(tokens)])

    # send_each's urllib3 retries the 429 four times, sleeping its Retry-After (1 s) each time; httpx does not
    assert least_s <= time.monotonic() - start < least_s + 2

    pairs = zip(tokens, outcomes, strict=True)
    got = {t.removesuffix(f"-{path}"): (o.status, o.error_code) for t, o in pairs}
    assert got["ok"] == ("sent", None)
    assert got["unregistered"] == ("unregistered", "UNREGISTERED")
    assert got["invalid"] == ("invalid", "INVALID_ARGUMENT")
    assert got["quota"] == ("retry", "QUOTA_EXCEEDED")
    assert outcomes[3].retry_after_s == 1.0
    # our project set-up being wrong must not deactivate the device's token
    assert got["mismatch"] == ("failed", "SENDER_ID_MISMATCH")
    assert got[""][0] == "invalid"  # firebase-admin refuses an empty target before sending


async def test_a_payload_fcm_refuses_fails_without_blaming_the_token(
    senders: dict[SendPath, FcmSender],
) -> None:
    bad = PushMessage(1, "device-ok", "t", "b", {"from": "reserved by FCM"})
    [outcome] = await senders[DEFAULT_SEND_PATH].send([bad])

    assert (outcome.status, outcome.error_code) == ("failed", "INVALID_ARGUMENT")
    assert "from" in (outcome.reason or "")


@pytest.mark.parametrize("path", PATHS)
async def test_a_single_503_is_retried_by_firebase_admin_and_sent(
    path: SendPath, senders: dict[SendPath, FcmSender], fake: RunningFake
) -> None:
    # The fake answers 503 the first time it sees a flaky- token. Both send paths retry 500/503 inside
    # firebase-admin (4 times, backoff 0, 1, 2, 4 s), so the caller sees "sent", never the 503.
    before = unavailable_answers(fake)
    [outcome] = await senders[path].send([message(1, f"flaky-{path}")])

    assert outcome.status == "sent"
    assert len(received(fake, f"flaky-{path}")) == 1
    assert unavailable_answers(fake) == before + 1


@pytest.mark.parametrize(("path", "least_s", "most_s"), [("async", 0, 1.5), ("threads", 2, 5)])
async def test_only_the_threads_path_waits_out_a_503s_retry_after(
    path: SendPath, least_s: float, most_s: float, senders: dict[SendPath, FcmSender], fake: RunningFake
) -> None:
    # httpx's retry in firebase-admin does not honour Retry-After (respect_retry_after_header off) and
    # retries at once; urllib3's, under send_each, sleeps what the server asked for.
    before = unavailable_answers(fake)
    start = time.monotonic()
    [outcome] = await senders[path].send([message(1, f"retryafter-2-{path}")])

    assert outcome.status == "sent"
    assert least_s <= time.monotonic() - start < most_s
    assert unavailable_answers(fake) == before + 1


async def test_a_lasting_5xx_comes_back_as_retry_after_firebase_admin_gives_up(
    senders: dict[SendPath, FcmSender],
) -> None:
    [outcome] = await senders["async"].send([message(1, "unavailable-device")])  # ~7 s of backoff

    assert (outcome.status, outcome.error_code, outcome.retry_after_s) == ("retry", "UNAVAILABLE", None)


async def test_no_oauth2_token_makes_the_whole_batch_retry(fake: RunningFake, tmp_path: Path) -> None:
    nobody = f"https://127.0.0.1:{free_port()}/token"
    unreachable = write_service_account(tmp_path / "sa.json", nobody, PROJECT)
    fcm = FcmSender(unreachable, base_url=fake.base_url)
    try:
        outcomes = await fcm.send([message(1, "device-a"), message(2, "device-b")])
    finally:
        await fcm.aclose()

    assert [(o.status, o.error_code) for o in outcomes] == [("retry", "UNAUTHENTICATED")] * 2
    assert received(fake, "device-a") == []


async def test_a_cold_batch_fetches_a_single_oauth2_token(fake: RunningFake, account: Path) -> None:
    fcm = FcmSender(account, base_url=fake.base_url, send_path="threads")
    with fake.client() as control:
        before = control.get("/_fake/stats").json()["tokens_issued"]
        outcomes = await fcm.send([message(i, f"cold-{i}") for i in range(50)])
        issued = control.get("/_fake/stats").json()["tokens_issued"] - before
    await fcm.aclose()

    assert {o.status for o in outcomes} == {"sent"}
    assert issued == 1


GOOD = {"fid": "device-direct", "notification": {"title": "t", "body": "b"}}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"message": GOOD, "dry_run": True}, "request", 'Unknown name "dry_run"'),
        ({"message": {**GOOD, "priority": "high"}}, "message", 'Unknown name "priority"'),
        ({"message": {**GOOD, "data": {"n": 1}}}, "message.data[n]", "TYPE_STRING"),
        ({"message": {**GOOD, "notification": {"title": 7}}}, "message.notification.title", "7"),
        ({"message": {**GOOD, "android": {"priority": "urgent"}}}, "message.android.priority", "urgent"),
        ({"message": {**GOOD, "apns": {"headers": {"apns-priority": 10}}}}, "message.apns.headers", "10"),
        ({"message": {**GOOD, "topic": "news"}}, "message", "oneof field 'target'"),
        ({"message": {"notification": {"title": "t"}}}, "message", "Recipient of the message is not set"),
    ],
)
def test_the_fake_refuses_a_malformed_message_as_fcm_does(
    fake: RunningFake, access_token: str, body: dict[str, Any], field: str, words: str
) -> None:
    with fake.client() as http:
        answer = http.post(
            f"/v1/projects/{PROJECT}/messages:send",
            json=body,
            headers={"Authorization": f"Bearer {access_token}"},
        )

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert words in error["message"]
    [violations] = [d["fieldViolations"] for d in error["details"] if d["@type"].endswith("rpc.BadRequest")]
    assert violations[0]["field"].startswith(field)


def test_the_fake_wants_a_token_it_issued_for_a_grant_signed_by_the_service_account(
    fake: RunningFake, access_token: str
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": f"firebase-adminsdk-fake@{PROJECT}.iam.gserviceaccount.com",
        "iat": now,
        "exp": now + 600,
    }
    forged = jwt.encode(claims, stranger, algorithm="RS256")
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": forged}
    with fake.client() as http:
        refused_grant = http.post("/token", data=grant)
        no_token = http.post(f"/v1/projects/{PROJECT}/messages:send", json={"message": GOOD})
        made_up = http.post(
            f"/v1/projects/{PROJECT}/messages:send",
            json={"message": GOOD},
            headers={"Authorization": "Bearer ya29.made-up"},
        )

    assert (refused_grant.status_code, refused_grant.json()["error"]) == (400, "invalid_grant")
    assert no_token.status_code == made_up.status_code == 401
    assert made_up.json()["error"]["status"] == "UNAUTHENTICATED"
    assert access_token.startswith("ya29.")  # the genuine grant, from google-auth, was accepted


def test_plain_http_needs_no_certificate(tmp_path: Path) -> None:
    port = free_port()
    with spawn(port, tmp_path, plain_http=True) as running, httpx.Client(base_url=running.base_url) as http:
        assert running.tls is None
        assert http.get("/_fake/stats").status_code == 200

"""Push delivery through firebase-admin's own FCM client: build messages, send in batches, classify outcomes.

Encoding, OAuth2, HTTP/2, retries and error mapping are firebase-admin 7.7's code, used through its public
API. The one thing it has no option for is the FCM endpoint, which tests and the demo point at
`infra/fake_fcm.py`; `_point_at` applies it and is the only place that reaches inside firebase-admin.

What firebase-admin already does before an outcome reaches us (read in its source, checked against the fake):
- `send_each_async` (httpx, HTTP/2 over TLS) retries 500/503 up to 4 times with backoff 0, 1, 2, 4 s and
  ignores `Retry-After`; a single 503 is therefore invisible (sent), and a 429 is never retried.
- `send_each` (requests in a thread per message, HTTP/1.1) retries 500/503 the same way and also sleeps out
  `Retry-After` on 429/503 (urllib3's default), so a quota error blocks that batch for ~4 x Retry-After.
- A 401 makes both refresh the OAuth2 token twice and resend.
Whatever survives that comes back here as "retry" with the server's `Retry-After` when it sent one.

The worker sends with `send_each_async` (HTTP/2, as FCM speaks) in chunks of 50 with up to 100 pushes in flight:
measured against the stand-in answering in 25 ms (uvloop, 3,000 pushes), 1,022-1,067 pushes/s at 0.88 ms of CPU
per push, against 713-846/s at 1.1-1.2 ms for `send_each` (a thread per message, HTTP/1.1) in any of 50/100,
50/200 or 500/500. `bench.push` compares the paths one batch at a time, where they are closer.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from uuid import uuid4

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
from firebase_admin import credentials, exceptions, messaging

FCM_BASE_URL = "https://fcm.googleapis.com"
MAX_BATCH = 500  # send_each and send_each_async refuse more in one call
SendPath = Literal["async", "threads"]  # send_each_async on the caller's loop / send_each in a worker thread
DEFAULT_SEND_PATH: SendPath = "async"  # measured, see the module docstring
PushStatus = Literal["sent", "unregistered", "invalid", "retry", "failed"]
TargetKind = Literal["token", "fid"]
TARGET_KINDS: tuple[TargetKind, ...] = ("token", "fid")
Channel = Literal["fcm", "webpush"]  # which sender a device's pushes go through (devices.push_channel)
CHANNELS: tuple[Channel, ...] = ("fcm", "webpush")
_TARGET_FIELDS = {"message.token", "message.fid"}
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


@dataclass(frozen=True, slots=True)
class PushMessage:
    notification_id: int
    token: str  # what the app registered, of the kind `target_kind` says
    title: str
    body: str
    data: dict[str, str] = field(default_factory=dict)
    image_url: str | None = None
    deep_link: str | None = None
    collapse_key: str | None = None  # a newer push with the same key replaces the older one on the device
    priority: Literal["high", "normal"] = "high"
    ttl_s: int | None = None  # None: FCM's default of 4 weeks
    # "token": an FCM registration token (FirebaseMessaging.getToken()); "fid": a Firebase installation ID
    # (FirebaseInstallations.getId()). FCM addresses each through its own field of the message.
    target_kind: TargetKind = "token"
    # Data only: no notification is shown; the app is woken in the background (iOS `content-available`) with
    # `data`. Title and body stay in the inbox.
    silent: bool = False
    # "webpush": `token` is a Web Push subscription's endpoint URL and these its keys (notifications/webpush.py).
    channel: Channel = "fcm"
    p256dh: str | None = None
    auth: str | None = None


@dataclass(frozen=True, slots=True)
class PushOutcome:
    notification_id: int
    status: PushStatus  # "unregistered" and "invalid" mean: deactivate the token
    provider_id: str | None = None  # FCM's message name
    error_code: str | None = None  # FCM's errorCode (UNREGISTERED, QUOTA_EXCEEDED, ...) or the platform code
    reason: str | None = None
    retry_after_s: float | None = None  # from the response's Retry-After, when it had one


class PushSender(Protocol):
    async def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]: ...


def build_message(msg: PushMessage, android_click_action: str | None = None) -> Any:
    """The `messaging.Message` for one push; the deep link goes in the data, where every app can read it.

    A silent push has no notification block anywhere: Android hands a data-only message to the app, and APNs wants
    `apns-push-type: background`, `content-available` without an alert, and priority 5 (Apple refuses 10 for a
    background push and throttles it anyway), so a silent push is always sent at normal priority.
    """
    data = {**msg.data, "notification_id": str(msg.notification_id)}
    if msg.deep_link:
        data["deep_link"] = msg.deep_link
    priority = "normal" if msg.silent else msg.priority
    apns_headers = {
        "apns-priority": "10" if priority == "high" else "5",
        "apns-push-type": "background" if msg.silent else "alert",
    }
    if msg.collapse_key:
        apns_headers["apns-collapse-id"] = msg.collapse_key
    if msg.ttl_s is not None:  # APNs wants an absolute time; 0 means "now or never", as FCM's ttl 0
        apns_headers["apns-expiration"] = str(int(time.time()) + msg.ttl_s if msg.ttl_s else 0)
    if msg.silent:
        message = messaging.Message(
            data=data,
            android=messaging.AndroidConfig(priority=priority, collapse_key=msg.collapse_key, ttl=msg.ttl_s),
            apns=messaging.APNSConfig(
                headers=apns_headers, payload=messaging.APNSPayload(aps=messaging.Aps(content_available=True))
            ),
        )
        return _addressed(message, msg)
    message = messaging.Message(
        notification=messaging.Notification(title=msg.title, body=msg.body, image=msg.image_url),
        data=data,
        android=messaging.AndroidConfig(
            priority=priority,
            collapse_key=msg.collapse_key,
            ttl=msg.ttl_s,
            notification=messaging.AndroidNotification(
                image=msg.image_url,
                tag=msg.collapse_key,  # replaces the shown notification, as collapse_key does in flight
                click_action=android_click_action if msg.deep_link else None,
            ),
        ),
        apns=messaging.APNSConfig(
            headers=apns_headers,
            # mutable-content lets the app's notification service extension fetch the image
            payload=messaging.APNSPayload(aps=messaging.Aps(mutable_content=True if msg.image_url else None)),
            fcm_options=messaging.APNSFCMOptions(image=msg.image_url) if msg.image_url else None,
        ),
    )
    return _addressed(message, msg)


def _addressed(message: Any, msg: PushMessage) -> Any:
    """The message with the device's target in the field FCM knows that kind of target by.

    firebase-admin 7.x sends `token` (a registration token) and `fid` (an installation ID) alike, but warns on
    every `Message(token=...)` (DeprecationWarning) although FCM still addresses registration tokens by it and most
    apps hold one; assigned after construction, the field is sent without the warning.
    """
    if msg.target_kind == "fid":
        message.fid = msg.token
    else:
        message.token = msg.token
    return message


def _point_at(app: firebase_admin.App, base_url: str) -> None:
    """Send this app's FCM requests to `base_url` (e.g. the local fake) instead of Google.

    firebase-admin has no public option for the FCM endpoint: its messaging service formats
    `_MessagingService.FCM_URL` (https://fcm.googleapis.com/...) with the project id into `_fcm_url` once, at
    creation. We replace that attribute for this app only. The service also mounted a 100-connection retrying
    adapter on its requests session for fcm.googleapis.com alone; mounting that same adapter on the new base
    keeps `send_each` behaving as it does against Google (otherwise: a pool of 10 and warnings).
    """
    base = base_url.rstrip("/")
    if base == FCM_BASE_URL:
        return
    service = messaging._get_messaging_service(app)
    service._fcm_url = f"{base}/v1/projects/{app.project_id}/messages:send"
    session = service._client.session
    session.mount(f"{base}/", session.get_adapter(f"{FCM_BASE_URL}/"))


def retry_after_s(response: Any) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:  # the other form RFC 9110 allows: an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_details(response: Any) -> tuple[str | None, set[str]]:
    """FCM's errorCode and the fields a google.rpc.BadRequest blames, from an error response body."""
    try:
        details = response.json()["error"].get("details", [])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None, set()
    fcm_code = next((d.get("errorCode") for d in details if d.get("@type") == _FCM_ERROR), None)
    blamed = {v.get("field") for d in details if d.get("@type") == _BAD_REQUEST for v in d["fieldViolations"]}
    return fcm_code, blamed


def classify_error(notification_id: int, error: Exception) -> PushOutcome:
    """Map one message's exception from firebase-admin to what the caller should do with the token and job."""
    response = getattr(error, "http_response", None)
    fcm_code, blamed = _error_details(response)
    code = fcm_code or getattr(error, "code", None) or type(error).__name__
    status: PushStatus = "failed"
    http_status = getattr(response, "status_code", 0)
    if isinstance(error, messaging.UnregisteredError):
        status = "unregistered"
    elif isinstance(error, exceptions.InvalidArgumentError):
        # INVALID_ARGUMENT covers both a bad token and a payload we built wrong. Only the first may deactivate
        # the token: a payload bug must not wipe out every device.
        text = str(error).lower()
        if blamed & _TARGET_FIELDS or "registration token" in text or "installation id" in text:
            status = "invalid"
    elif (
        isinstance(
            error,
            exceptions.ResourceExhaustedError  # QUOTA_EXCEEDED is one
            | exceptions.UnavailableError  # also a refused connection
            | exceptions.InternalError
            | exceptions.DeadlineExceededError,
        )
        or http_status >= 500  # e.g. a 502/504 from a proxy, mapped to UNKNOWN
        or (isinstance(error, exceptions.UnknownError) and response is None)  # connection reset and the like
    ):
        status = "retry"
    # SENDER_ID_MISMATCH and THIRD_PARTY_AUTH_ERROR stay "failed": they mean our project or APNs set-up is
    # wrong, and deactivating tokens for that would punish every device for our mistake.
    retry_after = retry_after_s(response) if status == "retry" else None
    return PushOutcome(notification_id, status, None, str(code), str(error) or None, retry_after)


class FcmSender:
    """`PushSender` over FCM HTTP v1 with firebase-admin, one named App per sender.

    The async path keeps an httpx client bound to the event loop it first ran on: use one sender per loop.
    """

    def __init__(
        self,
        service_account_file: str | Path,
        *,
        base_url: str = FCM_BASE_URL,
        send_path: SendPath = DEFAULT_SEND_PATH,
        batch_size: int = MAX_BATCH,
        dry_run: bool = False,
        timeout_s: float = 30.0,
        android_click_action: str | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be within 1..{MAX_BATCH}")
        self.send_path, self.batch_size, self.dry_run = send_path, batch_size, dry_run
        self._click_action = android_click_action
        cert = credentials.Certificate(str(service_account_file))
        name = f"placecast-push-{uuid4().hex[:12]}"
        self.app = firebase_admin.initialize_app(cert, {"httpTimeout": timeout_s}, name=name)
        _point_at(self.app, base_url)

    async def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        """One outcome per message, in order. Batches go one after another, each all at once."""
        built = [(i, msg, build_message(msg, self._click_action)) for i, msg in enumerate(messages)]
        outcomes: dict[int, PushOutcome] = {}
        for start in range(0, len(built), self.batch_size):
            outcomes.update(await self._send_checked(built[start : start + self.batch_size]))
        return [outcomes[i] for i in range(len(messages))]

    async def _send_checked(self, chunk: list[tuple[int, PushMessage, Any]]) -> list[tuple[int, PushOutcome]]:
        """firebase-admin encodes, and so validates, every message of a batch before it sends any, and one bad
        message fails the whole batch with ValueError. Only then are they checked one by one and the good ones
        sent: checking every batch up front would encode each message twice (~6 % of a push's CPU)."""
        try:
            return list(zip((i for i, _, _ in chunk), await self._send_batch(chunk), strict=True))
        except ValueError:
            pass  # nothing was sent
        done: list[tuple[int, PushOutcome]] = []
        ready: list[tuple[int, PushMessage, Any]] = []
        for i, msg, built in chunk:
            try:
                str(built)  # the encoder firebase-admin uses
            except ValueError as exc:
                status: PushStatus = "invalid" if not msg.token else "failed"
                done.append((i, PushOutcome(msg.notification_id, status, error_code="ENCODING", reason=str(exc))))
                continue
            ready.append((i, msg, built))
        if ready:
            done += zip((i for i, _, _ in ready), await self._send_batch(ready), strict=True)
        return done

    async def _fresh_token(self) -> str | None:
        """Refresh the OAuth2 token once, off the event loop, if it is missing or about to expire.

        google-auth refreshes inside every request that finds the token stale, without a lock: send_each's
        threads would each fetch one (5 to 35 for one cold batch in bench.push), and the async path would
        block the event loop for the fetch. Returns why it failed, if it did.
        """
        credential = self.app.credential.get_credential()
        if credential.valid:
            return None
        try:
            await asyncio.to_thread(credential.refresh, google.auth.transport.requests.Request())
        except google.auth.exceptions.GoogleAuthError as exc:
            return f"no OAuth2 token: {exc}"
        return None

    async def _send_batch(self, chunk: list[tuple[int, PushMessage, Any]]) -> list[PushOutcome]:
        if problem := await self._fresh_token():  # a bad service account too: the caller's attempts cap it
            return [PushOutcome(m.notification_id, "retry", error_code="UNAUTHENTICATED", reason=problem)
                    for _, m, _ in chunk]  # fmt: skip
        built = [b for _, _, b in chunk]
        try:
            if self.send_path == "async":
                batch = await messaging.send_each_async(built, dry_run=self.dry_run, app=self.app)
            else:
                batch = await asyncio.to_thread(messaging.send_each, built, self.dry_run, self.app)
        except exceptions.FirebaseError as exc:  # the whole batch, e.g. no OAuth2 token could be had
            return [classify_error(m.notification_id, exc) for _, m, _ in chunk]
        return [
            PushOutcome(m.notification_id, "sent", r.message_id)
            if r.success
            else classify_error(m.notification_id, r.exception)
            for (_, m, _), r in zip(chunk, batch.responses, strict=True)
        ]

    def close(self) -> None:
        """Release the app and its HTTP clients; call it outside a running event loop (or use `aclose`)."""
        firebase_admin.delete_app(self.app)

    async def aclose(self) -> None:
        # firebase-admin closes its httpx client with asyncio.run(), which a running loop refuses.
        await asyncio.to_thread(self.close)


class BoundedSender:
    """A `PushSender` that bounds the pushes in flight through the one it wraps (closing that one is its owner's
    business). Many concurrent jobs must not pile their pushes onto one HTTP/2 connection at once: measured,
    firebase-admin's async path slows down past ~100 requests in flight. The bound counts pushes, not
    batches, so a job with 3 pushes does not hold a turn meant for 50; batches go first come, first served (a
    small one never overtakes a larger one waiting for room), and one larger than the bound goes alone."""

    def __init__(self, sender: PushSender, in_flight: int) -> None:
        self._sender = sender
        self._limit = in_flight
        self._in_flight = 0
        self._waiting: deque[object] = deque()
        self._changed = asyncio.Condition()

    async def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        n, me = len(messages), object()
        async with self._changed:
            self._waiting.append(me)
            try:
                await self._changed.wait_for(
                    lambda: self._waiting[0] is me and (self._in_flight == 0 or self._in_flight + n <= self._limit)
                )
            finally:  # served or cancelled: either way the next in line may go now
                self._waiting.remove(me)
                self._changed.notify_all()
            self._in_flight += n
        try:
            return await self._sender.send(messages)
        finally:
            async with self._changed:
                self._in_flight -= n
                self._changed.notify_all()


class ChannelSender:
    """A `PushSender` that hands each message to the sender of its channel (FCM, Web Push) and answers in order.
    A channel with no sender configured fails its messages with a reason, the subscription untouched."""

    def __init__(self, senders: dict[Channel, PushSender]) -> None:
        self.senders = senders

    async def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        by_channel: dict[Channel, list[int]] = {}
        for i, msg in enumerate(messages):
            by_channel.setdefault(msg.channel, []).append(i)
        outcomes: list[PushOutcome | None] = [None] * len(messages)

        async def one(channel: Channel, indexes: list[int]) -> None:
            sender = self.senders.get(channel)
            if sender is None:
                for i in indexes:
                    reason = f"no {channel} sender is configured"
                    outcomes[i] = PushOutcome(
                        messages[i].notification_id, "failed", error_code="NO_SENDER", reason=reason
                    )
                return
            for i, outcome in zip(indexes, await sender.send([messages[i] for i in indexes]), strict=True):
                outcomes[i] = outcome

        await asyncio.gather(*(one(channel, indexes) for channel, indexes in by_channel.items()))
        return [o for o in outcomes if o is not None]

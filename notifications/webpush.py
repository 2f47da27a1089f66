"""Web Push delivery (RFC 8030 protocol, RFC 8291 aes128gcm message encryption, RFC 8292 VAPID) behind `PushSender`.

pywebpush does the cryptography: `WebPusher.encode` encrypts each payload for its subscription (a fresh ECDH key
and salt per message, aes128gcm), and py_vapid (pywebpush's VAPID library) signs the JWT. The request itself goes
out through httpx rather than pywebpush's `webpush()` (requests, one blocking call per message) or `webpush_async`
(aiohttp, a session per call unless given one), for two reasons:
- the endpoint is written by a browser, so like a webhook it may only reach public addresses, checked on the
  connection itself (`notifications/egress.PublicOnlyTransport`: resolved here, every address public, DNS
  rebinding included); neither of pywebpush's clients can be told that;
- one VAPID JWT per push service origin, reused until an hour before it expires (pywebpush signs one per message:
  an ECDSA signature each time).
`bench.push` measures this path against pywebpush's own `webpush()` in threads and `webpush_async`.

Outcomes as FCM's (`notifications/push.py`): 201/202 sent (the push service's Location names the message);
404/410 the subscription is gone ("unregistered": that subscription is switched off, never a newer one);
429, 503 and other 5xx retried no sooner than Retry-After; 413 and other 4xx failed with the service's reason
(401/403 mean our VAPID key or claims are wrong, which is no reason to switch a subscription off).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPusher

from notifications.egress import PublicOnlyTransport
from notifications.push import PushMessage, PushOutcome, PushStatus, retry_after_s

DEFAULT_TTL_S = 28 * 86400  # FCM's default: 4 weeks
# RFC 8291: one aes128gcm record of at most 4096 bytes reaches the browser; 86 of them are header, 16 the tag and
# at least 1 the padding delimiter.
MAX_PAYLOAD_BYTES = 3993
JWT_LIFETIME_S = 12 * 3600  # RFC 8292 allows at most 24 h
JWT_RENEW_BEFORE_S = 3600
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
Urgency = Literal["very-low", "low", "normal", "high"]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_vapid_private_key() -> str:
    """A fresh VAPID key: base64url of the raw 32-byte P-256 private value (what py_vapid's `from_string` reads)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def vapid_public_key(private_key: str) -> str:
    """The application server key a browser subscribes with (`applicationServerKey`): base64url of the
    uncompressed P-256 point, 65 bytes."""
    from cryptography.hazmat.primitives import serialization

    public = Vapid.from_string(private_key).public_key
    return b64url(public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


def topic(collapse_key: str) -> str:
    """RFC 8030 `Topic`: at most 32 characters of the URL-safe base64 alphabet; other keys are hashed to one."""
    if _TOPIC.fullmatch(collapse_key):
        return collapse_key
    return b64url(hashlib.sha256(collapse_key.encode()).digest())[:32]


def urgency(msg: PushMessage) -> Urgency:
    """RFC 8030 `Urgency`: a silent push may wait for a better moment; others follow the FCM priority."""
    if msg.silent:
        return "low"
    return "high" if msg.priority == "high" else "normal"


def payload(msg: PushMessage) -> bytes:
    """What the web app's service worker receives (`event.data.json()`): it shows title and body unless silent."""
    body: dict[str, Any] = {
        "notification_id": msg.notification_id,
        "title": msg.title,
        "body": msg.body,
        "data": msg.data,
    }
    if msg.deep_link:
        body["deep_link"] = msg.deep_link
    if msg.image_url:
        body["image"] = msg.image_url
    if msg.silent:
        body["silent"] = True
    return orjson.dumps(body)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class WebPushSender:
    """`PushSender` for Web Push subscriptions (`PushMessage.channel == "webpush"`: `token` is the endpoint URL,
    `p256dh` and `auth` the subscription's keys).

    `local_origin`: a push service on this machine or network (the development stand-in, `infra/fake_webpush.py`)
    that may be reached although it is not public; every other endpoint goes through the public-only transport.
    """

    def __init__(
        self,
        vapid_private_key: str,
        subject: str,
        *,
        local_origin: str | None = None,
        timeout_s: float = 30.0,
        max_connections: int = 100,
    ) -> None:
        self._vapid = Vapid.from_string(vapid_private_key)
        self.public_key = vapid_public_key(vapid_private_key)
        self.subject = subject
        self._jwts: dict[str, tuple[str, float]] = {}  # audience -> (Authorization header, expiry)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._public = httpx.AsyncClient(
            transport=PublicOnlyTransport(),
            trust_env=False,
            follow_redirects=False,
            timeout=timeout_s,
            limits=limits,
        )
        self._local_origin = origin(local_origin) if local_origin else None
        self._local = httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout_s, limits=limits)

    def authorization(self, audience: str) -> str:
        """`vapid t=<JWT>,k=<public key>` for this push service origin, signed once per `JWT_LIFETIME_S`."""
        now = time.time()
        cached = self._jwts.get(audience)
        if cached is not None and cached[1] - JWT_RENEW_BEFORE_S > now:
            return cached[0]
        expiry = int(now) + JWT_LIFETIME_S
        header = self._vapid.sign({"aud": audience, "exp": expiry, "sub": self.subject})["Authorization"]
        self._jwts[audience] = (header, expiry)
        return str(header)

    def request(self, msg: PushMessage) -> tuple[str, bytes, dict[str, str]]:
        """Endpoint, encrypted body and headers of one push (pywebpush's encoder, aes128gcm)."""
        data = payload(msg)
        if len(data) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {len(data)} bytes; Web Push carries at most {MAX_PAYLOAD_BYTES}")
        subscription = {"endpoint": msg.token, "keys": {"p256dh": msg.p256dh or "", "auth": msg.auth or ""}}
        body = WebPusher(subscription).encode(data, "aes128gcm")["body"]
        headers = {
            "TTL": str(DEFAULT_TTL_S if msg.ttl_s is None else msg.ttl_s),
            "Urgency": urgency(msg),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self.authorization(origin(msg.token)),
        }
        if msg.collapse_key:
            headers["Topic"] = topic(msg.collapse_key)
        return msg.token, body, headers

    async def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        """One outcome per message, in order, all at once (the caller bounds how many are in flight)."""
        return list(await asyncio.gather(*(self._send_one(m) for m in messages)))

    async def _send_one(self, msg: PushMessage) -> PushOutcome:
        try:
            endpoint, body, headers = self.request(msg)
        except Exception as exc:  # a payload too large, keys that are no P-256 point: this push can never go
            return PushOutcome(msg.notification_id, "failed", error_code="ENCODING", reason=str(exc)[:300])
        client = self._local if self._local_origin and origin(endpoint) == self._local_origin else self._public
        try:
            response = await client.post(endpoint, content=body, headers=headers)
        except httpx.ConnectError as exc:
            if str(exc).startswith("refused:"):  # not a public address: it will not become one by waiting
                return PushOutcome(msg.notification_id, "failed", error_code="REFUSED", reason=str(exc)[:300])
            return PushOutcome(msg.notification_id, "retry", error_code="UNAVAILABLE", reason=repr(exc)[:300])
        except httpx.HTTPError as exc:  # timeouts, resets: the push service may come back
            return PushOutcome(msg.notification_id, "retry", error_code="UNAVAILABLE", reason=repr(exc)[:300])
        return classify(msg.notification_id, response)

    async def aclose(self) -> None:
        await self._public.aclose()
        await self._local.aclose()


def classify(notification_id: int, response: httpx.Response) -> PushOutcome:
    """What a push service's answer means for the delivery and the subscription."""
    code = response.status_code
    if code in (200, 201, 202):
        return PushOutcome(notification_id, "sent", response.headers.get("Location"))
    reason = f"{code} {response.reason_phrase}: {response.text[:200]}".strip()
    status: PushStatus = "failed"
    if code in (404, 410):
        status = "unregistered"
    elif code in (429, 500, 502, 503, 504):
        status = "retry"
    error_code = {404: "NOT_FOUND", 410: "GONE", 413: "PAYLOAD_TOO_LARGE", 429: "TOO_MANY_REQUESTS"}.get(
        code, f"HTTP_{code}"
    )
    retry = retry_after_s(response) if status == "retry" else None
    return PushOutcome(notification_id, status, None, error_code, reason, retry)

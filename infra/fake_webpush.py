"""A local Web Push service for the demo and tests, as `infra/fake_fcm.py` is for FCM: what a browser's push service
does with an application server's push, checked as strictly as the RFCs say.

- A test "browser" creates a subscription: `POST /_fake/webpush/subscriptions` (optional JSON
  `{"applicationServerKey": "<base64url VAPID public key>"}`, as `pushManager.subscribe` takes it) answers
  `PushSubscription.toJSON()`: `{"endpoint": ".../push/<id>", "expirationTime": null, "keys": {"p256dh", "auth"}}`.
  The service keeps the subscription's private key and auth secret, as the browser would.
- `POST /push/<id>` is RFC 8030's push: `TTL` is required (400 without), `Urgency` one of RFC 8030's four, `Topic` at
  most 32 base64url characters; `Authorization: vapid t=<JWT>,k=<key>` (RFC 8292) is required and checked: an ES256
  signature by `k`, `aud` this service's origin, `exp` in the future and at most 24 h ahead, `sub` a mailto: or https:
  contact (401 otherwise; 403 if the subscription was made for another `applicationServerKey`). The body must be
  aes128gcm (RFC 8291), at most 4096 bytes (413), and is decrypted with the subscription's keys (400 if it cannot be).
  Accepted: 201 with `Location`. An unknown subscription: 404.
- `PUT /_fake/webpush/subscriptions/<id>/answer` `{"status": 410|429|503|..., "retry_after": N, "times": n}` makes
  the next n pushes to it (every one when `times` is null) answer that status (with `Retry-After: N`); `{"status":
  null}` clears it. A 410 also forgets the subscription, as a push service does once a browser unsubscribed.
- `GET /_fake/webpush/messages[?subscription=<id>]` lists what arrived, decrypted: payload (JSON when it is), TTL,
  urgency, topic, the VAPID claims and key; a newer message with the same topic marks the older one `replaced`.
  `DELETE` clears them; `GET /_fake/stats` counts answers.

Run: `python -m infra.fake_webpush --port P`, or `spawn(port)` from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.fake_fcm import _orphaned

LOOPBACK = "127.0.0.1"
MAX_BODY = 4096  # RFC 8291: push services need accept no more
MAX_JWT_LIFETIME_S = 24 * 3600  # RFC 8292 section 2
_URGENCIES = {"very-low", "low", "normal", "high"}
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SUBJECT = re.compile(r"(mailto:\S+@\S+|https://\S+)")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    server_key: str | None  # the applicationServerKey it was made for, if any
    answer: int | None = None
    retry_after: int | None = None
    times: int | None = None  # answers left; None: every time

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)


@dataclass
class FakeWebPush:
    origin: str
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    async def subscribe(self, request: Request) -> Response:
        body = await request.body()
        options = json.loads(body) if body else {}
        server_key = options.get("applicationServerKey")
        sub = Subscription(
            secrets.token_urlsafe(12), ec.generate_private_key(ec.SECP256R1()), os.urandom(16), server_key
        )
        self.subscriptions[sub.id] = sub
        return JSONResponse(
            {
                "endpoint": f"{self.origin}/push/{sub.id}",
                "expirationTime": None,
                "keys": {"p256dh": sub.p256dh, "auth": b64url(sub.auth)},
            },
            status_code=201,
        )

    async def set_answer(self, request: Request) -> Response:
        sub = self.subscriptions.get(request.path_params["id"])
        if sub is None:
            return JSONResponse({"error": "no such subscription"}, status_code=404)
        wanted = await request.json()
        sub.answer, sub.retry_after, sub.times = wanted.get("status"), wanted.get("retry_after"), wanted.get("times")
        return Response(status_code=204)

    def _refuse(self, status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
        self.stats[str(status)] += 1
        return JSONResponse({"code": status, "reason": reason}, status_code=status, headers=headers)

    def _vapid(self, authorization: str, sub: Subscription) -> tuple[dict[str, Any], str] | Response:
        """The JWT's claims and key of a valid `vapid t=...,k=...` header, or the refusal."""
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return self._refuse(401, "Authorization must be 'vapid t=<JWT>,k=<key>' (RFC 8292)")
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, key = parts.get("t"), parts.get("k")
        if not token or not key:
            return self._refuse(401, "vapid authorization needs t and k")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        except ValueError:
            return self._refuse(401, "k is not a P-256 public key")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token, public, algorithms=["ES256"], audience=self.origin, options={"require": ["aud", "exp", "sub"]}
            )
        except jwt.PyJWTError as exc:
            return self._refuse(401, f"invalid VAPID JWT: {exc}")
        if header.get("typ", "JWT").upper() != "JWT":
            return self._refuse(401, "the VAPID token must be a JWT")
        if claims["exp"] > time.time() + MAX_JWT_LIFETIME_S:
            return self._refuse(401, "exp is more than 24 hours ahead")
        if not _SUBJECT.fullmatch(str(claims["sub"])):
            return self._refuse(401, "sub must be a mailto: or https: contact")
        if sub.server_key is not None and b64url_decode(sub.server_key) != b64url_decode(key):
            return self._refuse(403, "the subscription was made for another applicationServerKey")
        return claims, key

    async def push(self, request: Request) -> Response:
        sub = self.subscriptions.get(request.path_params["id"])
        if sub is None:
            return self._refuse(404, "no such subscription")
        checked = self._vapid(request.headers.get("authorization", ""), sub)
        if isinstance(checked, Response):
            return checked
        claims, key = checked
        ttl = request.headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            return self._refuse(400, "TTL is required: a number of seconds (RFC 8030 section 5.2)")
        urgency = request.headers.get("urgency", "normal")
        if urgency not in _URGENCIES:
            return self._refuse(400, f"Urgency must be one of {sorted(_URGENCIES)}")
        topic = request.headers.get("topic")
        if topic is not None and not _TOPIC.fullmatch(topic):
            return self._refuse(400, "Topic is at most 32 characters of the URL-safe base64 alphabet")
        if sub.answer is not None and sub.times != 0:
            status, retry_after = sub.answer, sub.retry_after
            if sub.times is not None:
                sub.times -= 1
            if status == 410:
                self.subscriptions.pop(sub.id, None)
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            return self._refuse(status, "answer set through /_fake/webpush", headers)
        body = await request.body()
        if len(body) > MAX_BODY:
            return self._refuse(413, f"payload of {len(body)} bytes; at most {MAX_BODY}")
        payload: Any = None
        if body:
            if request.headers.get("content-encoding") != "aes128gcm":
                return self._refuse(415, "Content-Encoding must be aes128gcm (RFC 8291)")
            try:
                plain = http_ece.decrypt(body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm")
            except Exception as exc:
                return self._refuse(400, f"cannot decrypt with the subscription's keys: {exc!r}")
            try:
                payload = json.loads(plain)
            except ValueError:
                payload = plain.decode(errors="replace")
        message_id = secrets.token_urlsafe(9)
        if topic is not None:
            for old in self.messages:
                if old["subscription"] == sub.id and old["topic"] == topic:
                    old["replaced"] = True
        self.messages.append(
            {
                "id": message_id,
                "subscription": sub.id,
                "endpoint": f"{self.origin}/push/{sub.id}",
                "ttl": int(ttl),
                "urgency": urgency,
                "topic": topic,
                "vapid": {"aud": claims["aud"], "sub": claims["sub"], "exp": claims["exp"], "k": key},
                "payload": payload,
                "replaced": False,
                "received_at": time.time(),
            }
        )
        self.stats["201"] += 1
        return Response(status_code=201, headers={"Location": f"{self.origin}/m/{message_id}", "TTL": ttl})

    async def list_messages(self, request: Request) -> Response:
        wanted = request.query_params.get("subscription")
        return JSONResponse([m for m in self.messages if wanted is None or m["subscription"] == wanted])

    async def clear_messages(self, request: Request) -> Response:
        self.messages.clear()
        return Response(status_code=204)

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse({"subscriptions": len(self.subscriptions), "answers": dict(self.stats)})


def create_app(origin: str) -> Starlette:
    fake = FakeWebPush(origin.rstrip("/"))
    routes = [
        Route("/push/{id}", fake.push, methods=["POST"]),
        Route("/_fake/webpush/subscriptions", fake.subscribe, methods=["POST"]),
        Route("/_fake/webpush/subscriptions/{id}/answer", fake.set_answer, methods=["PUT"]),
        Route("/_fake/webpush/messages", fake.list_messages, methods=["GET"]),
        Route("/_fake/webpush/messages", fake.clear_messages, methods=["DELETE"]),
        Route("/_fake/stats", fake.get_stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake
    return app


@dataclass
class RunningWebPush:
    """The local push service in a child process; `origin` is what PLACECAST_WEBPUSH_LOCAL_ORIGIN takes."""

    origin: str
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.origin, timeout=10, trust_env=False)

    def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """What a browser's `pushManager.subscribe` would give the app: `PushSubscription.toJSON()`."""
        body = {"applicationServerKey": application_server_key} if application_server_key else {}
        with self.client() as http:
            answer = http.post("/_fake/webpush/subscriptions", json=body)
            answer.raise_for_status()
            subscription: dict[str, Any] = answer.json()
            return subscription

    def answer(self, subscription: dict[str, Any], status: int | None, **options: Any) -> None:
        sub_id = subscription["endpoint"].rsplit("/", 1)[1]
        with self.client() as http:
            http.put(f"/_fake/webpush/subscriptions/{sub_id}/answer", json={"status": status, **options})

    def messages(self, subscription: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        params = {"subscription": subscription["endpoint"].rsplit("/", 1)[1]} if subscription else None
        with self.client() as http:
            found: list[dict[str, Any]] = http.get("/_fake/webpush/messages", params=params).json()
            return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RunningWebPush:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(port: int, log_dir: Path, *, timeout_s: float = 20.0) -> RunningWebPush:
    """Start `python -m infra.fake_webpush` on loopback and return once it answers."""
    log_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "infra.fake_webpush", "--port", str(port)]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    log_path = log_dir / f"fake_webpush-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    running = RunningWebPush(f"http://{LOOPBACK}:{port}", proc)
    deadline = time.monotonic() + timeout_s
    with running.client() as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http.get("/_fake/stats").status_code == 200:
                    return running
            except httpx.TransportError:
                time.sleep(0.05)
    running.stop()
    raise RuntimeError(f"fake Web Push did not start on port {port}: {log_path.read_text(errors='replace')[-2000:]}")


def main(argv: list[str] | None = None) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--origin", help="the origin VAPID tokens must name (default http://HOST:PORT)")
    opts = parser.parse_args(argv)
    origin = opts.origin or f"http://{opts.host}:{opts.port}"
    config = Config()
    config.bind, config.accesslog, config.loglevel = [f"{opts.host}:{opts.port}"], None, "WARNING"
    config.keep_alive_timeout, config.keep_alive_max_requests = 300, 10**9
    print(f"fake Web Push on {origin}", flush=True)
    asyncio.run(serve(create_app(origin), config, shutdown_trigger=_orphaned))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()

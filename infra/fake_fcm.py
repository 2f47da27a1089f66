"""A local stand-in for FCM: the HTTP v1 `messages:send` API, its OAuth2 token endpoint and documented errors.

firebase-admin talks to it exactly as to Google (the base URL is the only difference), so tests and the demo
exercise the real client: message encoding, OAuth2 JWT-bearer grant, HTTP/2 over TLS, retries, error mapping.

Failures are chosen by the device token (the message's `token` or `fid`), so a test needs no side channel:
`unregistered-` 404 UNREGISTERED, `invalid-` 400 INVALID_ARGUMENT, `quota-` 429 QUOTA_EXCEEDED with
`Retry-After: 1`, `flaky-` 503 UNAVAILABLE the first time that exact token is seen, `retryafter-N-` the same
with `Retry-After: N`, and every time: `mismatch-` 403 SENDER_ID_MISMATCH, `thirdparty-` 401
THIRD_PARTY_AUTH_ERROR, `internal-` 500 INTERNAL, `unavailable-` 503 UNAVAILABLE.
Targets are checked as FCM tells the two kinds apart: a `fid` must be a Firebase installation ID (22 characters of
base64url), and a `token` that is one is refused (INVALID_ARGUMENT naming the field, as for a malformed target).
A background push (`apns-push-type: background`) must be what APNs accepts: `content-available: 1`, no alert,
sound or badge, no notification block for FCM to turn into one, and `apns-priority` 5.
Control API: `GET|DELETE /_fake/messages`, `GET /_fake/stats`. Run: `python -m infra.fake_fcm --port P
--cert-dir DIR [--plain-http] [--service-account FILE] [--latency-ms N] [--record FILE]`, or `spawn(...)` from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME_S = 3600
LOOPBACK = "127.0.0.1"


def _kinds(kind: str, names: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), kind)


# The Message resource of FCM v1 as far as firebase-admin can produce it. A value is either a field kind or
# the name of a nested schema; "struct" is a free JSON object (APNs payload, web notification).
_SCHEMAS: dict[str, dict[str, str]] = {
    "request": {"message": "message", "validate_only": "bool"},
    "message": {
        **_kinds("string", "name token fid topic condition"),
        **{k: k for k in ("notification", "android", "webpush", "apns", "fcm_options")},
        "data": "string_map",
    },
    "notification": _kinds("string", "title body image"),
    "android": {
        **_kinds("string", "collapse_key restricted_package_name"),
        **_kinds("bool", "direct_boot_ok bandwidth_constrained_ok restricted_satellite_ok"),
        **{"priority": "priority", "ttl": "duration", "data": "string_map", "fcm_options": "fcm_options"},
        "notification": "struct",  # AndroidNotification: many fields, checked by the SDK that builds it
    },
    "apns": {**_kinds("string_map", "headers"), "payload": "struct", "live_activity_token": "string"},
    "webpush": {**_kinds("string_map", "headers data"), "notification": "struct"},
    "fcm_options": _kinds("string", "analytics_label image link"),
}
_SCHEMAS["apns"]["fcm_options"] = _SCHEMAS["webpush"]["fcm_options"] = "fcm_options"
_TARGETS = ("token", "fid", "topic", "condition")
FCM_INVALID = {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}


@dataclass(frozen=True)
class _Fault:
    http: int
    status: str
    code: str  # FCM's errorCode
    message: str
    retry_after: int | None = None
    once: bool = False  # only the first time this exact token is seen


_DOWN = "The service is currently unavailable."
_BAD_JSON = "Invalid JSON payload received."
_FAULTS = {
    "unregistered-": _Fault(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    "invalid-": _Fault(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not valid"),
    "quota-": _Fault(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for the target.", 1),
    "flaky-": _Fault(503, "UNAVAILABLE", "UNAVAILABLE", _DOWN, once=True),
    "mismatch-": _Fault(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
    "thirdparty-": _Fault(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Auth error from APNS"),
    "internal-": _Fault(500, "INTERNAL", "INTERNAL", "Internal error encountered."),
    "unavailable-": _Fault(503, "UNAVAILABLE", "UNAVAILABLE", _DOWN),
}
_RETRY_AFTER = re.compile(r"retryafter-(\d+)-")
_INSTALLATION_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def _google_error(http: int, status: str, text: str, extra: list[Any], retry: int | None = None) -> Response:
    headers = {"Retry-After": str(retry)} if retry is not None else None
    body = {"error": {"code": http, "message": text, "status": status, "details": extra}}
    return JSONResponse(body, status_code=http, headers=headers)


def _bad_request(field: str, message: str, *details: dict[str, str]) -> Response:
    violation = {"@type": BAD_REQUEST, "fieldViolations": [{"field": field, "description": message}]}
    return _google_error(400, "INVALID_ARGUMENT", message, [*details, violation])


def _snake(name: str) -> str:  # Google's JSON parser takes lowerCamelCase and proto names alike
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _kind_problem(value: Any, kind: str, where: str) -> tuple[str, str] | None:
    if kind in _SCHEMAS:
        return _check(value, kind, where)
    if kind == "string_map" and isinstance(value, dict):
        bad = next((k for k, v in value.items() if not isinstance(v, str)), None)
        if bad is None:
            return None
        return f"{where}[{bad}]", f"Invalid value at '{where}[{bad}]' (TYPE_STRING), {json.dumps(value[bad])}"
    ok = {
        "string": isinstance(value, str),
        "bool": isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string_list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "struct": isinstance(value, dict),
        "priority": isinstance(value, str) and value.upper() in ("NORMAL", "HIGH"),
        "duration": isinstance(value, str) and re.fullmatch(r"\d+(\.\d{1,9})?s", value) is not None,
    }.get(kind, False)
    return None if ok else (where, f"Invalid value at '{where}' ({kind}), {json.dumps(value)}")


def _check(obj: Any, schema: str, path: str) -> tuple[str, str] | None:
    """First problem of a JSON object against a schema as (field path, Google's wording), or None."""
    if not isinstance(obj, dict):
        return path, f"Invalid value at '{path}' (type.googleapis.com/{schema}), {json.dumps(obj)}"
    for raw, value in obj.items():
        if (kind := _SCHEMAS[schema].get(_snake(raw))) is None:
            where = path or "request"
            return where, f"{_BAD_JSON} Unknown name \"{raw}\" at '{where}': Cannot find field."
        if value is not None and (problem := _kind_problem(value, kind, f"{path}.{_snake(raw)}".lstrip("."))):
            return problem
    return None


def _kind_fault(message: dict[str, Any]) -> Response | None:
    """A registration token sent as `fid`, or an installation ID sent as `token`: FCM refuses the target."""
    if (fid := message.get("fid")) is not None and not _INSTALLATION_ID.fullmatch(fid):
        return _bad_request("message.fid", "The installation ID is not a valid installation ID", FCM_INVALID)
    if (token := message.get("token")) is not None and _INSTALLATION_ID.fullmatch(token):
        return _bad_request("message.token", "The registration token is not a valid FCM token", FCM_INVALID)
    return None


def _background_problem(message: dict[str, Any]) -> str | None:
    """Why APNs would refuse this as a background push (Apple: "Pushing background updates to your App")."""
    apns = message.get("apns") or {}
    headers = apns.get("headers") or {}
    if headers.get("apns-push-type") != "background":
        return None
    aps = (apns.get("payload") or {}).get("aps") or {}
    if message.get("notification") or any(k in aps for k in ("alert", "sound", "badge")):
        return "A background push must not show anything: no notification, alert, sound or badge"
    if aps.get("content-available") != 1:
        return "A background push needs aps content-available: 1"
    if headers.get("apns-priority", "10") != "5":
        return "A background push must be sent with apns-priority 5"
    return None


class FakeFcm:
    """The server's state: issued access tokens, tokens already seen, accepted messages and counters."""

    def __init__(
        self, service_account: Path | None = None, latency_ms: float = 0, keep: int = 10**5, record: Path | None = None
    ) -> None:
        self.latency_s = latency_ms / 1000  # FCM answers in tens of ms; at 0 a benchmark measures only CPU
        # Every accepted message also appended to this file (a JSON line each): what a restart of the server
        # would forget (the cluster's fault drills restart everything and then count the pushes).
        self.record = record.open("a", buffering=1) if record is not None else None
        self.access_tokens: dict[str, float] = {}
        self.seen: set[str] = set()
        self.peers: set[tuple[Any, ...]] = set()
        self.messages: deque[dict[str, Any]] = deque(maxlen=keep)
        self.stats: Counter[str] = Counter()
        self.account: dict[str, Any] | None = None
        self.key: Any = None
        if service_account is not None:
            self.account = json.loads(service_account.read_text())
            private = serialization.load_pem_private_key(self.account["private_key"].encode(), None)
            self.key = private.public_key()

    def _grant_problem(self, assertion: str) -> str | None:
        try:  # google-auth signs with the service account's key; its `aud` is always Google's token URL
            if self.key is None:
                claims = jwt.decode(assertion, options={"verify_signature": False})
            else:
                claims = jwt.decode(assertion, self.key, ["RS256"], options={"verify_aud": False})
        except jwt.PyJWTError as exc:
            return f"Invalid JWT: {exc}"
        if self.account is not None and claims.get("iss") != self.account["client_email"]:
            return "Invalid JWT: iss is not this server's service account"
        return None

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != JWT_BEARER:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if problem := self._grant_problem(form.get("assertion", "")):
            return JSONResponse({"error": "invalid_grant", "error_description": problem}, 400)
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = time.time() + TOKEN_LIFETIME_S
        self.stats["tokens_issued"] += 1
        return JSONResponse({"access_token": token, "expires_in": TOKEN_LIFETIME_S, "token_type": "Bearer"})

    def _fault(self, field: str, target: str) -> Response | None:
        first_time = target not in self.seen
        self.seen.add(target)
        if m := _RETRY_AFTER.match(target):
            fault: _Fault | None = _Fault(503, "UNAVAILABLE", "UNAVAILABLE", _DOWN, int(m[1]), once=True)
        else:
            fault = next((f for prefix, f in _FAULTS.items() if target.startswith(prefix)), None)
        if fault is None or (fault.once and not first_time):
            return None
        if fault.code == "INVALID_ARGUMENT":  # FCM names the field it refuses, here the target
            return _bad_request(f"message.{field}", fault.message, FCM_INVALID)
        details = [{"@type": FCM_ERROR, "errorCode": fault.code}]
        return _google_error(fault.http, fault.status, fault.message, details, fault.retry_after)

    async def send(self, request: Request) -> Response:
        self.stats["requests"] += 1
        self.stats[f"http/{request.scope.get('http_version')}"] += 1
        self.peers.add(tuple(request.scope.get("client") or ()))  # one client address and port per connection
        # Accepted (and recorded) on arrival, answered after the latency: a client that dies waiting for the
        # answer has still sent the push, as with FCM, so a resend shows up here as a repeat.
        response = await self._send(request, request.path_params["project"])
        self.stats[f"status/{response.status_code}"] += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return response

    async def _send(self, request: Request, project: str) -> Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.access_tokens.get(bearer, 0) < time.time():
            return _google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials", [])
        if self.account is not None and project != self.account["project_id"]:
            denied = f"Permission 'cloudmessaging.messages.create' denied on resource 'projects/{project}'"
            return _google_error(403, "PERMISSION_DENIED", denied, [])
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return _bad_request("", f"{_BAD_JSON} {exc}")
        if problem := _check(body, "request", ""):
            return _bad_request(*problem)
        message = body.get("message") or {}
        targets = [t for t in _TARGETS if message.get(t)]
        if not targets:
            return _bad_request("message", "Recipient of the message is not set.")
        if len(targets) > 1:
            return _bad_request("message", f"oneof field 'target' is already set. Cannot set '{targets[1]}'")
        data = message.get("data") or {}
        if reserved := [k for k in data if k in ("from", "gcm") or k.startswith("google")]:
            return _bad_request("message.data", f"Invalid data payload key: {reserved[0]}", FCM_INVALID)
        target = targets[0]
        if target in ("token", "fid") and (fault := self._fault(target, message[target]) or _kind_fault(message)):
            return fault
        if refusal := _background_problem(message):
            return _bad_request("message.apns", refusal, FCM_INVALID)
        name = f"projects/{project}/messages/0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"
        self.stats["accepted"] += 1
        record = {k: message.get(k) for k in ("notification", "data", "android", "apns", "webpush")}
        record |= {"name": name, "target": target, "token": message[target], "received_at": time.time()}
        record |= {
            "validate_only": bool(body.get("validate_only")),
            "http": request.scope.get("http_version"),
        }
        self.messages.append(record)
        if self.record is not None:
            self.record.write(json.dumps(record) + "\n")
        return JSONResponse({"name": name})

    async def list_messages(self, request: Request) -> Response:
        return JSONResponse(list(self.messages))

    async def clear_messages(self, request: Request) -> Response:
        self.messages.clear()
        return Response(status_code=204)

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse({**self.stats, "stored": len(self.messages), "connections": len(self.peers)})


def create_app(service_account: Path | None = None, latency_ms: float = 0, record: Path | None = None) -> Starlette:
    """The ASGI app; with a service-account file it checks grant signatures and the project id; with `record`
    every accepted message is appended to that file too."""
    fake = FakeFcm(service_account, latency_ms, record=record)
    routes = [
        Route("/v1/projects/{project}/messages:send", fake.send, methods=["POST"]),
        Route("/token", fake.token, methods=["POST"]),
        Route("/_fake/messages", fake.list_messages, methods=["GET"]),
        Route("/_fake/messages", fake.clear_messages, methods=["DELETE"]),
        Route("/_fake/stats", fake.get_stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake
    return app


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # what clients trust: SSL_CERT_FILE for httpx, REQUESTS_CA_BUNDLE for requests
    cert: Path
    key: Path


def _certificate(subject: str, issuer: str, key: Any, signer: Any, extensions: list[Any]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=isinstance(extension, x509.BasicConstraints))
    return builder.sign(signer, hashes.SHA256())


def ensure_certificate(cert_dir: Path) -> TlsFiles:
    """A private CA and a leaf for 127.0.0.1/localhost in `cert_dir`, reused while valid for another day.

    A CA plus a leaf rather than one self-signed leaf: strict verifiers (OpenSSL's X509_STRICT, the default
    from Python 3.13) refuse a leaf that is its own trust anchor.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(cert_dir / "ca.pem", cert_dir / "server.pem", cert_dir / "server-key.pem")
    if all(p.exists() for p in (files.ca, files.cert, files.key)):
        expires = x509.load_pem_x509_certificate(files.cert.read_bytes()).not_valid_after_utc
        if expires > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
            return files
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = "Placecast fake FCM test CA"
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, [
        x509.BasicConstraints(ca=True, path_length=0),
        x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # signs certs and CRLs
        x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
    ])  # fmt: skip
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address(LOOPBACK))]
    leaf = _certificate("localhost", ca_name, key.public_key(), ca_key, [
        x509.BasicConstraints(ca=False, path_length=None),
        x509.SubjectAlternativeName(names),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
    ])  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _CLEAR)
    for path, data in ((files.key, key_pem), (files.cert, _pem(leaf)), (files.ca, _pem(ca))):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600 if path == files.key else 0o644)
        tmp.replace(path)  # atomic, so a server starting meanwhile never reads half a file
    return files


_CLEAR = serialization.NoEncryption()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_service_account(path: Path, token_uri: str, project_id: str = "placecast-demo") -> Path:
    """A service-account JSON file with a fresh RSA key whose `token_uri` is the fake server's `/token`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = f"firebase-adminsdk-fake@{project_id}.iam.gserviceaccount.com"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _CLEAR).decode()
    info = {
        **{"type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20)},
        **{"private_key": pem, "client_email": email, "client_id": str(secrets.randbelow(10**21))},
        **{"auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri},
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    path.chmod(0o600)  # it holds a private key
    return path


@dataclass
class RunningFake:
    """A fake FCM server in a child process; `base_url` is what FcmSender's base URL setting takes."""

    base_url: str
    tls: TlsFiles | None
    process: subprocess.Popen[bytes]

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def client(self) -> httpx.Client:
        """A client for the control API that trusts the fake's CA (without touching the environment)."""
        verify = ssl.create_default_context(cafile=str(self.tls.ca)) if self.tls else True
        return httpx.Client(base_url=self.base_url, verify=verify, timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RunningFake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(
    port: int, cert_dir: Path, *, plain_http: bool = False, service_account: Path | None = None,
    latency_ms: float = 0, timeout_s: float = 20.0,
) -> RunningFake:  # fmt: skip
    """Start `python -m infra.fake_fcm` and return once it answers (the certificate is made here first)."""
    tls = None if plain_http else ensure_certificate(cert_dir)
    cert_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "infra.fake_fcm", "--port", str(port), "--cert-dir", str(cert_dir)]
    args += ["--plain-http"] if plain_http else []
    args += ["--service-account", str(service_account)] if service_account else []
    args += ["--latency-ms", str(latency_ms)] if latency_ms else []
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    log_path = cert_dir / f"fake_fcm-{port}.log"
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    fake = RunningFake(f"{'http' if plain_http else 'https'}://{LOOPBACK}:{port}", tls, proc)
    deadline = time.monotonic() + timeout_s
    with fake.client() as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http.get("/_fake/stats").status_code == 200:
                    return fake
            except httpx.TransportError:
                time.sleep(0.05)
    fake.stop()
    output = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"fake FCM did not start on port {port}: {output}")


async def _orphaned() -> None:
    """Returns when the process that started us is gone, so a crashed test run leaves no server behind."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110  (no event to wait for: nothing tells us)
        await asyncio.sleep(0.5)


def service_env(base_url: str, service_account: Path, ca: Path) -> dict[str, str]:
    """The environment that points Placecast's worker (firebase-admin) at this server instead of Google's:
    httpx (the async send path) trusts `SSL_CERT_FILE`, requests (the OAuth2 grant) `REQUESTS_CA_BUNDLE`."""
    return {
        "PLACECAST_FCM_CREDENTIALS_FILE": str(service_account),
        "PLACECAST_FCM_BASE_URL": base_url,
        "SSL_CERT_FILE": str(ca),
        "REQUESTS_CA_BUNDLE": str(ca),
    }


@contextmanager
def local_fcm(folder: Path, *, latency_ms: float = 0) -> Iterator[tuple[RunningFake, dict[str, str]]]:
    """A running server over TLS + HTTP/2 with its own service account, and the `service_env` for it."""
    from infra.stack import free_port

    port = free_port()
    account = write_service_account(folder / "service-account.json", f"https://127.0.0.1:{port}/token")
    with spawn(port, folder / "certs", service_account=account, latency_ms=latency_ms) as fake:
        assert fake.tls is not None
        yield fake, service_env(fake.base_url, account, fake.tls.ca)


def main(argv: list[str] | None = None) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--cert-dir", type=Path, default=Path("var/fake_fcm"))
    parser.add_argument("--plain-http", action="store_true", help="HTTP/1.1 without TLS")
    parser.add_argument("--service-account", type=Path, help="check grants against this file's key")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay every messages:send answer")
    parser.add_argument("--record", type=Path, help="append every accepted message to this file (JSON lines)")
    opts = parser.parse_args(argv)
    config = Config()
    config.bind, config.accesslog, config.loglevel = [f"{opts.host}:{opts.port}"], None, "WARNING"
    # Google keeps idle connections for minutes; hypercorn's 5 s and 1,000 requests would make clients race
    # a closing connection (a spurious "Server disconnected") far more often than FCM does.
    config.keep_alive_timeout, config.keep_alive_max_requests = 300, 10**9
    if not opts.plain_http:
        tls = ensure_certificate(opts.cert_dir)
        config.certfile, config.keyfile = str(tls.cert), str(tls.key)
    print(f"fake FCM on {'http' if opts.plain_http else 'https'}://{opts.host}:{opts.port}", flush=True)
    app = create_app(opts.service_account, opts.latency_ms, opts.record)
    asyncio.run(serve(app, config, shutdown_trigger=_orphaned))  # type: ignore[arg-type]  # SIGTERM: default


if __name__ == "__main__":
    main()

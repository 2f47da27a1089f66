"""Outgoing webhook requests reach the public internet only (no SSRF into our own network).

Webhook URLs are written by organisation administrators, and the worker that posts to them sits next to
PostgreSQL, Redis and (in the cloud) an instance metadata service. Unless `webhook_allow_private_networks` is set
(tests, or a deployment whose receivers are on its own network), a webhook may only reach globally routable
addresses:
- on save, a URL whose host is an IP literal or a local name outside that is refused (422) — a clear early answer;
  an IPv6 address is judged on the IPv4 address it carries (mapped, compatible, NAT64, 6to4, Teredo), and legacy
  IPv4 spellings (2130706433, 0x7f.1) on the address they stand for;
- on every send, the connection itself is checked: the host is resolved here and the socket is opened to an
  address that was checked, so a name that resolves (or re-resolves, DNS rebinding) to 127.0.0.1, 10.x, 169.254.x
  or ::1 is refused. TLS still verifies the certificate for the name in the URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

_LOCAL_NAMES = ("localhost", ".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
# NAT64 prefixes (RFC 6052, RFC 8215): the well-known one carries the IPv4 address in its last 32 bits; the
# local-use /48 reaches a network of its operator's choosing, where the address may sit anywhere: never public.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
# Legacy IPv4 spellings that inet_aton (and so a resolver) reads as an address: 2130706433, 0x7f.1, 0177.0.0.1.
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches, however it is spelled: IPv4-mapped (::ffff:a.b.c.d),
    IPv4-compatible (::a.b.c.d, also :: and ::1), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:aabb:ccdd::/48) and
    Teredo (2001::/32, the client's address); None for a native IPv6 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    if value >> 32 == 0 or address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_global and not address.is_multicast


def public_address(ip: str) -> bool:
    """Globally routable unicast: not loopback, private, link-local, CGNAT, multicast, reserved or unspecified,
    judged on the IPv4 address an IPv6 one carries (a private IPv4 target stays private however it is spelled)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return False
        embedded = embedded_ipv4(address)
        if embedded is not None and not _global(embedded):
            return False
        if address.ipv4_mapped is not None:  # the socket connects to the IPv4 address itself
            return True
    return _global(address)


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a URL host names without DNS: an IP literal, or a legacy IPv4 spelling inet_aton accepts."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be public, judged from the URL alone (names are checked again on every send)."""
    try:
        host = (httpx.URL(url).host or "").rstrip(".").lower()
    except httpx.InvalidURL as error:
        return f"not a URL the webhook client can send to: {error}"
    if not host:
        return "the URL has no host"
    address = ip_literal(host)
    if address is None:
        if host == "localhost" or host.endswith(_LOCAL_NAMES[1:]) or "." not in host:
            return f"{host} is a local name; webhooks go to public addresses"
        return None
    if not public_address(str(address)):
        shown = host if str(address) == host else f"{host} ({address})"
        return f"{shown} is not a public address; webhooks go to public addresses"
    return None


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects only to an address it checked: every address must be public."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refused = [a for a in addresses if not public_address(a)]
        if refused or not addresses:
            shown = ", ".join(refused) or "nothing"
            raise httpcore.ConnectError(f"refused: {host} resolves to {shown}, not a public address")
        return await self._inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("refused: webhooks do not go to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport on a connection pool whose network backend is `PublicOnlyBackend`.

    httpx has no option for the network backend; its pool is rebuilt here with the same TLS context, the one
    place that reaches inside httpx (0.28, pinned).
    """

    def __init__(self) -> None:
        super().__init__(trust_env=False)  # no proxy from the environment: it would connect on our behalf
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._pool._ssl_context,
            max_connections=100,  # httpx's defaults
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=PublicOnlyBackend(),
        )


def webhook_client(allow_private_networks: bool) -> httpx.AsyncClient:
    """The client the worker posts webhooks with: never follows redirects, never uses environment proxies."""
    transport = httpx.AsyncHTTPTransport(trust_env=False) if allow_private_networks else PublicOnlyTransport()
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False)

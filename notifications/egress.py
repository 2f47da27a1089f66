"""Outgoing webhook requests reach the public internet only (no SSRF into our own network).

Webhook URLs are written by organisation administrators, and the worker that posts to them sits next to
PostgreSQL, Redis and (in the cloud) an instance metadata service. Unless `webhook_allow_private_networks` is set
(tests, or a deployment whose receivers are on its own network), a webhook may only reach globally routable
addresses:
- on save, a URL whose host is an IP literal or a local name outside that is refused (422) — a clear early answer;
- on every send, the connection itself is checked: the host is resolved here and the socket is opened to an
  address that was checked, so a name that resolves (or re-resolves, DNS rebinding) to 127.0.0.1, 10.x, 169.254.x
  or ::1 is refused. TLS still verifies the certificate for the name in the URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

_LOCAL_NAMES = ("localhost", ".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def public_address(ip: str) -> bool:
    """Globally routable unicast: not loopback, private, link-local, CGNAT, multicast, reserved or unspecified."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be public, judged from the URL alone (names are checked again on every send)."""
    host = (httpx.URL(url).host or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host == "localhost" or host.endswith(_LOCAL_NAMES[1:]) or "." not in host:
            return f"{host} is a local name; webhooks go to public addresses"
        return None
    if not public_address(host):
        return f"{host} is not a public address; webhooks go to public addresses"
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

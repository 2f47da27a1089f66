"""Who is on the other end: the client's address and scheme, from trusted reverse proxies' headers only.

uvicorn is started with `--no-proxy-headers` (`placecast up`, `infra.stack.start_api`): its default believes
X-Forwarded-For from loopback, so anything on the machine could name the address that login throttling and
enrolment limits count. Here the socket's peer is the client unless it is one of `settings.trusted_proxies`; then
X-Forwarded-For is read from the right, skipping trusted proxies, and the first other hop is the client (hops left
of it were written by the client itself and prove nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address

from starlette.requests import Request

Networks = Sequence[IPv4Network | IPv6Network]
MAX_HOP = 64  # an address never needs more; bounds what a Redis key name can carry


def _trusted(host: str, networks: Networks) -> bool:
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _peer(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _peer_trusted(request: Request) -> Networks | None:
    networks: Networks = request.app.state.settings.trusted_proxies
    return networks if networks and _trusted(_peer(request), networks) else None


def client_host(request: Request) -> str:
    """The client's address as far as trusted proxies vouch for it."""
    peer = _peer(request)
    networks = _peer_trusted(request)
    if networks is None:
        return peer
    hops = [hop.strip() for header in request.headers.getlist("x-forwarded-for") for hop in header.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop[:MAX_HOP]
    return hops[0][:MAX_HOP] if hops else peer


def is_https(request: Request) -> bool:
    """Whether the client's own connection is TLS (a trusted proxy terminating TLS says so in X-Forwarded-Proto)."""
    if _peer_trusted(request) is not None:
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        if forwarded in ("http", "https"):
            return forwarded == "https"
    return request.url.scheme == "https"

"""The client's address and scheme: X-Forwarded-For and X-Forwarded-Proto count only through trusted proxies."""

from __future__ import annotations

from ipaddress import ip_network
from types import SimpleNamespace

from starlette.requests import Request

from infra.proxy import client_host, is_https


def request(peer: str, trusted: list[str], headers: dict[str, str], scheme: str = "http") -> Request:
    settings = SimpleNamespace(trusted_proxies=[ip_network(t) for t in trusted])
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "scheme": scheme,
        "server": ("api", 80),
        "client": (peer, 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": SimpleNamespace(state=SimpleNamespace(settings=settings)),
    }
    return Request(scope)


def test_nothing_is_trusted_by_default() -> None:
    spoofed = request("127.0.0.1", [], {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert client_host(spoofed) == "127.0.0.1"
    assert not is_https(spoofed)


def test_a_trusted_proxy_names_the_client() -> None:
    proxied = request("10.0.0.2", ["10.0.0.0/24"], {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert client_host(proxied) == "203.0.113.9"
    assert is_https(proxied)


def test_hops_the_client_wrote_itself_are_ignored() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended the address it saw, then a second proxy its own.
    chain = request("10.0.0.2", ["10.0.0.0/24"], {"X-Forwarded-For": "1.2.3.4, 198.51.100.7, 10.0.0.3"})
    assert client_host(chain) == "198.51.100.7"


def test_an_untrusted_peer_cannot_use_the_headers() -> None:
    outsider = request("198.51.100.7", ["10.0.0.0/24"], {"X-Forwarded-For": "10.0.0.5", "X-Forwarded-Proto": "https"})
    assert client_host(outsider) == "198.51.100.7"
    assert not is_https(outsider)


def test_only_trusted_hops_falls_back_to_the_first() -> None:
    internal = request("10.0.0.2", ["10.0.0.0/24"], {"X-Forwarded-For": "10.0.0.9, 10.0.0.3"})
    assert client_host(internal) == "10.0.0.9"
    assert client_host(request("10.0.0.2", ["10.0.0.0/24"], {})) == "10.0.0.2"

"""Webhooks reach public addresses only: refused on save and, whatever a name resolves to, on every send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from notifications.egress import public_address, url_problem, webhook_client
from tests.integration.webhook_helpers import Receiver, deliveries_of, enqueue, seed_events, send_due_now, subscribe


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud instance metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "fe80::1",
        "fd00::1",
    ],
)
def test_addresses_of_our_own_network_are_not_public(ip: str) -> None:
    assert not public_address(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "93.184.216.34", "2001:4860:4860::8888"])
def test_internet_addresses_are_public(ip: str) -> None:
    assert public_address(ip)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:5432/",
        "http://127.0.0.1:55432/",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "http://redis/",
        "http://printer.local/",
    ],
)
def test_urls_into_our_own_network_are_refused_from_the_url_alone(url: str) -> None:
    assert url_problem(url)


def test_public_names_pass_the_url_check() -> None:
    assert url_problem("https://hooks.example.org/placecast?token=x") is None


async def test_saving_a_webhook_to_the_metadata_service_is_a_422(
    app, client, orgs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.state.settings, "webhook_allow_private_networks", False)
    _, headers = await orgs()
    for url in ("http://169.254.169.254/latest/meta-data/", "http://localhost:8000/admin"):
        answer = await client.post("/admin/v1/webhooks", json={"url": url}, headers=headers)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["field"] == "url"
    assert (await client.get("/admin/v1/webhooks", headers=headers)).json()["items"] == []
    answer = await client.post("/admin/v1/webhooks", json={"url": "https://hooks.example.org/x"}, headers=headers)
    assert answer.status_code == 201


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_connection_into_our_own_network_is_refused(receiver: Receiver, host: str) -> None:
    path = receiver.path()
    url = receiver.url(path).replace("127.0.0.1", host)
    async with webhook_client(allow_private_networks=False) as http:
        with pytest.raises(httpx.ConnectError, match="not a public address"):
            await http.post(url, content=b"{}")
    assert receiver.received(path) == []
    async with webhook_client(allow_private_networks=True) as http:  # the receiver itself works
        assert (await http.post(url, content=b"{}")).status_code == 200


async def test_a_delivery_to_our_own_network_is_refused_and_recorded_on_every_send(
    app, client, orgs, receiver: Receiver
) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    hook = await subscribe(client, headers, receiver.url(path), [])  # saved: these tests allow private networks
    _, _, events = await seed_events(app, organisation_id, ["enter"])
    await enqueue(app, organisation_id, events)

    async with webhook_client(allow_private_networks=False) as http:
        await send_due_now(app, http)
    [delivery] = await deliveries_of(app, hook["id"])
    assert delivery.status == "pending" and "not a public address" in delivery.last_error
    assert receiver.received(path) == []

    async with webhook_client(allow_private_networks=True) as http:
        await send_due_now(app, http, now=datetime.now(UTC) + timedelta(hours=1))
    assert len(receiver.received(path)) == 1

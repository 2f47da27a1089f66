"""Push delivery through the real firebase-admin sender and the FCM-compatible server: what FCM answers
becomes delivery state — sent, token deactivated, or retried no sooner than Retry-After."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from infra.fake_fcm import RunningFake, spawn, write_service_account
from infra.stack import free_port
from notifications.push import FcmSender
from tests.integration.test_pipeline_inbox import add_content, walk_in
from tests.integration.worker_helpers import run_worker
from tests.world import World, register


@pytest.fixture(scope="module")
def fcm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningFake, Path]]:
    port = free_port()
    account = write_service_account(tmp_path_factory.mktemp("sa") / "sa.json", f"https://127.0.0.1:{port}/token")
    with (
        spawn(port, tmp_path_factory.mktemp("certs"), service_account=account) as fake,
        pytest.MonkeyPatch.context() as env,
    ):
        assert fake.tls is not None
        env.setenv("SSL_CERT_FILE", str(fake.tls.ca))
        env.setenv("REQUESTS_CA_BUNDLE", str(fake.tls.ca))
        yield fake, account


async def delivery_of(app, device_headers, client) -> tuple[str, str | None, datetime | None, bool]:
    device_id = (await client.get("/v1/devices/me", headers=device_headers)).json()["id"]
    async with app.state.resources.session_factory() as session:
        row = (
            await session.execute(
                text(
                    "SELECT d.status, d.last_error, d.next_attempt_at, v.fcm_token_active FROM deliveries d"
                    " JOIN notifications n ON n.id = d.notification_id JOIN devices v ON v.id = n.device_id"
                    " WHERE d.channel = 'fcm' AND n.device_id = :d"
                ),
                {"d": device_id},
            )
        ).one()
    return row[0], row[1], row[2], row[3]


async def test_fcm_answers_become_delivery_state(client, app, world: World, settings, fcm) -> None:
    fake, account = fcm
    await add_content(app, world, title="Offer " + secrets.token_hex(3))
    devices = {
        kind: await register(client, world, consents={"offers": True}, fcm_token=f"{kind}-{secrets.token_hex(4)}")
        for kind in ("fine", "unregistered", "quota")
    }
    for headers in devices.values():
        await walk_in(client, headers)
    sender = FcmSender(account, base_url=fake.base_url)
    try:
        before = datetime.now(UTC)
        await run_worker(settings, sender=sender)
    finally:
        await sender.aclose()

    status, _, _, active = await delivery_of(app, devices["fine"], client)
    assert (status, active) == ("sent", True)

    status, error, _, active = await delivery_of(app, devices["unregistered"], client)
    assert status == "failed" and "UNREGISTERED" in (error or "") and active is False

    status, error, next_attempt, active = await delivery_of(app, devices["quota"], client)
    assert status == "retry" and "QUOTA_EXCEEDED" in (error or "") and active is True
    assert next_attempt is not None and next_attempt >= before + timedelta(seconds=1)  # Retry-After: 1
    # A deactivated token is not tried again, and the app's next token turns pushes back on.
    fresh = await client.put(
        "/v1/devices/me/fcm-token", json={"fcm_token": "fine-new"}, headers=devices["unregistered"]
    )
    assert fresh.status_code == 204
    assert (await client.get("/v1/devices/me", headers=devices["unregistered"])).json()["fcm_token_active"] is True

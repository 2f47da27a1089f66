"""Test set-up: a throw-away PostGIS cluster and Redis on free loopback ports, migrated from nothing.

Nothing here touches the demo data of `infra/run.sh`: its own folder, its own ports.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from infra.stack import free_port, private_stack
from notifications.webpush import new_vapid_private_key

# In CI the property tests replay a fixed set of examples (a red build must be reproducible); locally they explore.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# Settings need every secret (there is no public default). A test that makes Settings() before the stack's fixture
# ran gets random ones of its own, never the developer's var/secrets/; the stack's fixture replaces them.
for _name in ("PLACECAST_SECRET_KEY", "PLACECAST_PG_PASSWORD", "PLACECAST_REDIS_PASSWORD"):
    os.environ.setdefault(_name, secrets.token_urlsafe(32))
# Likewise the VAPID key Web Push signs with (a P-256 key, not random text).
os.environ.setdefault("PLACECAST_VAPID_PRIVATE_KEY", new_vapid_private_key())


@pytest.fixture(scope="session")
def test_env() -> Iterator[dict[str, str]]:
    with private_stack("placecast-test-", fast_unsafe=True) as (_, env):
        # Webhook receivers in tests listen on loopback; tests/integration/test_egress.py checks the refusal.
        env["PLACECAST_WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"
        # The suite's device clock runs days behind the real one (tests/world.py), so nothing would push under the
        # default 10-minute late limit; tests of late fixes set their organisation's own limit.
        env["PLACECAST_LATE_FIX_AFTER_S"] = str(30 * 86400)
        # The suite enrols hundreds of devices from loopback in a minute; tests of the limits lower them.
        env["PLACECAST_ENROLMENTS_PER_ADDRESS"] = env["PLACECAST_ENROLMENTS_PER_KEY"] = "1000000"
        # Likewise failed logins from loopback (the contract run tries hundreds); tests of the limit set it.
        env["PLACECAST_LOGIN_FAILURES_PER_ADDRESS"] = "1000000"
        # The local push service (infra/fake_webpush.py) Web Push tests start on this port: its loopback endpoints
        # may be registered (tests/integration/test_webpush.py starts it).
        env["PLACECAST_WEBPUSH_LOCAL_ORIGIN"] = f"http://127.0.0.1:{free_port()}"
        os.environ.update(env)
        from infra.settings import get_settings

        get_settings.cache_clear()
        from infra.migrate import upgrade

        upgrade(get_settings().sync_database_url)
        yield env


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]):
    from infra.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
async def app(settings):
    from infra.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app) -> AsyncIterator[object]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
async def org(app):
    """A fresh organisation with an editor key; returns (organisation_id, headers)."""
    import secrets

    from kernel.uow import unit_of_work
    from services.orgs import create_api_key, create_organisation

    slug = "org-" + secrets.token_hex(4)
    async with unit_of_work(app.state.resources.session_factory) as uow:
        organisation_id = await create_organisation(uow.session, name=slug, slug=slug)
        key = await create_api_key(uow.session, organisation_id=organisation_id, name="test")
    return organisation_id, {"X-API-Key": key}


from tests.world import world  # noqa: E402,F401  (the `world` fixture for every test folder)

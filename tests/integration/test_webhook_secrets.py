"""Webhook signing secrets are stored sealed: a copy of the database does not let anyone sign as Placecast."""

from __future__ import annotations

from sqlalchemy import text

from kernel.sealing import Sealer
from notifications.webhooks import send_due, verify
from tests.integration.webhook_helpers import deliveries_of, enqueue, seed_events, send_due_now, subscribe


async def stored_secret(app, subscription_id: int) -> str:
    async with app.state.resources.session_factory() as session:
        row = await session.execute(
            text("SELECT secret FROM webhook_subscriptions WHERE id = :s"), {"s": subscription_id}
        )
        return str(row.scalar_one())


async def test_the_database_holds_the_secret_sealed_and_requests_are_signed_with_it(
    app, client, orgs, receiver, http
) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    hook = await subscribe(client, headers, receiver.url(path), [])
    stored = await stored_secret(app, hook["id"])
    assert hook["secret"] not in stored and Sealer.is_sealed(stored)

    _, _, events = await seed_events(app, organisation_id, ["enter"])
    await enqueue(app, organisation_id, events)
    await send_due_now(app, http)
    [request] = receiver.received(path)
    assert verify(hook["secret"], request.headers["x-placecast-signature"], request.body)


async def test_another_secret_key_cannot_open_it_and_says_why(app, client, orgs, receiver, http) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    hook = await subscribe(client, headers, receiver.url(path), [])
    _, _, events = await seed_events(app, organisation_id, ["enter"])
    await enqueue(app, organisation_id, events)

    await send_due(app.state.resources.session_factory, http, sealer=Sealer("a different PLACECAST_SECRET_KEY"))
    assert receiver.received(path) == []  # nothing signed with a wrong key
    [delivery] = await deliveries_of(app, hook["id"])
    assert delivery.status == "pending" and "PLACECAST_SECRET_KEY" in delivery.last_error


async def test_a_secret_stored_before_sealing_still_signs(app, client, orgs, receiver, http) -> None:
    organisation_id, headers = await orgs()
    path = receiver.path()
    hook = await subscribe(client, headers, receiver.url(path), [])
    async with app.state.resources.session_factory() as session, session.begin():
        await session.execute(
            text("UPDATE webhook_subscriptions SET secret = 'whsec_legacy' WHERE id = :s"), {"s": hook["id"]}
        )
    _, _, events = await seed_events(app, organisation_id, ["enter"])
    await enqueue(app, organisation_id, events)
    await send_due_now(app, http)
    [request] = receiver.received(path)
    assert verify("whsec_legacy", request.headers["x-placecast-signature"], request.body)

"""A fix, its device-state lock and its events are one transaction, whatever ran (or did not run) before.

The hot path sends its statements through asyncpg directly; if they ran before the session's first statement
they would autocommit, releasing the lock at once (concurrent requests of one device then interleave: double
enters, a second open visit — seen as a 500 under load) and committing fixes without their events.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from kernel.uow import UnitOfWork
from mobile_api.api import transition_config
from services.devices import DeviceAuth
from services.tracking import FixRecord, record_fixes
from tests.api.conftest import INSIDE, World, register


async def test_a_single_fix_is_one_transaction_with_its_state_lock(app, client, world: World) -> None:
    headers = await register(client, world)
    device_id = (await client.get("/v1/devices/me", headers=headers)).json()["id"]
    device = DeviceAuth(device_id, world.organisation_id, "visitor")
    index = await app.state.resources.indexes.get(world.organisation_id)
    fix = FixRecord(datetime.now(UTC) - timedelta(minutes=1), INSIDE[0], INSIDE[1], 5.0)

    async with app.state.resources.session_factory() as session, session.begin():
        # Nothing ran in this session yet: the fix's own statements come first, as for a cached credential.
        outcome = await record_fixes(
            UnitOfWork(session), device=device, fixes=[fix], index=index, config=transition_config(app.state.settings)
        )
        assert [e.kind for e in outcome.events] == ["enter"]

        async with app.state.resources.engine.connect() as other:  # another request, before this one commits
            with pytest.raises(DBAPIError, match="could not obtain lock"):
                await other.execute(
                    text("SELECT 1 FROM device_states WHERE device_id = :d FOR UPDATE NOWAIT"), {"d": device_id}
                )
        async with app.state.resources.engine.connect() as other:
            stored = await other.execute(text("SELECT count(*) FROM fixes WHERE device_id = :d"), {"d": device_id})
            assert stored.scalar_one() == 0  # not visible until the events commit with it

    async with app.state.resources.engine.connect() as other:
        stored = await other.execute(text("SELECT count(*) FROM fixes WHERE device_id = :d"), {"d": device_id})
        assert stored.scalar_one() == 1

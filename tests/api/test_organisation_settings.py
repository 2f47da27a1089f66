"""`/admin/v1/organisation/settings`: the organisation's own late-fix limit. Everyone in the organisation may read
it; only owners change it (with the CSRF token in a browser session); values are bounded and strictly integers."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from kernel.uow import unit_of_work
from services.models import Role
from services.orgs import create_api_key
from tests.api.test_accounts import browser, log_in, make_user
from tests.world import World

URL = "/admin/v1/organisation/settings"
SERVICE_S = 30 * 86400  # the suite's PLACECAST_LATE_FIX_AFTER_S (tests/conftest.py)
WEEK_S = 7 * 86400


async def key(app, world: World, role: Role) -> dict[str, str]:
    async with unit_of_work(app.state.resources.session_factory) as uow:
        made = await create_api_key(uow.session, organisation_id=world.organisation_id, name=role.value, role=role)
    return {"X-API-Key": made}


async def audit_of(app, organisation_id: int) -> list[tuple[str, str, int | None, dict[str, Any]]]:
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(
            text(
                "SELECT action, entity, entity_id, details FROM audit_log"
                " WHERE organisation_id = :o AND entity = 'organisation' ORDER BY id"
            ),
            {"o": organisation_id},
        )
        return [(r.action, r.entity, r.entity_id, r.details) for r in rows]


async def test_read_by_anyone_in_the_organisation_changed_by_owners(app, client, world: World) -> None:
    owner, viewer = await key(app, world, Role.owner), await key(app, world, Role.viewer)
    unset = {"late_fix_after_s": None, "effective_late_fix_after_s": SERVICE_S, "max_fix_age_s": WEEK_S}
    for headers in (owner, world.admin, viewer):
        answer = await client.get(URL, headers=headers)
        assert answer.status_code == 200 and answer.json() == unset

    for headers in (world.admin, viewer):  # an editor, a viewer
        refused = await client.patch(URL, json={"late_fix_after_s": 600}, headers=headers)
        assert refused.status_code == 403 and "owner role" in refused.json()["message"]
    assert (await client.get(URL, headers=owner)).json() == unset

    changed = await client.patch(URL, json={"late_fix_after_s": 600}, headers=owner)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"late_fix_after_s": 600, "effective_late_fix_after_s": 600, "max_fix_age_s": WEEK_S}
    assert (await client.get(URL, headers=viewer)).json() == changed.json()
    cleared = await client.patch(URL, json={"late_fix_after_s": None}, headers=owner)
    assert cleared.status_code == 200 and cleared.json() == unset

    assert await audit_of(app, world.organisation_id) == [
        ("update", "organisation", world.organisation_id, {"late_fix_after_s": {"from": None, "to": 600}}),
        ("update", "organisation", world.organisation_id, {"late_fix_after_s": {"from": 600, "to": None}}),
    ]


async def test_only_the_callers_organisation_changes(app, client, world: World, org) -> None:
    other_id, other_headers = org
    owner = await key(app, world, Role.owner)
    assert (await client.patch(URL, json={"late_fix_after_s": 3600}, headers=owner)).status_code == 200
    assert (await client.get(URL, headers=other_headers)).json()["late_fix_after_s"] is None
    async with app.state.resources.session_factory() as session:
        stored = await session.execute(
            text("SELECT id, late_fix_after_s FROM organisations WHERE id = ANY(:ids) ORDER BY id"),
            {"ids": [world.organisation_id, other_id]},
        )
        assert {r.id: r.late_fix_after_s for r in stored} == {world.organisation_id: 3600, other_id: None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"late_fix_after_s": 59}, "late_fix_after_s"),
        ({"late_fix_after_s": WEEK_S + 1}, "late_fix_after_s"),
        ({"late_fix_after_s": -600}, "late_fix_after_s"),
        ({"late_fix_after_s": True}, "late_fix_after_s"),
        ({"late_fix_after_s": "600"}, "late_fix_after_s"),
        ({"late_fix_after_s": 600.0}, "late_fix_after_s"),
        ({"late_fix_after_s": 600.5}, "late_fix_after_s"),
        ({"late_fix_after_s": [600]}, "late_fix_after_s"),
        ({}, "late_fix_after_s"),
        ({"late_fix_after_s": 600, "late_fix_after_m": 10}, "late_fix_after_m"),
    ],
)
async def test_bad_values_are_422_naming_the_field(app, client, world: World, body, field: str) -> None:
    owner = await key(app, world, Role.owner)
    answer = await client.patch(URL, json=body, headers=owner)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "validation_failed"
    assert [p["field"] for p in answer.json()["detail"]] == [field]
    assert (await client.get(URL, headers=owner)).json()["late_fix_after_s"] is None
    assert await audit_of(app, world.organisation_id) == []


@pytest.mark.parametrize("seconds", [60, WEEK_S])
async def test_the_bounds_themselves_are_accepted(app, client, world: World, seconds: int) -> None:
    answer = await client.patch(URL, json={"late_fix_after_s": seconds}, headers=await key(app, world, Role.owner))
    assert answer.status_code == 200 and answer.json()["effective_late_fix_after_s"] == seconds


async def test_a_browser_session_needs_the_csrf_token(app, client, world: World) -> None:
    user_id, email = await make_user(app, world.organisation_id, "owner")
    async with browser(app) as http:
        csrf = (await log_in(http, email))["csrf_token"]
        assert (await http.get(URL)).json()["late_fix_after_s"] is None  # reading needs no token
        missing = await http.patch(URL, json={"late_fix_after_s": 900})
        assert missing.status_code == 403 and missing.json()["message"] == "CSRF token missing or wrong"
        changed = await http.patch(URL, json={"late_fix_after_s": 900}, headers={"X-CSRF-Token": csrf})
        assert changed.status_code == 200 and changed.json()["late_fix_after_s"] == 900
    async with app.state.resources.session_factory() as session:
        actor = await session.execute(
            text("SELECT actor FROM audit_log WHERE organisation_id = :o AND entity = 'organisation'"),
            {"o": world.organisation_id},
        )
        assert actor.scalar_one() == f"user:{user_id}:{email}"


async def test_no_credentials_no_settings(client) -> None:
    assert (await client.get(URL)).status_code == 401
    assert (await client.patch(URL, json={"late_fix_after_s": 600})).status_code == 401

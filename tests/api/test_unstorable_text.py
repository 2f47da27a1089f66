"""Text PostgreSQL cannot store (a lone surrogate from a "\\ud800" JSON escape, or NUL) is a 422 naming the problem
wherever it enters, never a 500: schemathesis found a staff device's `team` with a lone surrogate answering 500."""

from __future__ import annotations

import pytest

from tests.world import World, register

LONE_SURROGATE = '"a\\ud800b"'  # as a client's JSON encoder writes it
NUL = '"a\\u0000b"'


@pytest.mark.parametrize("bad", [LONE_SURROGATE, NUL])
async def test_a_staff_devices_team_that_cannot_be_stored_is_a_422(client, world: World, bad: str) -> None:
    staff = await register(client, world, role="staff")
    device_id = (await client.get("/v1/devices/me", headers=staff)).json()["id"]
    answer = await client.patch(
        f"/admin/v1/devices/{device_id}",
        headers={**world.admin, "Content-Type": "application/json"},
        content='{"team": ' + bad + "}",
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "validation_failed"
    kept = await client.patch(f"/admin/v1/devices/{device_id}", headers=world.admin, json={"team": "night"})
    assert kept.status_code == 200


@pytest.mark.parametrize("bad", [LONE_SURROGATE, NUL])
async def test_a_task_title_that_cannot_be_stored_is_a_422(client, world: World, bad: str) -> None:
    answer = await client.post(
        "/admin/v1/tasks",
        headers={**world.admin, "Content-Type": "application/json"},
        content=f'{{"place_id": {world.place_id}, "title": {bad}, "team": "a"}}',
    )
    assert answer.status_code == 422, answer.text


async def test_is_supervisor_must_be_a_json_boolean(client, world: World) -> None:
    staff = await register(client, world, role="staff")
    device_id = (await client.get("/v1/devices/me", headers=staff)).json()["id"]
    answer = await client.patch(f"/admin/v1/devices/{device_id}", headers=world.admin, json={"is_supervisor": 0})
    assert answer.status_code == 422


async def test_the_content_list_bounds_its_place_id(client, world: World) -> None:
    answer = await client.get(f"/admin/v1/content?place_id={2**63}", headers=world.admin)
    assert answer.status_code == 422
    assert "place_id" in answer.text


async def test_ids_in_bodies_are_bounded_and_named(client, world: World) -> None:
    device = await register(client, world)
    checkin = await client.post("/v1/checkins", headers=device, json={"place_id": 2**63, "qr_token": "x"})
    assert checkin.status_code == 422 and "place_id" in checkin.text
    content = await client.post(
        "/admin/v1/content", headers=world.admin, json={"place_id": 2**63, "title": "t", "body": "b"}
    )
    assert content.status_code == 422 and "place_id" in content.text


@pytest.mark.parametrize(
    "body",
    [
        '{"email": "a\\u0000b@example.org", "password": "something long enough"}',
        '{"email": "someone@example.org", "password": "long enough \\u0000 password"}',
    ],
)
async def test_a_login_with_unstorable_text_is_wrong_credentials(client, body: str) -> None:
    # NUL is valid JSON text but no account's email; schemathesis found it answering the database's 422. (A lone
    # surrogate is refused by the JSON parser itself: a 422 like any other text that is not Unicode.)
    answer = await client.post("/admin/v1/session", headers={"Content-Type": "application/json"}, content=body)
    assert answer.status_code == 401, answer.text

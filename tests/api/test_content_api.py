"""Admin API for content and tasks: rules validated on save, scoping, roles."""

from __future__ import annotations

import pytest

from tests.world import World, register


async def test_content_is_validated_and_scoped(client, world: World, app) -> None:
    ok = await client.post(
        "/admin/v1/content",
        headers=world.admin,
        json={
            "place_id": world.place_id,
            "title": "Reading hour",
            "body": "15:00",
            "trigger": "dwell",
            "schedule": {"days": [0, 1, 2, 3, 4], "hours": ["09:00", "17:00"], "only_when_open": True},
            "quiet_hours": ["22:00", "07:00"],
            "daily_cap": 3,
        },
    )
    assert ok.status_code == 201, ok.text
    listed = (await client.get(f"/admin/v1/content?place_id={world.place_id}", headers=world.admin)).json()
    assert [c["title"] for c in listed] == ["Reading hour"]
    assert (await client.delete(f"/admin/v1/content/{ok.json()['id']}", headers=world.admin)).status_code == 204
    assert (await client.delete(f"/admin/v1/content/{ok.json()['id']}", headers=world.admin)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x", "body": "y"},  # no target
        {"place_id": 1, "place_kind": "library", "title": "x", "body": "y"},  # two targets
        {"place_kind": "library", "title": "x", "body": "y", "schedule": {"hours": ["25:00", "26:00"]}},
        {"place_kind": "library", "title": "x", "body": "y", "schedule": {"only_when_opne": True}},
        {"place_kind": "library", "title": "x", "body": "y", "trigger": "teleport"},
        {"place_kind": "library", "title": "x", "body": "y", "quiet_hours": ["22:00"]},
        {"place_kind": "library", "title": "", "body": "y"},
    ],
)
async def test_bad_content_is_422(client, world: World, body) -> None:
    answer = await client.post("/admin/v1/content", headers=world.admin, json=body)
    assert answer.status_code == 422, answer.text


async def test_another_organisations_place_is_404(client, world: World, org) -> None:
    _, other_headers = org
    answer = await client.post(
        "/admin/v1/content", headers=other_headers, json={"place_id": world.place_id, "title": "x", "body": "y"}
    )
    assert answer.status_code == 404
    task = await client.post("/admin/v1/tasks", headers=other_headers, json={"place_id": world.place_id, "title": "t"})
    assert task.status_code == 404


async def test_tasks_board_and_supervisor(client, world: World) -> None:
    created = await client.post(
        "/admin/v1/tasks",
        headers=world.admin,
        json={"place_id": world.place_id, "title": "Collect the returns box", "team": "a"},
    )
    assert created.status_code == 201 and created.json()["status"] == "open"
    board = (await client.get("/admin/v1/tasks?status=open", headers=world.admin)).json()
    assert [t["title"] for t in board] == ["Collect the returns box"]
    staff = await register(client, world, role="staff")
    device_id = (await client.get("/v1/devices/me", headers=staff)).json()["id"]
    patched = await client.patch(
        f"/admin/v1/devices/{device_id}", headers=world.admin, json={"team": "a", "is_supervisor": True}
    )
    assert patched.json() == {"id": device_id, "team": "a", "is_supervisor": True}

"""`GET /admin/v1/events` and `/admin/v1/visits`: real events and visits made through the mobile API, every
filter checked against the rows in the database, paging, CSV read back, organisation isolation, bad input."""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from kernel.uow import unit_of_work
from services.models import Role
from services.orgs import create_api_key, create_organisation
from tests.world import BLOCK, FAR_OUTSIDE, INSIDE, World, fix, register

EVENT_FIELDS = [
    "id",
    "kind",
    "zone",
    "place_id",
    "place_name",
    "fence_id",
    "device_id",
    "visit_id",
    "occurred_at",
    "created_at",
    "late",
]
VISIT_FIELDS = [
    "id",
    "place_id",
    "place_name",
    "device_id",
    "started_at",
    "ended_at",
    "duration_s",
    "checked_in",
    "detected",
]
# Starts like a spreadsheet formula, and holds a comma and quotes: CSV must quote it and defuse it.
TRICKY = '=HYPERLINK("http://evil.example"), the "Main" hall'
HALL = {
    "type": "Polygon",
    "coordinates": [
        [[24.9440, 60.1695], [24.9460, 60.1695], [24.9460, 60.1705], [24.9440, 60.1705], [24.9440, 60.1695]]
    ],
}
HALL_INSIDE = (24.9450, 60.1700)
HALL_APPROACH = (24.9450, 60.17068)  # ~20 m north of the hall's wall, inside its 40 m approach zone


@dataclass
class Org:
    world: World
    viewer: dict[str, str]
    hall_id: int
    device_ids: list[int]
    event_ids: list[int]


async def make_org(app, client, *, hall: bool) -> Org:
    """An organisation like the `world` fixture (Oodi), plus a viewer key and optionally the tricky hall."""
    slug = "ev-" + secrets.token_hex(4)
    async with unit_of_work(app.state.resources.session_factory) as uow:
        organisation_id = await create_organisation(uow.session, name=slug, slug=slug)
        admin = await create_api_key(uow.session, organisation_id=organisation_id, name="admin")
        viewer = await create_api_key(uow.session, organisation_id=organisation_id, name="v", role=Role.viewer)
        enrol = await create_api_key(uow.session, organisation_id=organisation_id, name="app", purpose="enrolment")
    headers = {"X-API-Key": admin}
    oodi = await client.post(
        "/admin/v1/places", json={"name": "Oodi", "kind": "library", "fences": [{"geometry": BLOCK}]}, headers=headers
    )
    assert oodi.status_code == 201, oodi.text
    hall_id = 0
    if hall:
        body = {"name": TRICKY, "kind": "townhall", "approach_m": 40, "fences": [{"geometry": HALL}]}
        created = await client.post("/admin/v1/places", json=body, headers=headers)
        assert created.status_code == 201, created.text
        hall_id = created.json()["id"]
    world = World(organisation_id, headers, {"X-Enrolment-Key": enrol}, oodi.json()["id"])
    return Org(world, {"X-API-Key": viewer}, hall_id, [], [])


async def device(client, org: Org) -> dict[str, str]:
    headers = await register(client, org.world)
    org.device_ids.append((await client.get("/v1/devices/me", headers=headers)).json()["id"])
    return headers


async def walk(client, org: Org, headers: dict[str, str], *points: tuple[float, float], seconds: float = 30) -> None:
    for point in points:
        answer = await client.post("/v1/fixes", json=fix(point, seconds=seconds), headers=headers)
        assert answer.status_code == 202, answer.text
        org.event_ids += [e["id"] for e in answer.json()["events"]]


async def act(client, org: Org, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    answer = await client.post(path, json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    org.event_ids.append(answer.json()["id"])


@pytest.fixture(scope="module")
async def orgs(app, client) -> tuple[Org, Org]:
    """Mine: a visitor walks into Oodi, stays (dwell) and leaves; another approaches and enters the hall, checks in
    and out; a third checks in at Oodi and stays; one late event. Theirs: an enter and a check-in at their Oodi."""
    mine = await make_org(app, client, hall=True)
    oodi = mine.world.place_id
    walker = await device(client, mine)
    # More fixes than today's transition rules need, so a stricter rule still sees each enter, dwell and exit.
    await walk(client, mine, walker, FAR_OUTSIDE, INSIDE, INSIDE)
    await walk(client, mine, walker, INSIDE, seconds=400)  # past the dwell time
    await walk(client, mine, walker, INSIDE, FAR_OUTSIDE, FAR_OUTSIDE, FAR_OUTSIDE)
    visitor = await device(client, mine)
    await walk(client, mine, visitor, FAR_OUTSIDE, HALL_APPROACH, HALL_APPROACH, HALL_INSIDE, HALL_INSIDE)
    near = {"place_id": mine.hall_id, "lon": HALL_INSIDE[0], "lat": HALL_INSIDE[1], "accuracy_m": 10}
    await act(client, mine, "/v1/checkins", near, visitor)
    await act(client, mine, "/v1/checkouts", {"place_id": mine.hall_id}, visitor)
    stayer = await device(client, mine)
    await act(client, mine, "/v1/checkins", {"place_id": oodi, "lon": INSIDE[0], "lat": INSIDE[1]}, stayer)
    # The late-fix logic is someone else's work: one late event written directly.
    async with app.state.resources.session_factory() as session, session.begin():
        late_id = (
            await session.execute(
                text(
                    "INSERT INTO events (organisation_id, device_id, place_id, kind, zone, occurred_at, late)"
                    " VALUES (:o, :d, :p, 'enter', 'building', :at, true) RETURNING id"
                ),
                {
                    "o": mine.world.organisation_id,
                    "d": mine.device_ids[0],
                    "p": oodi,
                    "at": datetime.fromisoformat(fix(INSIDE)["ts"]),
                },
            )
        ).scalar_one()
    mine.event_ids.append(late_id)

    theirs = await make_org(app, client, hall=False)
    other = await device(client, theirs)
    await walk(client, theirs, other, FAR_OUTSIDE, INSIDE)
    checkin = {"place_id": theirs.world.place_id, "lon": INSIDE[0], "lat": INSIDE[1]}
    await act(client, theirs, "/v1/checkins", checkin, other)
    return mine, theirs


TIMES = ("occurred_at", "created_at", "started_at", "ended_at")


def normal(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the database holds it: times parsed back (the JSON has them as ISO 8601 strings)."""
    return {k: datetime.fromisoformat(v) if k in TIMES and v is not None else v for k, v in item.items()}


async def truth(app, table: str, organisation_id: int) -> list[dict[str, Any]]:
    """The organisation's rows straight from the database, newest (highest id) first."""
    sql = {
        "events": "SELECT e.id, e.kind, e.zone, e.place_id, p.name AS place_name, e.fence_id, e.device_id,"
        " e.visit_id, e.occurred_at, e.created_at, e.late FROM events e JOIN places p ON p.id = e.place_id"
        " WHERE e.organisation_id = :o ORDER BY e.id DESC",
        "visits": "SELECT v.id, v.place_id, p.name AS place_name, v.device_id, v.started_at, v.ended_at,"
        " NULL AS duration_s, v.checked_in, v.detected FROM visits v JOIN places p ON p.id = v.place_id"
        " WHERE v.organisation_id = :o ORDER BY v.id DESC",
    }[table]
    async with app.state.resources.session_factory() as session:
        rows = [dict(r) for r in (await session.execute(text(sql), {"o": organisation_id})).mappings()]
    for row in rows:
        if "duration_s" in row:
            row["duration_s"] = (row["ended_at"] - row["started_at"]).total_seconds() if row["ended_at"] else None
    return rows


async def get_all(client, path: str, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    answer = await client.get(path, params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["next_cursor"] is None
    return [normal(item) for item in answer.json()["items"]]


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


async def test_events_list_everything_newest_first_with_every_field(app, client, orgs) -> None:
    mine, _ = orgs
    expected = await truth(app, "events", mine.world.organisation_id)
    assert sorted(ids(expected)) == sorted(mine.event_ids)
    # The scenario made every kind, both zones and a late event, so each filter below selects something real.
    assert {e["kind"] for e in expected} == {"enter", "exit", "dwell", "checkin", "checkout"}
    assert {e["zone"] for e in expected} == {"building", "approach"} and {e["late"] for e in expected} == {True, False}
    answer = await client.get("/admin/v1/events", headers=mine.world.admin)
    assert answer.status_code == 200
    assert list(answer.json()) == ["items", "next_cursor"]
    items = answer.json()["items"]
    assert all(list(item) == EVENT_FIELDS for item in items)
    assert [normal(i) for i in items] == expected  # ids descending, names joined, received time included
    assert TRICKY in {i["place_name"] for i in items}


def after(rows: list[dict[str, Any]], **conditions: Any) -> list[int]:
    return [r["id"] for r in rows if all(test(r) for test in conditions.values())]


async def test_every_event_filter_matches_the_database(app, client, orgs) -> None:
    mine, _ = orgs
    rows = await truth(app, "events", mine.world.organisation_id)
    walker, visitor, _stayer = mine.device_ids
    times = sorted({r["occurred_at"] for r in rows})
    middle, later = times[len(times) // 3], times[2 * len(times) // 3]
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({"place_id": mine.hall_id}, after(rows, p=lambda r: r["place_id"] == mine.hall_id)),
        ({"place_id": mine.world.place_id}, after(rows, p=lambda r: r["place_id"] == mine.world.place_id)),
        ({"device_id": visitor}, after(rows, d=lambda r: r["device_id"] == visitor)),
        ({"kind": "enter"}, after(rows, k=lambda r: r["kind"] == "enter")),
        ({"kind": "dwell"}, after(rows, k=lambda r: r["kind"] == "dwell")),
        ({"kind": "enter,exit"}, after(rows, k=lambda r: r["kind"] in ("enter", "exit"))),
        ({"kind": ["checkin", "checkout"]}, after(rows, k=lambda r: r["kind"] in ("checkin", "checkout"))),
        ({"kind": ["dwell", "enter,exit"]}, after(rows, k=lambda r: r["kind"] in ("dwell", "enter", "exit"))),
        ({"zone": "approach"}, after(rows, z=lambda r: r["zone"] == "approach")),
        ({"zone": "building"}, after(rows, z=lambda r: r["zone"] == "building")),
        ({"late": "true"}, after(rows, late=lambda r: r["late"])),
        ({"late": "false"}, after(rows, late=lambda r: not r["late"])),
        ({"from": middle.isoformat()}, after(rows, t=lambda r: r["occurred_at"] >= middle)),
        ({"to": middle.isoformat()}, after(rows, t=lambda r: r["occurred_at"] < middle)),
        (
            {"from": middle.isoformat(), "to": later.isoformat()},
            after(rows, t=lambda r: middle <= r["occurred_at"] < later),
        ),
        # The same instant written in another zone selects the same rows.
        (
            {"from": middle.astimezone(timezone(timedelta(hours=-5))).isoformat()},
            after(rows, t=lambda r: r["occurred_at"] >= middle),
        ),
        ({"from": middle.isoformat(), "to": middle.isoformat()}, []),
        (
            {"device_id": walker, "kind": "enter", "late": "false", "zone": "building"},
            after(
                rows, d=lambda r: r["device_id"] == walker, k=lambda r: r["kind"] == "enter", x=lambda r: not r["late"]
            ),
        ),
        (
            {"place_id": mine.hall_id, "zone": "approach", "kind": "enter"},
            after(
                rows,
                p=lambda r: r["place_id"] == mine.hall_id,
                z=lambda r: r["zone"] == "approach",
                k=lambda r: r["kind"] == "enter",
            ),
        ),
    ]
    for params, expected in cases:
        # A filter that matches nothing proves little, except the empty range [t, t).
        assert expected or params.get("from") == params.get("to"), params
        got = await get_all(client, "/admin/v1/events", mine.world.admin, **params)
        assert ids(got) == expected, params
    late = ids(await get_all(client, "/admin/v1/events", mine.world.admin, late="true"))
    assert mine.event_ids[-1] in late  # the row written with late = true


async def test_every_visit_filter_matches_the_database(app, client, orgs) -> None:
    mine, _ = orgs
    rows = await truth(app, "visits", mine.world.organisation_id)
    walker, visitor, stayer = mine.device_ids
    got = await client.get("/admin/v1/visits", headers=mine.world.admin)
    assert got.status_code == 200 and all(list(i) == VISIT_FIELDS for i in got.json()["items"])
    assert [normal(i) for i in got.json()["items"]] == rows
    by_device = {r["device_id"]: r for r in rows}
    assert len(rows) == 3  # the hall's detected enter and its check-in are one visit
    assert (by_device[walker]["detected"], by_device[walker]["checked_in"]) == (True, False)
    assert (by_device[visitor]["detected"], by_device[visitor]["checked_in"]) == (True, True)
    assert by_device[stayer]["ended_at"] is None and by_device[stayer]["duration_s"] is None
    assert by_device[walker]["duration_s"] >= 400
    starts = sorted(r["started_at"] for r in rows)
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({"place_id": mine.hall_id}, after(rows, p=lambda r: r["place_id"] == mine.hall_id)),
        ({"device_id": walker}, after(rows, d=lambda r: r["device_id"] == walker)),
        ({"open": "true"}, after(rows, o=lambda r: r["ended_at"] is None)),
        ({"open": "false"}, after(rows, o=lambda r: r["ended_at"] is not None)),
        ({"from": starts[1].isoformat()}, after(rows, t=lambda r: r["started_at"] >= starts[1])),
        ({"to": starts[1].isoformat()}, after(rows, t=lambda r: r["started_at"] < starts[1])),
        (
            {"place_id": mine.world.place_id, "open": "false"},
            after(rows, p=lambda r: r["place_id"] == mine.world.place_id, o=lambda r: r["ended_at"] is not None),
        ),
    ]
    for params, expected in cases:
        assert expected, params
        assert ids(await get_all(client, "/admin/v1/visits", mine.world.admin, **params)) == expected, params


@pytest.mark.parametrize(("path", "table"), [("/admin/v1/events", "events"), ("/admin/v1/visits", "visits")])
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_paging_walks_every_row_once(app, client, orgs, path, table, limit) -> None:
    mine, _ = orgs
    expected = ids(await truth(app, table, mine.world.organisation_id))
    seen: list[int] = []
    cursor = None
    for _ in range(len(expected) + 2):
        params = {"limit": limit} | ({"cursor": cursor} if cursor is not None else {})
        page = (await client.get(path, params=params, headers=mine.world.admin)).json()
        assert len(page["items"]) <= limit
        seen += ids(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == seen[-1]
    assert seen == expected  # every row once, newest first: no duplicates, no gaps
    # A filtered walk too.
    if table == "events":
        rows = await truth(app, table, mine.world.organisation_id)
        wanted = after(rows, k=lambda r: r["kind"] in ("enter", "checkin"))
        seen, cursor = [], None
        while True:
            params = {"limit": limit, "kind": "enter,checkin"} | ({"cursor": cursor} if cursor else {})
            page = (await client.get(path, params=params, headers=mine.world.admin)).json()
            seen += ids(page["items"])
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == wanted


def read_csv(answer) -> list[list[str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    return list(csv.reader(io.StringIO(answer.text, newline="")))


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


@pytest.mark.parametrize(
    ("path", "table", "fields"),
    [("/admin/v1/events", "events", EVENT_FIELDS), ("/admin/v1/visits", "visits", VISIT_FIELDS)],
)
async def test_csv_has_the_same_rows_quoted_and_defused(app, client, orgs, path, table, fields, monkeypatch) -> None:
    mine, _ = orgs
    rows = await truth(app, table, mine.world.organisation_id)
    want = [[cell(r[f]) for f in fields] for r in rows]
    for row in want:
        if row[fields.index("place_name")] == TRICKY:
            row[fields.index("place_name")] = "'" + TRICKY  # no spreadsheet runs it as a formula
    csv_accept = {**mine.world.admin, "Accept": "text/csv"}
    whole = await client.get(path, headers=csv_accept)
    assert '"' + "'" + TRICKY.replace('"', '""') + '"' in whole.text  # quoted, inner quotes doubled
    parsed = read_csv(whole)
    assert parsed[0] == fields
    assert parsed[1:] == want
    # Streamed through every page in chunks of page_size_max: a small one forces many chunks.
    monkeypatch.setattr(app.state.settings, "page_size_max", 2)
    assert read_csv(await client.get(path, headers=csv_accept))[1:] == want
    # `limit` caps a CSV (at most page_size_max); `cursor` continues below an id.
    assert read_csv(await client.get(path, params={"limit": 2}, headers=csv_accept))[1:] == want[:2]
    below = rows[1]["id"]
    assert read_csv(await client.get(path, params={"cursor": below}, headers=csv_accept))[1:] == want[2:]
    # Filters apply; nothing matched is a header alone.
    empty = await client.get(path, params={"place_id": 2**62}, headers={**mine.world.admin, "Accept": "text/csv"})
    assert read_csv(empty) == [fields]
    # A browser's Accept without text/csv gets JSON.
    browser = await client.get(path, headers={**mine.world.admin, "Accept": "text/html,application/json;q=0.9"})
    assert browser.headers["content-type"].startswith("application/json")
    weighted = await client.get(path, headers={**mine.world.admin, "Accept": "application/json, text/csv;q=0.5"})
    assert weighted.headers["content-type"].startswith("application/json")
    preferred = await client.get(path, headers={**mine.world.admin, "Accept": "application/json;q=0.5, text/csv"})
    assert preferred.headers["content-type"].startswith("text/csv")


async def test_csv_of_events_filters_like_json(client, orgs) -> None:
    mine, _ = orgs
    params = {"kind": "checkin,checkout", "place_id": mine.hall_id}
    json_ids = [
        i["id"] for i in (await client.get("/admin/v1/events", params=params, headers=mine.world.admin)).json()["items"]
    ]
    parsed = read_csv(
        await client.get("/admin/v1/events", params=params, headers={**mine.world.admin, "Accept": "text/csv"})
    )
    assert [int(r[0]) for r in parsed[1:]] == json_ids and len(json_ids) == 2
    assert {r[1] for r in parsed[1:]} == {"checkin", "checkout"}


async def test_another_organisations_rows_never_show(app, client, orgs) -> None:
    mine, theirs = orgs
    their_events = await truth(app, "events", theirs.world.organisation_id)
    their_visits = await truth(app, "visits", theirs.world.organisation_id)
    assert their_events and their_visits
    [their_device] = theirs.device_ids
    for path, their_rows in (("/admin/v1/events", their_events), ("/admin/v1/visits", their_visits)):
        everything = await get_all(client, path, mine.world.admin)
        assert not set(ids(everything)) & set(ids(their_rows))
        # Their place and device ids simply match nothing here, in JSON and CSV.
        for params in ({"place_id": theirs.world.place_id}, {"device_id": their_device}):
            assert await get_all(client, path, mine.world.admin, **params) == []
            assert (
                read_csv(await client.get(path, params=params, headers={**mine.world.admin, "Accept": "text/csv"}))[1:]
                == []
            )
        # A cursor above their ids still shows only mine.
        above = max(ids(their_rows) + ids(everything)) + 1
        assert ids(await get_all(client, path, mine.world.admin, cursor=above)) == ids(everything)
        # And they see only theirs.
        assert ids(await get_all(client, path, theirs.world.admin)) == ids(their_rows)
        assert ids(await get_all(client, path, theirs.world.admin, device_id=mine.device_ids[0])) == []


async def test_a_viewer_may_read_and_a_stranger_may_not(app, client, orgs) -> None:
    mine, _ = orgs
    for path, table in (("/admin/v1/events", "events"), ("/admin/v1/visits", "visits")):
        assert ids(await get_all(client, path, mine.viewer)) == ids(await truth(app, table, mine.world.organisation_id))
        assert len(read_csv(await client.get(path, headers={**mine.viewer, "Accept": "text/csv"}))) > 1
        for headers in ({}, {"Accept": "text/csv"}, {"X-API-Key": "pck_nope"}, {"Authorization": "Bearer pck_nope"}):
            answer = await client.get(path, headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert answer.json()["error"] == "unauthorized"


TOO_FAR = [
    ("from", "9999-12-31T00:00:00Z"),
    ("to", "9999-12-31T23:59:59-05:00"),  # past year 9999 in UTC
    ("from", "0001-01-01T00:00:00Z"),
    ("from", "0001-01-01T00:00:00+02:00"),  # before year 1 in UTC
    ("to", "1999-12-31T23:59:59Z"),
    ("to", "2100-01-01T00:00:01Z"),
]


@pytest.mark.parametrize("path", ["/admin/v1/events", "/admin/v1/visits"])
@pytest.mark.parametrize(
    ("params", "field"),
    [
        *[({name: value}, name) for name, value in TOO_FAR],
        ({"from": "2025-03-10T10:00:00"}, "from"),  # no time zone
        ({"to": "2025-03-10"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"from": "10000-01-01T00:00:00Z"}, "from"),
        ({"from": "2025-02-30T00:00:00Z"}, "from"),
        ({"from": "2025-03-10T10:00:00Z", "to": "2025-03-10T09:59:59Z"}, "from"),
        ({"from": "2025-03-10T10:00:00+02:00", "to": "2025-03-10T07:00:00Z"}, "from"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "1000000000000000000000"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "0"}, "cursor"),
        ({"cursor": "-5"}, "cursor"),
        ({"cursor": "99999999999999999999999"}, "cursor"),
        ({"cursor": "1.5"}, "cursor"),
        ({"place_id": "abc"}, "place_id"),
        ({"place_id": "0"}, "place_id"),
        ({"device_id": str(2**63)}, "device_id"),
    ],
)
async def test_bad_input_is_a_clear_422(client, orgs, path, params, field) -> None:
    mine, _ = orgs
    for accept in ("application/json", "text/csv"):
        answer = await client.get(path, params=params, headers={**mine.world.admin, "Accept": accept})
        assert answer.status_code == 422, (params, answer.text)
        body = answer.json()
        assert body["error"] == "validation_failed" and body["message"]
        assert body["detail"][0]["field"] == field, body
        assert body["detail"][0]["reason"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/admin/v1/events", {"kind": "teleport"}, "kind"),
        ("/admin/v1/events", {"kind": "enter,teleport"}, "kind"),
        ("/admin/v1/events", {"kind": ["exit", "Enter;DROP TABLE events"]}, "kind"),
        ("/admin/v1/events", {"zone": "roof"}, "zone"),
        ("/admin/v1/events", {"late": "maybe"}, "late"),
        ("/admin/v1/visits", {"open": "perhaps"}, "open"),
    ],
)
async def test_bad_filters_are_422(client, orgs, path, params, field) -> None:
    mine, _ = orgs
    answer = await client.get(path, params=params, headers=mine.world.admin)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] == field
    if field == "kind":
        assert "enter, exit, dwell, checkin, checkout" in answer.json()["detail"][0]["reason"]


async def test_limit_bound_follows_the_setting(app, client, orgs, monkeypatch) -> None:
    mine, _ = orgs
    monkeypatch.setattr(app.state.settings, "page_size_max", 3)
    assert (await client.get("/admin/v1/events", params={"limit": 3}, headers=mine.world.admin)).status_code == 200
    refused = await client.get("/admin/v1/events", params={"limit": 4}, headers=mine.world.admin)
    assert refused.status_code == 422 and "at most 3" in refused.json()["detail"][0]["reason"]


async def test_time_bounds_at_the_edges_are_accepted(client, orgs) -> None:
    mine, _ = orgs
    params = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    answer = await client.get("/admin/v1/events", params=params, headers=mine.world.admin)
    assert answer.status_code == 200 and answer.json()["items"]
    recent = {"from": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
    kinds = {i["kind"] for i in (await get_all(client, "/admin/v1/events", mine.world.admin, **recent))}
    assert kinds == {"checkin", "checkout"}  # the check-ins happened now; the walks in device time, days ago


@pytest.fixture
async def loop() -> asyncio.AbstractEventLoop:
    """The session's event loop (the app and its pools live on it); hypothesis drives it from a sync test."""
    return asyncio.get_running_loop()


query_values = (
    st.text(max_size=25)
    | st.integers(-(2**70), 2**70).map(str)
    | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    | st.sampled_from(
        [
            "9999-12-31T23:59:59-05:00",
            "0001-01-01T00:00:00+14:00",
            "1e400",
            "nan",
            "true",
            "enter,,exit",
            "approach",
            "%00",
            str(2**63),
        ]
    )
)
PARAMS = ["place_id", "device_id", "kind", "zone", "late", "open", "from", "to", "cursor", "limit"]


@pytest.mark.parametrize("path", ["/admin/v1/events", "/admin/v1/visits"])
@pytest.mark.parametrize("accept", ["application/json", "text/csv"])
def test_no_query_string_makes_a_500(client, orgs, loop, path: str, accept: str) -> None:
    mine, _ = orgs
    headers = {**mine.world.admin, "Accept": accept}

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(params=st.dictionaries(st.sampled_from(PARAMS), query_values, max_size=5))
    def check(params: dict[str, str]) -> None:
        answer = loop.run_until_complete(client.get(path, params=params, headers=headers))
        assert answer.status_code in (200, 422), (path, params, answer.text)

    check()

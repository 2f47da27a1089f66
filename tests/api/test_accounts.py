"""Admin UI accounts: login, the session cookie, CSRF, roles per organisation, the organisation switch, the CLI."""

from __future__ import annotations

import hashlib
import os
import secrets
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.openapi.utils import get_openapi
from pwdlib import PasswordHash
from sqlalchemy import text
from typer.testing import CliRunner

from admin import register_admin_routers
from infra.cli import app as cli
from kernel.uow import unit_of_work
from services.accounts import create_user
from services.models import Role
from services.orgs import create_api_key, create_organisation
from tests.world import BLOCK, World

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module", autouse=True)
def _admin_routes(app) -> None:
    register_admin_routers(app)  # a no-op once infra/app.py calls it


async def make_user(app, organisation_id: int, role: str = "editor") -> tuple[int, str]:
    email = f"u-{secrets.token_hex(4)}@example.org"
    async with unit_of_work(app.state.resources.session_factory) as uow:
        user_id = await create_user(
            uow.session, email=email, password=PASSWORD, organisation_id=organisation_id, role=Role(role)
        )
    return user_id, email


async def make_org(app) -> int:
    slug = "acc-" + secrets.token_hex(4)
    async with unit_of_work(app.state.resources.session_factory) as uow:
        return await create_organisation(uow.session, name=slug, slug=slug)


@asynccontextmanager
async def browser(app, base_url: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    """A client with its own cookie jar, like one browser."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as http:
        yield http


async def log_in(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    answer = await http.post("/admin/v1/session", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def audit_actors(app, organisation_id: int) -> list[str]:
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(
            text("SELECT actor FROM audit_log WHERE organisation_id = :o ORDER BY id"), {"o": organisation_id}
        )
        return [r.actor for r in rows]


async def test_login_me_and_logout(app, world: World) -> None:
    user_id, email = await make_user(app, world.organisation_id, "editor")
    async with browser(app) as http:
        answer = await http.post("/admin/v1/session", json={"email": email.upper(), "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["user"] == {"id": user_id, "email": email}
        assert [(o["id"], o["role"]) for o in body["organisations"]] == [(world.organisation_id, "editor")]
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("placecast_session=")
        flags = [part.strip().lower() for part in cookie.split(";")[1:]]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        assert "secure" not in flags  # plain http: a Secure cookie would never come back
        token = http.cookies["placecast_session"]

        # Stored under the token's hash, idle for at most 12 h, and every request pushes the end back.
        key = "placecast:session:" + hashlib.sha256(token.encode()).hexdigest()
        assert not await app.state.resources.redis.keys(f"*{token}*")
        assert 12 * 3600 - 60 < await app.state.resources.redis.ttl(key) <= 12 * 3600
        await app.state.resources.redis.expire(key, 100)
        me = await http.get("/admin/v1/me")
        assert me.status_code == 200 and me.json() == body
        assert await app.state.resources.redis.ttl(key) > 100
        places = await http.get("/admin/v1/places")
        assert places.status_code == 200 and [p["id"] for p in places.json()["items"]] == [world.place_id]

        refused = await http.delete("/admin/v1/session")
        assert refused.status_code == 403, "logout needs the CSRF token too"
        bye = await http.delete("/admin/v1/session", headers={"X-CSRF-Token": body["csrf_token"]})
        assert bye.status_code == 204
        assert (await http.get("/admin/v1/me")).status_code == 401
    async with browser(app) as stolen:  # the old cookie is dead on the server, not only forgotten by the browser
        stolen.cookies.set("placecast_session", token)
        answer = await stolen.get("/admin/v1/places")
        assert answer.status_code == 401 and "log in again" in answer.json()["message"]


async def test_cookie_is_secure_over_https(app, world: World) -> None:
    _, email = await make_user(app, world.organisation_id)
    async with browser(app, "https://test") as http:
        answer = await http.post("/admin/v1/session", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200
    assert "secure" in [part.strip().lower() for part in answer.headers["set-cookie"].split(";")]


async def test_wrong_password_and_unknown_email_look_the_same(app, world: World) -> None:
    _, email = await make_user(app, world.organisation_id)
    async with browser(app) as http:
        wrong = await http.post("/admin/v1/session", json={"email": email, "password": "not the password"})
        unknown = await http.post("/admin/v1/session", json={"email": "nobody@example.org", "password": PASSWORD})
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()
        assert "set-cookie" not in wrong.headers and not http.cookies
        assert (await http.get("/admin/v1/me")).status_code == 401


async def test_a_disabled_account_is_logged_out(app, world: World) -> None:
    user_id, email = await make_user(app, world.organisation_id)
    async with browser(app) as http:
        await log_in(http, email)
        async with unit_of_work(app.state.resources.session_factory) as uow:
            await uow.session.execute(text("UPDATE users SET is_active = false WHERE id = :u"), {"u": user_id})
        assert (await http.get("/admin/v1/places")).status_code == 401
        again = await http.post("/admin/v1/session", json={"email": email, "password": PASSWORD})
        assert again.status_code == 401 and again.json()["message"] == "wrong email or password"


async def test_login_attempts_are_limited_per_ip_and_email(app, world: World) -> None:
    _, email = await make_user(app, world.organisation_id)
    _, other_email = await make_user(app, world.organisation_id)
    async with browser(app) as http:
        for _ in range(10):
            answer = await http.post(
                "/admin/v1/session", json={"email": email, "password": "guess-" + secrets.token_hex(2)}
            )
            assert answer.status_code == 401
        # The right password does not get through once the limit is reached: every attempt counts.
        limited = await http.post("/admin/v1/session", json={"email": email, "password": PASSWORD})
        assert limited.status_code == 429, limited.text
        assert 0 < int(limited.headers["Retry-After"]) <= 15 * 60
        assert (
            await http.post("/admin/v1/session", json={"email": other_email, "password": PASSWORD})
        ).status_code == 200


async def test_failed_logins_from_many_addresses_lock_the_account_not_others(app, world: World) -> None:
    _, email = await make_user(app, world.organisation_id)
    _, other_email = await make_user(app, world.organisation_id)

    async def attempt(address: str, who: str, password: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/admin/v1/session", json={"email": who, "password": password})

    for i in range(30):  # 3 guesses from each of 10 addresses: under the per-address limit everywhere
        answer = await attempt(f"198.51.100.{i // 3}", email, "guess-" + secrets.token_hex(3))
        assert answer.status_code == 401
    locked = await attempt("203.0.113.7", email.upper(), PASSWORD)  # a fresh address, the right password
    assert locked.status_code == 429, locked.text
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
    assert (await attempt("203.0.113.7", other_email, PASSWORD)).status_code == 200


async def test_state_changes_with_a_session_need_the_csrf_token(app, client, world: World) -> None:
    user_id, email = await make_user(app, world.organisation_id, "editor")
    place = {"name": "CSRF hall", "kind": "library", "fences": [{"geometry": BLOCK}]}
    async with browser(app) as http:
        csrf = (await log_in(http, email))["csrf_token"]
        missing = await http.post("/admin/v1/places", json=place)
        wrong = await http.post("/admin/v1/places", json=place, headers={"X-CSRF-Token": csrf[:-2] + "xx"})
        for answer in (missing, wrong):
            assert answer.status_code == 403 and answer.json()["message"] == "CSRF token missing or wrong"
        created = await http.post("/admin/v1/places", json=place, headers={"X-CSRF-Token": csrf})
        assert created.status_code == 201, created.text
        listed = await http.get("/admin/v1/places", params={"q": "CSRF hall"})
        assert len(listed.json()["items"]) == 1, "the refused requests created nothing"
    # An API key needs no CSRF token: it is never sent by a browser on its own.
    by_key = await client.post("/admin/v1/places", json={**place, "name": "Key hall"}, headers=world.admin)
    assert by_key.status_code == 201
    assert f"user:{user_id}:{email}" in await audit_actors(app, world.organisation_id)


async def test_audit_entries_name_the_user(app, world: World) -> None:
    user_id, email = await make_user(app, world.organisation_id, "owner")
    async with browser(app) as http:
        csrf = (await log_in(http, email))["csrf_token"]
        headers = {"X-CSRF-Token": csrf}
        patched = await http.patch(f"/admin/v1/places/{world.place_id}", json={"name": "Oodi 2"}, headers=headers)
        assert patched.status_code == 200
        task = await http.post("/admin/v1/tasks", json={"place_id": world.place_id, "title": "Doors"}, headers=headers)
        assert task.status_code == 201
    async with app.state.resources.session_factory() as session:
        rows = await session.execute(
            text("SELECT action, entity, actor FROM audit_log WHERE organisation_id = :o AND actor LIKE 'user:%'"),
            {"o": world.organisation_id},
        )
        entries = {(r.action, r.entity): r.actor for r in rows}
    assert entries == {
        ("update", "place"): f"user:{user_id}:{email}",
        ("create", "staff_task"): f"user:{user_id}:{email}",
    }


def viewer_requests(place_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    geojson = b'{"type": "FeatureCollection", "features": []}'
    return [
        ("POST", "/admin/v1/places", {"json": {"name": "V", "kind": "library", "fences": [{"geometry": BLOCK}]}}),
        ("PATCH", "/admin/v1/places/{place_id}", {"json": {"name": "Renamed by a viewer"}}),
        ("DELETE", "/admin/v1/places/{place_id}", {}),
        ("POST", "/admin/v1/places/{place_id}/qr-token", {}),
        ("POST", "/admin/v1/import/geojson", {"json": {"type": "FeatureCollection", "features": []}}),
        ("POST", "/admin/v1/imports", {"files": {"file": ("p.geojson", geojson, "application/geo+json")}}),
        ("POST", "/admin/v1/content", {"json": {"place_id": place_id, "title": "x", "body": "y"}}),
        ("DELETE", "/admin/v1/content/{content_id}", {}),
        ("POST", "/admin/v1/tasks", {"json": {"place_id": place_id, "title": "t"}}),
        ("PATCH", "/admin/v1/devices/{device_id}", {"json": {"team": "night"}}),
        ("POST", "/admin/v1/webhooks", {"json": {"url": "https://example.org/hook"}}),
        ("DELETE", "/admin/v1/webhooks/{subscription_id}", {}),
        ("POST", "/admin/v1/webhook-deliveries/{delivery_id}/retry", {}),
        ("PATCH", "/admin/v1/organisation/settings", {"json": {"late_fix_after_s": 600}}),  # owners only
        ("POST", "/admin/v1/organisation/qr-key/rotate", {"json": {"confirm": True}}),  # owners only
    ]


async def test_a_viewer_session_changes_nothing(app, world: World) -> None:
    _, email = await make_user(app, world.organisation_id, "viewer")
    requests = viewer_requests(world.place_id)
    # Every state-changing admin route is in the list, so a new one cannot skip the role check unnoticed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate operation ids elsewhere are not this test's business
        paths = get_openapi(title="placecast", version="0", routes=app.routes)["paths"]
    routes = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/admin/v1/")
        for method in operations
        if method in ("post", "put", "patch", "delete")
    } - {("POST", "/admin/v1/session"), ("DELETE", "/admin/v1/session")}
    assert routes == {(m, p) for m, p, _ in requests}
    ids = {"place_id": world.place_id, "content_id": 1, "device_id": 1, "subscription_id": 1, "delivery_id": 1}
    before = await audit_actors(app, world.organisation_id)
    async with browser(app) as http:
        csrf = (await log_in(http, email))["csrf_token"]
        assert (await http.get("/admin/v1/places")).status_code == 200, "the viewer can read"
        for method, path, kwargs in requests:
            answer = await http.request(method, path.format(**ids), headers={"X-CSRF-Token": csrf}, **kwargs)
            assert answer.status_code == 403, (method, path, answer.text)
            assert "role; you are viewer" in answer.json()["message"]  # needs the editor (or owner) role
        qr = await http.get(f"/admin/v1/places/{world.place_id}/qr.svg")
        assert qr.status_code == 403, "a printable check-in code is a credential: editors only"
        place = await http.get(f"/admin/v1/places/{world.place_id}")
        assert place.status_code == 200 and place.json()["name"] == "Oodi"
    assert await audit_actors(app, world.organisation_id) == before


async def test_organisation_switch_and_roles_per_organisation(app, world: World) -> None:
    second, stranger = await make_org(app), await make_org(app)
    user_id, email = await make_user(app, world.organisation_id, "editor")
    async with unit_of_work(app.state.resources.session_factory) as uow:
        await uow.session.execute(
            text("INSERT INTO memberships (user_id, organisation_id, role) VALUES (:u, :o, 'viewer')"),
            {"u": user_id, "o": second},
        )
        stranger_key = await create_api_key(uow.session, organisation_id=stranger, name="k")
    place = {"name": "Switch hall", "kind": "library", "fences": [{"geometry": BLOCK}]}
    async with browser(app) as http:
        body = await log_in(http, email)
        assert [(o["id"], o["role"]) for o in body["organisations"]] == [
            (world.organisation_id, "editor"),
            (second, "viewer"),
        ]
        headers = {"X-CSRF-Token": body["csrf_token"]}
        default = await http.get("/admin/v1/places")
        assert [p["id"] for p in default.json()["items"]] == [world.place_id], "the first membership is the default"
        switched = await http.get("/admin/v1/places", headers={"X-Organisation": str(second)})
        assert switched.status_code == 200 and switched.json()["items"] == []
        by_query = await http.get("/admin/v1/places", params={"organisation": second})
        assert by_query.status_code == 200 and by_query.json()["items"] == []
        # The role is the membership's: editor in one organisation, viewer in the other.
        as_viewer = await http.post("/admin/v1/places", json=place, headers={**headers, "X-Organisation": str(second)})
        assert as_viewer.status_code == 403
        as_editor = await http.post(
            "/admin/v1/places", json=place, headers={**headers, "X-Organisation": str(world.organisation_id)}
        )
        assert as_editor.status_code == 201
        foreign = await http.get("/admin/v1/places", headers={"X-Organisation": str(stranger)})
        assert foreign.status_code == 403 and f"organisation {stranger}" in foreign.json()["message"]
        garbage = await http.get("/admin/v1/places", headers={"X-Organisation": "1 OR 1=1"})
        assert garbage.status_code == 422
    async with browser(app) as http:  # an API key cannot be pointed at another organisation either
        crossed = await http.get("/admin/v1/places", headers={"X-API-Key": stranger_key, "X-Organisation": str(second)})
        assert crossed.status_code == 403


runner = CliRunner()


def db_rows(settings, sql: str, *params):
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_create_admin_from_the_command_line(settings) -> None:
    first, second = "cli-" + secrets.token_hex(3), "cli-" + secrets.token_hex(3)
    for slug in (first, second):
        assert runner.invoke(cli, ["create-org", slug, slug]).exit_code == 0
    email = f"ops-{secrets.token_hex(3)}@example.org"
    made = runner.invoke(cli, ["create-admin", email, "--org", first, "--role", "editor"])
    assert made.exit_code == 0, made.output
    password = made.stdout.strip().splitlines()[-1]
    [(stored_hash,)] = db_rows(settings, "SELECT password_hash FROM users WHERE email = %s", email)
    assert stored_hash.startswith("$argon2") and PasswordHash.recommended().verify(password, stored_hash)

    again = runner.invoke(cli, ["create-admin", email, "--org", second, "--role", "viewer"])
    assert again.exit_code == 0 and "exists" in again.output
    roles = db_rows(
        settings,
        "SELECT o.slug, m.role::text FROM memberships m JOIN users u ON u.id = m.user_id"
        " JOIN organisations o ON o.id = m.organisation_id WHERE u.email = %s ORDER BY o.id",
        email,
    )
    assert roles == [(first, "editor"), (second, "viewer")]
    assert runner.invoke(cli, ["create-admin", email, "--org", "no-such-org"]).exit_code == 2
    short = runner.invoke(cli, ["create-admin", "x-" + email, "--org", first, "--password", "short"])
    assert short.exit_code == 2 and "password" in short.output


def test_seed_demo_creates_the_demo_admin(settings) -> None:
    password_file = settings.var_dir / "demo-admin-password"
    password_file.unlink(missing_ok=True)  # as on a first start
    result = runner.invoke(cli, ["seed-demo"])
    assert result.exit_code == 0, result.output
    assert oct(os.stat(password_file).st_mode & 0o777) == "0o600"
    password = password_file.read_text().strip()
    [(stored_hash, slug, role)] = db_rows(
        settings,
        "SELECT u.password_hash, o.slug, m.role::text FROM users u JOIN memberships m ON m.user_id = u.id"
        " JOIN organisations o ON o.id = m.organisation_id WHERE u.email = 'admin@demo.placecast'",
    )
    assert (slug, role) == ("demo", "owner")
    assert PasswordHash.recommended().verify(password, stored_hash)

"""The admin UI in Debian's Chromium, driven by Playwright, against a real uvicorn, arq worker and the local
FCM-compatible server: log in, draw and edit a geofence, see the server's geometry error on the map, write
content, import the Helsinki extract with progress, watch a simulated visitor enter Oodi and get the push in
the live feed, see the visit in the analytics chart; a viewer is refused by the server. Every step writes a
screenshot to docs/screenshots/.

Nothing leaves the machine: every request to another host is aborted and recorded, and only tile requests
(the configurable tile URL) may appear in that record — the map works without them.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from infra.cli import app as cli
from infra.fake_fcm import local_fcm
from infra.stack import free_port, start_api
from tests.e2e.ui_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Offline,
    api_json,
    drag,
    draw_polygon,
    map_centre,
    map_pixel,
    shot,
    start_worker,
    stop,
)

if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

EXTRACT = Path(__file__).resolve().parents[1] / "data" / "osm" / "helsinki-centre.osm.pbf"
OODI = "Helsingin keskustakirjasto Oodi"
PASSWORD = "correct horse battery staple"
runner = CliRunner()


@pytest.fixture(scope="module")
def ui_stack(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with local_fcm(tmp_path_factory.mktemp("ui")) as (_, fcm_env):
        env = {**test_env, **fcm_env}
        port = free_port()
        api = start_api(env, port)
        worker = start_worker(env)
        try:
            yield {"url": f"http://127.0.0.1:{port}"}
        finally:
            stop(worker, api)


@pytest.fixture(scope="module")
def accounts(ui_stack: dict[str, Any]) -> dict[str, str]:
    """An organisation with an editor and a viewer, and the enrolment key its app would ship with."""
    slug = "ui-" + secrets.token_hex(3)
    result = runner.invoke(cli, ["create-org", "Helsinki City Library", slug])
    assert result.exit_code == 0, result.output
    owner_key = result.output.strip().splitlines()[-1]
    people = {"editor": f"editor-{slug}@example.org", "viewer": f"viewer-{slug}@example.org"}
    for role, email in people.items():
        made = runner.invoke(cli, ["create-admin", email, "--org", slug, "--role", role, "--password", PASSWORD])
        assert made.exit_code == 0, made.output
    enrolment = runner.invoke(cli, ["create-api-key", slug, "--purpose", "enrolment"])
    assert enrolment.exit_code == 0, enrolment.output
    return {**people, "slug": slug, "owner_key": owner_key, "enrolment_key": enrolment.output.strip().splitlines()[-1]}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield chromium
    chromium.close()


def new_context(browser: Browser, base_url: str, offline: Offline) -> BrowserContext:
    context = browser.new_context(
        base_url=base_url, viewport={"width": 1280, "height": 800}, reduced_motion="reduce", locale="en-GB"
    )
    context.route("**/*", offline)
    context.set_default_timeout(15_000)
    return context


def log_in(page: Page, email: str) -> None:
    """With the keyboard, as a user would: type, Tab, type, Enter."""
    page.goto("/admin")
    expect(page.locator("#login-screen")).to_be_visible()
    page.locator("#login-email").fill(email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()


def places(page: Page, q: str) -> list[dict[str, Any]]:
    status, body = api_json(page, "GET", f"/admin/v1/places?q={q}")
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"]
    return items


def vertices(place: dict[str, Any]) -> set[tuple[float, float]]:
    ring = place["fences"][0]["geometry"]["coordinates"][0]
    return {(round(lon, 7), round(lat, 7)) for lon, lat in ring}


def search_and_show(page: Page, name: str) -> None:
    page.get_by_role("tab", name="Places").click()
    page.get_by_label("Search by name").fill(name)
    page.get_by_role("button", name="Search", exact=True).click()
    row = page.locator("#places-rows tr", has_text=name).first
    expect(row).to_be_visible()
    row.get_by_role("button", name=f"Show {name} on the map").click()
    expect(page.locator("#place-form-title")).to_have_text(name)


def test_editor_flow_in_chromium(ui_stack: dict[str, Any], accounts: dict[str, str], browser: Browser) -> None:
    offline = Offline(ui_stack["url"])
    context = new_context(browser, ui_stack["url"], offline)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # 1. Log in (wrong password first: the server's 401 is shown).
    page.goto("/admin")
    page.locator("#login-email").fill(accounts["editor"])
    page.locator("#login-password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
    shot(page, "01-login")
    log_in(page, accounts["editor"])
    expect(page.locator("#role-badge")).to_have_text("editor")
    expect(page.locator("#map .leaflet-pm-toolbar").first).to_be_visible()

    # 2. Draw a polygon by clicking on the map, fill the form, save.
    page.evaluate("window.placecast.map.setView([60.1630, 24.9300], 17)")
    cx, cy = map_centre(page)
    corners = [(cx - 90, cy - 60), (cx + 90, cy - 60), (cx + 90, cy + 60), (cx - 90, cy + 60)]
    draw_polygon(page, corners)
    expect(page.locator("#place-form-title")).to_have_text("New place")
    expect(page.locator("#pf-fences li")).to_have_count(1)
    place_form = page.locator("#place-form")
    place_form.get_by_label("Name", exact=True).fill("Test pavilion")
    place_form.get_by_label("Kind", exact=True).fill("pavilion")
    place_form.get_by_label("Address", exact=True).fill("Tehtaankatu 1, Helsinki")
    place_form.get_by_label("Opening hours").fill("Mo-Su 08:00-20:00")
    shot(page, "02-draw-polygon")
    page.get_by_role("button", name="Create place").click()
    expect(page.locator("#toast")).to_contain_text("Saved “Test pavilion”")
    expect(page.locator("#place-form")).to_be_hidden()
    [pavilion] = places(page, "Test pavilion")
    assert pavilion["kind"] == "pavilion" and pavilion["opening_hours"] == "Mo-Su 08:00-20:00"
    assert pavilion["fences"][0]["kind"] == "polygon" and len(vertices(pavilion)) == 4

    # 3. It is listed, and on the map.
    search_and_show(page, "Test pavilion")
    expect(page.locator("#map path.leaflet-interactive").first).to_be_visible()
    shot(page, "03-listed-and-on-map")

    # 4. Edit a vertex: drag it on the map, save, and the server has the new corner.
    before = vertices(pavilion)
    lon, lat = pavilion["fences"][0]["geometry"]["coordinates"][0][0]
    x, y = map_pixel(page, lat, lon)
    drag(page, (x, y), (x - 40, y - 30))
    expect(page.get_by_role("button", name="Discard changes")).to_be_visible()
    page.get_by_role("button", name="Save place").click()
    expect(page.locator("#place-form")).to_be_hidden()  # closed once the server said yes
    [edited] = places(page, "Test pavilion")
    after = vertices(edited)
    assert len(after) == 4 and len(before - after) == 1, (before, after)
    search_and_show(page, "Test pavilion")
    shot(page, "04-edit-vertex")

    # 4b. GPS tuning (advanced): the server's complaint next to the field, then saved and shown again.
    place_form.locator("#pf-gps summary").click()
    tuning = place_form.get_by_label("Overrides of the enter/exit rules")
    tuning.fill('{"wall_m": 3}')
    page.get_by_role("button", name="Save place").click()
    expect(place_form.locator(".field-error")).to_contain_text("unknown GPS parameter 'wall_m'")
    tuning.fill('{"min_exit_margin_m": 25}')
    page.get_by_role("button", name="Save place").click()
    expect(page.locator("#place-form")).to_be_hidden()
    assert places(page, "Test pavilion")[0]["gps_tuning"] == {"min_exit_margin_m": 25}
    search_and_show(page, "Test pavilion")
    expect(tuning).to_have_value('{"min_exit_margin_m":25}')
    page.get_by_role("button", name="Close").click()

    # 5. A self-intersecting polygon: the server's 422 is shown on the map where the edges cross.
    page.evaluate("window.placecast.map.setView([60.1640, 24.9220], 17)")
    cx, cy = map_centre(page)
    draw_polygon(page, [(cx - 80, cy - 60), (cx + 80, cy + 60), (cx + 80, cy - 60), (cx - 80, cy + 60)])
    place_form.get_by_label("Name", exact=True).fill("Bow tie")
    place_form.get_by_label("Kind", exact=True).fill("test")
    page.get_by_role("button", name="Create place").click()
    popup = page.locator(".pc-error-popup")
    expect(popup).to_be_visible()
    expect(popup).to_contain_text("Shape 1")
    expect(popup).to_contain_text("rings cross")
    expect(popup.locator("[data-code=self_intersection]")).to_have_count(1)
    expect(page.locator("#map .leaflet-interactive[stroke='#c0182b']").first).to_be_visible()
    expect(page.locator("#pf-fences li.error")).to_have_count(1)
    shot(page, "05-self-intersection-error")
    assert places(page, "Bow tie") == []
    page.get_by_role("button", name="Discard changes").click()
    expect(page.locator(".pc-error-popup")).to_have_count(0)

    # 6. A content item for the new place, with every rule, and the push preview.
    page.get_by_role("tab", name="Content").click()
    form = page.locator("#content-form")
    page.get_by_role("button", name="Create content").click()  # empty: the server's 422 lands on the fields
    expect(form.get_by_label("Title", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".field-error").first).to_be_visible()
    form.get_by_label("Place", exact=True).select_option(label="Test pavilion (pavilion)")
    form.get_by_label("Title", exact=True).fill("Free coffee this morning")
    form.get_by_label("Body", exact=True).fill("Coffee is on the house until 10:00 at the pavilion.")
    form.get_by_label("Trigger").select_option("dwell")
    form.get_by_label("Audience role").select_option("visitor")
    form.get_by_label("Audience tags").fill("families, students")
    form.get_by_label("Valid from").fill("2025-01-01T08:00")
    for day in ("Mon", "Tue", "Wed", "Thu", "Fri"):
        form.get_by_label(day, exact=True).check()
    form.get_by_label("Hours from", exact=True).fill("08:00")
    form.get_by_label("Hours to", exact=True).fill("20:00")
    form.get_by_label("Only while the place is open").check()
    form.get_by_label("Cooldown (hours) per visitor and place").fill("12")
    form.get_by_label("Daily cap per device").fill("3")
    form.get_by_label("Quiet hours from").fill("22:00")
    form.get_by_label("Quiet hours to").fill("07:00")
    expect(page.locator("#pp-title")).to_have_text("Free coffee this morning")
    expect(page.locator("#pp-rules")).to_contain_text("on Mon, Tue, Wed, Thu, Fri")
    shot(page, "06-content-with-preview", tall=True)
    page.get_by_role("button", name="Create content").click()
    expect(page.locator("#content-list li", has_text="Free coffee this morning")).to_be_visible()
    expect(form.get_by_label("Trigger")).to_have_value("enter")  # the form is back to its defaults
    status, items = api_json(page, "GET", f"/admin/v1/content?place_id={pavilion['id']}")
    assert status == 200 and len(items) == 1, items
    item = items[0]
    assert item["trigger"] == "dwell" and item["audience_role"] == "visitor"
    assert item["audience_tags"] == ["families", "students"] and item["cooldown_s"] == 12 * 3600
    assert item["daily_cap"] == 3 and item["quiet_hours"] == ["22:00", "07:00"]
    assert item["schedule"]["days"] == [0, 1, 2, 3, 4] and item["schedule"]["hours"] == ["08:00", "20:00"]
    assert item["schedule"]["only_when_open"] is True

    # 7. Import the Helsinki extract, watching the progress the server streams, to the summary.
    page.get_by_role("tab", name="Import / export").click()
    page.evaluate(
        """() => {
            window.__progress = [];
            const text = (id) => document.querySelector(id).textContent;
            const watch = () => window.__progress.push(text('#import-phase') + ' ' + text('#import-count'));
            new MutationObserver(watch).observe(document.querySelector('#import-progress'),
                {subtree: true, childList: true, characterData: true, attributes: true});
        }"""
    )
    page.get_by_label("File", exact=True).set_input_files(str(EXTRACT))
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.locator("#import-progress")).to_be_visible()
    expect(page.locator("#import-phase")).to_have_text(re.compile("^(Reading|Storing|Finished)"), timeout=60_000)
    shot(page, "07-import-progress")
    expect(page.locator("#import-summary")).to_be_visible(timeout=60_000)
    expect(page.locator("#import-phase")).to_have_text("Finished")
    shot(page, "08-import-summary")
    progress: list[str] = page.evaluate("window.__progress")
    assert any(p.startswith("Storing places") for p in progress), progress
    created = int(page.locator("[data-what=created]").inner_text().split()[0])
    assert created > 10
    with page.expect_download() as download:
        page.get_by_role("link", name="Download GeoJSON").click()
    exported = json.loads(Path(download.value.path()).read_text())
    names = {feature["properties"]["name"] for feature in exported["features"]}
    assert exported["type"] == "FeatureCollection" and {OODI, "Test pavilion"} <= names

    # 8. Find Oodi, and give it a push for visitors who enter.
    search_and_show(page, OODI)
    shot(page, "09-find-oodi")
    page.evaluate("window.placecast.map.setView([60.1703, 24.9415], 15.5)")
    shot(page, "map", hide_toast=True)
    page.get_by_role("tab", name="Content").click()
    expect(form.get_by_label("Place", exact=True)).to_have_value(str(places(page, "Oodi")[0]["id"]))
    title = "Children's reading hour " + secrets.token_hex(2)
    form.get_by_label("Title", exact=True).fill(title)
    form.get_by_label("Body", exact=True).fill("Starts at 15:00 on floor 2.")
    page.get_by_role("button", name="Create content").click()
    expect(page.locator("#content-list li", has_text=title)).to_be_visible()

    # 9. A simulated visitor walks into Oodi: the enter and the push appear live, on the feed and the map.
    page.get_by_role("tab", name="Live").click()
    expect(page.locator("#live-state")).to_have_text("connected")
    walked = runner.invoke(
        cli,
        ["simulate", "--route", "visitor-oodi", "--url", ui_stack["url"], "--enrolment-key", accounts["enrolment_key"]],
    )
    assert walked.exit_code == 0, walked.output
    expect(page.locator(".feed-item[data-kind=enter]", has_text="Oodi").first).to_be_visible()
    expect(page.locator(".feed-item[data-kind=push]").first).to_be_visible(timeout=30_000)
    expect(page.locator("#live-map .pulse").first).to_be_attached()
    shot(page, "10-live-feed")

    # 10. Analytics: the visit is in the chart (and in the table under it).
    page.get_by_role("tab", name="Analytics").click()
    page.get_by_text("Data as a table").click()
    expect(page.locator("#an-rows tr", has_text="Oodi").first).to_be_visible()
    charted: int = page.evaluate(
        """(name) => window.placecast.charts.visits.data.datasets
            .filter((d) => d.label === name).flatMap((d) => d.data).reduce((a, b) => a + b, 0)""",
        OODI,
    )
    assert charted >= 1
    page.wait_for_timeout(300)
    shot(page, "11-analytics", tall=True)
    shot(page, "analytics", tall=True, hide_toast=True)

    # 11. Tasks board, webhooks with dead letters, a QR code to print.
    page.get_by_role("tab", name="Tasks").click()
    tasks = page.locator("#task-form")
    tasks.get_by_label("Place").select_option(label=f"{OODI} (library)")
    tasks.get_by_label("Title").fill("Collect the returns box")
    tasks.get_by_label("Team").fill("facilities")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#task-board [data-status=open] li", has_text="Collect the returns box")).to_be_visible()
    shot(page, "12-tasks-board")
    page.get_by_role("tab", name="Webhooks").click()
    page.get_by_label("Receiver URL").fill("https://hooks.example.org/placecast")
    page.get_by_label("enter", exact=True).check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.locator("#webhook-secret")).to_be_visible()
    page.locator("#webhook-list li", has_text="hooks.example.org").get_by_role("button", name="Dead letters").click()
    expect(page.locator("#dead-rows")).to_contain_text("No dead letters")
    shot(page, "13-webhooks")
    page.get_by_role("tab", name="QR codes").click()
    page.locator("#qr-place").select_option(label=f"{OODI} (library)")
    expect(page.locator("#qr-sheet")).to_be_visible()
    expect(page.locator("#qr-image")).to_have_js_property("complete", True)
    assert page.locator("#qr-image").evaluate("(image) => image.naturalWidth") > 0
    shot(page, "14-qr-code")

    # 12. Tablet width: nothing overflows sideways; the map and the forms stack.
    page.set_viewport_size({"width": 800, "height": 1100})
    for tab, name in (("Map", "15-tablet-map"), ("Content", "16-tablet-content")):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(200)
        assert page.evaluate("document.documentElement.scrollWidth") <= 800
        shot(page, name)

    # Keyboard: the tabs follow the arrow keys.
    page.get_by_role("tab", name="Content").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Tasks")).to_have_attribute("aria-selected", "true")

    assert errors == [], errors
    assert all("tile.openstreetmap.org" in url for url in offline.elsewhere), offline.elsewhere
    context.close()


def test_viewer_can_look_but_the_server_refuses_changes(
    ui_stack: dict[str, Any], accounts: dict[str, str], browser: Browser
) -> None:
    offline = Offline(ui_stack["url"])
    context = new_context(browser, ui_stack["url"], offline)
    page = context.new_page()
    square = {"type": "Polygon", "coordinates": [[[24.93, 60.16], [24.931, 60.16], [24.931, 60.161], [24.93, 60.16]]]}
    owner = {"X-API-Key": accounts["owner_key"]}
    with httpx.Client(base_url=ui_stack["url"], headers=owner, timeout=10) as http:
        if not http.get("/admin/v1/places").json()["items"]:  # this test alone: give the viewer something to see
            made = http.post(
                "/admin/v1/places", json={"name": "Kiosk", "kind": "kiosk", "fences": [{"geometry": square}]}
            )
            assert made.status_code == 201, made.text
    log_in(page, accounts["viewer"])
    expect(page.locator("#role-badge")).to_have_text("viewer")
    expect(page.locator("#readonly-banner")).to_be_visible()
    expect(page.locator("#map .leaflet-pm-toolbar")).to_have_count(0)
    expect(page.locator("#place-count")).to_have_text(re.compile(r"^[1-9]\d* places? in this organisation"))
    shot(page, "17-viewer")

    existing = places(page, "")
    assert existing
    attempts: list[tuple[str, str, Any]] = [
        ("POST", "/admin/v1/places", {"name": "Not mine", "kind": "test", "fences": [{"geometry": square}]}),
        ("POST", "/admin/v1/content", {"place_kind": "library", "title": "x", "body": "y"}),
        ("POST", "/admin/v1/tasks", {"place_kind": "library", "title": "x"}),
        ("POST", "/admin/v1/webhooks", {"url": "https://example.org/hook"}),
    ]
    target = existing[0]["id"]
    attempts += [
        ("PATCH", f"/admin/v1/places/{target}", {"name": "Renamed by a viewer"}),
        ("DELETE", f"/admin/v1/places/{target}", None),
    ]
    for method, path, body in attempts:
        status, answer = api_json(page, method, path, body)
        assert status == 403, (method, path, status, answer)
        assert answer["error"] == "forbidden"
    assert len(places(page, "")) == len(existing)

    # The same refusal through the page's own code path (fetch with the session and CSRF token).
    page.get_by_role("tab", name="Content").click()
    refused: int = page.evaluate(
        """async () => {
            const me = await (await fetch('/admin/v1/me')).json();
            const answer = await fetch('/admin/v1/content', {method: 'POST', headers: {
                'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token},
                body: JSON.stringify({place_kind: 'library', title: 'x', body: 'y'})});
            return answer.status;
        }"""
    )
    assert refused == 403
    expect(page.get_by_role("button", name="Create content")).to_be_disabled()
    shot(page, "18-viewer-content-read-only")

    # Logging out ends the session on the server too.
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-error")).to_have_text("You are signed out.")
    assert page.request.get("/admin/v1/me").status == 401
    assert all("tile.openstreetmap.org" in url for url in offline.elsewhere), offline.elsewhere
    context.close()


def test_admin_ui_assets_are_served_locally(ui_stack: dict[str, Any]) -> None:
    with httpx.Client(base_url=ui_stack["url"], timeout=10) as http:
        page = http.get("/admin")
        assert page.status_code == 200 and "Placecast admin" in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        for name in ("leaflet.js", "leaflet.css", "leaflet-geoman.js", "leaflet-geoman.css", "chart.umd.js"):
            assert http.get(f"/admin/vendor/{name}").status_code == 200, name
        assert http.get("/admin/vendor/../package.json").status_code == 404
        assert http.get("/admin/config.json").json()["tile_url"].startswith("https://")
        assert http.get("/admin/static/app.js").headers["content-type"].startswith("text/javascript")


def test_missing_assets_give_a_clear_503(tmp_path: Path) -> None:
    from fastapi import FastAPI

    from admin.ui import mount_admin_ui

    app = FastAPI()
    mount_admin_ui(app, object(), node_modules=tmp_path / "node_modules")
    mount_admin_ui(app, object(), node_modules=tmp_path / "node_modules")  # twice: still one set of routes

    async def fetch() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui") as http:
            return (
                await http.get("/admin"),
                await http.get("/admin/vendor/leaflet.js"),
                await http.get("/admin/config.json"),
            )

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        page, vendor, config = pool.submit(asyncio.run, fetch()).result()
    assert page.status_code == 503
    assert "run infra/run.sh to install the admin UI assets" in page.text
    assert vendor.status_code == 503
    assert config.json()["tile_url"] == "https://tile.openstreetmap.org/{z}/{x}/{y}.png"


def test_tile_url_decides_the_config_and_the_content_security_policy() -> None:
    from types import SimpleNamespace

    from admin.ui import content_security_policy, ui_config

    custom = ui_config(SimpleNamespace(tile_url="https://{s}.tiles.example.org/{z}/{x}/{y}.png"))
    assert custom["tile_url"].startswith("https://{s}.tiles.example.org/") and custom["tile_attribution"] == ""
    assert "img-src 'self' data: blob: https://*.tiles.example.org;" in content_security_policy(custom["tile_url"])
    assert ui_config(SimpleNamespace(tile_url=""))["tile_url"] == ""  # no tiles at all: a plain map
    assert "img-src 'self' data: blob:;" in content_security_policy("")
    assert "openstreetmap" in ui_config(object())["tile_attribution"]

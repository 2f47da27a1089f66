"""The visitor web app (/app) in Debian's Chromium, driven by Playwright, at a phone's 360 px width, against a real
uvicorn and arq worker: a visitor opens the printed QR link, consents, is checked in and sees the place's content,
then a new inbox item arrives live; with emulated geolocation, walking into Oodi gives an enter and its offer; the
app shell loads offline; "Delete my data" erases the device; axe-core finds no serious accessibility violation.
Every step writes a screenshot (visitor-*.png, see tests/e2e/ui_helpers.py: PLACECAST_SCREENSHOTS=docs/screenshots
refreshes the README's).

Nothing leaves the machine: every request to another host is aborted and recorded, and the record stays empty.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from infra.cli import app as cli
from infra.fake_fcm import local_fcm
from infra.stack import free_port, start_api
from tests.e2e.ui_helpers import CHROMIUM, CHROMIUM_ARGS, Offline, shot, start_worker, stop
from tests.world import BLOCK

if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

AXE = Path(__file__).resolve().parents[2] / "admin" / "node_modules" / "axe-core" / "axe.min.js"
PHONE: ViewportSize = {"width": 360, "height": 740}
# Walking east along Töölönlahdenkatu into the Oodi block (tests/world.py: BLOCK spans lon 24.9370-24.9406,
# lat 60.1735-60.1745).
WALK = [(60.1700, 24.9300), (60.1715, 24.9330), (60.1728, 24.9360), (60.1740, 24.9385), (60.1740, 24.9388)]
THEATRE = {"type": "Point", "coordinates": [24.9440, 60.1705]}
runner = CliRunner()


@pytest.fixture(scope="module")
def site(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The API, a worker, an organisation with Oodi (its content) and a theatre, and their printed QR links."""
    with local_fcm(tmp_path_factory.mktemp("visitor")) as (_, fcm_env):
        env = {**test_env, **fcm_env}
        port = free_port()
        api = start_api(env, port)
        worker = start_worker(env)
        try:
            url = f"http://127.0.0.1:{port}"
            slug = "app-" + secrets.token_hex(3)
            made = runner.invoke(cli, ["create-org", "Helsinki City Library", slug])
            assert made.exit_code == 0, made.output
            admin = httpx.Client(base_url=url, headers={"X-API-Key": made.output.strip().splitlines()[-1]})

            def place(body: dict[str, Any]) -> int:
                answer = admin.post("/admin/v1/places", json=body)
                assert answer.status_code == 201, answer.text
                return int(answer.json()["id"])

            oodi = place(
                {
                    "name": "Helsinki Central Library Oodi",
                    "kind": "library",
                    "address": "Töölönlahdenkatu 4",
                    "opening_hours": "Mo-Su 00:00-24:00",
                    "fences": [{"geometry": BLOCK}],
                }
            )
            theatre = place(
                {"name": "National Theatre", "kind": "theatre", "fences": [{"geometry": THEATRE, "radius_m": 40}]}
            )
            content = [
                {"place_id": oodi, "title": "Story time at 15:00", "body": "For children 3-6, on the 2nd floor."},
                {
                    "place_id": oodi,
                    "title": "Welcome to Oodi",
                    "body": "Ask us anything at the info desk.",
                    "trigger": "checkin",
                    "cooldown_s": 0,
                },
                {
                    "place_id": oodi,
                    "title": "3D printers free today",
                    "body": "Book one at the desk on the 2nd floor.",
                    "trigger": "enter",
                    "cooldown_s": 0,
                },
            ]
            for item in content:
                answer = admin.post("/admin/v1/content", json=item)
                assert answer.status_code == 201, answer.text
            links = {
                name: admin.post(f"/admin/v1/places/{pid}/qr-token").json()["url"]
                for name, pid in (("oodi", oodi), ("theatre", theatre))
            }
            assert links["oodi"].startswith(f"{url}/app/c/{oodi}.")
            yield {"url": url, "links": links, "oodi": oodi, "admin": admin}
            admin.close()
        finally:
            stop(worker, api)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield chromium
    chromium.close()


@pytest.fixture
def phone(site: dict[str, Any], browser: Browser) -> Iterator[tuple[BrowserContext, Offline]]:
    """A fresh phone: its own storage, 360 px wide, English, at the far end of the walk, location allowed."""
    context = browser.new_context(
        base_url=site["url"],
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="en-GB",
        timezone_id="Europe/Helsinki",
        reduced_motion="reduce",
        geolocation={"latitude": WALK[0][0], "longitude": WALK[0][1], "accuracy": 10},
        permissions=["geolocation"],
    )
    elsewhere = Offline(site["url"])
    context.route("**/*", elsewhere)
    context.set_default_timeout(20_000)
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))

    # Uncaught errors and errors the app logs; a failed request (offline, on purpose) is the browser's own note.
    def logged(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    context.on("console", logged)
    yield context, elsewhere
    context.close()
    assert elsewhere.elsewhere == []
    assert errors == []


def stored(page: Page, key: str) -> Any:
    """A value of the app's IndexedDB store, read as the app reads it."""
    return page.evaluate(
        """(key) => new Promise((resolve, reject) => {
            const open = indexedDB.open("placecast", 1);
            open.onsuccess = () => {
                const request = open.result.transaction("kv").objectStore("kv").get(key);
                request.onsuccess = () => resolve(request.result ?? null);
                request.onerror = () => reject(request.error);
            };
            open.onerror = () => reject(open.error);
        })""",
        key,
    )


def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core (from admin/node_modules, a dev dependency) over the page: violations of serious or critical impact."""
    # Evaluated through the DevTools protocol: the page's own policy (no inline script, no eval) stays as it is.
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text() + "\n;true")
    found: list[dict[str, Any]] = page.evaluate(
        """() => axe.run(document, {resultTypes: ["violations"]}).then((r) => r.violations.map(
            (v) => ({id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" "))})))"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def fits(page: Page) -> None:
    """Nothing scrolls sideways at 360 px."""
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def check_in_at_oodi(page: Page, site: dict[str, Any], *, offers: bool = True) -> None:
    page.goto(site["links"]["oodi"])
    expect(page.get_by_role("heading", name="Before you check in")).to_be_visible()
    if offers:
        page.locator("#consent").get_by_label("Tell me about events and offers").check()
    page.get_by_role("button", name="Continue and check in").click()
    expect(page.locator("#checked-in")).to_contain_text("You're checked in")


def test_qr_link_consent_check_in_content_and_a_live_inbox_item(
    phone: tuple[BrowserContext, Offline], site: dict[str, Any]
) -> None:
    context, _ = phone
    page = context.new_page()
    page.goto(site["links"]["oodi"])
    consent = page.get_by_role("heading", name="Before you check in")
    expect(consent).to_be_visible()
    # Nothing is ticked for the visitor, nothing identifying is asked, and nothing is enrolled before they choose.
    expect(page.locator("#consent").get_by_label("Tell me about events and offers")).not_to_be_checked()
    expect(page.locator("#consent").get_by_label("Count my visits")).not_to_be_checked()
    assert page.locator("input[type=email], input[type=tel], input[type=text]").count() == 0
    assert stored(page, "credential") is None
    assert page.url == f"{site['url']}/app/"  # the token left the address bar at once
    fits(page)
    assert serious_violations(page) == []
    shot(page, "visitor-consent")

    page.locator("#consent").get_by_label("Tell me about events and offers").check()
    page.get_by_role("button", name="Continue and check in").click()
    expect(page.locator("#checked-in")).to_contain_text("You're checked in")
    expect(page.get_by_role("heading", name="Helsinki Central Library Oodi")).to_be_visible()
    expect(page.locator("#open-now")).to_have_text("Open now")
    expect(page.locator("#content")).to_contain_text("Story time at 15:00")

    # The check-in's own message reaches the open app over the inbox stream (the worker made it after the page
    # had read its inbox), marked as new.
    live = page.locator("#inbox li.new", has_text="Welcome to Oodi")
    expect(live).to_be_visible()
    assert page.evaluate("window.placecast.stream") == "live"
    credential = stored(page, "credential")
    assert credential and credential.startswith("pcd_")
    assert credential not in page.url
    me = httpx.get(f"{site['url']}/v1/devices/me", headers={"Authorization": f"Bearer {credential}"})
    assert me.status_code == 200 and me.json()["consents"] == {"offers": True, "analytics": False}
    assert (me.json()["role"], me.json()["platform"]) == ("visitor", "web")
    fits(page)
    assert serious_violations(page) == []
    shot(page, "visitor-checked-in", tall=True)

    # A second message while the app is open arrives as well, without a reload.
    device = {"Authorization": f"Bearer {credential}"}
    checkin = httpx.post(
        f"{site['url']}/v1/checkins",
        json={"place_id": site["oodi"], "qr_token": site["links"]["oodi"].rsplit("/", 1)[1]},
        headers=device,
    )
    assert checkin.status_code == 201, checkin.text
    expect(page.locator("#inbox li", has_text="Welcome to Oodi")).to_have_count(2)

    # Choices can be changed later.
    page.locator("#privacy").get_by_label("Count my visits anonymously").check()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.locator("#choices-note")).to_contain_text("Saved")
    me = httpx.get(f"{site['url']}/v1/devices/me", headers=device)
    assert me.json()["consents"] == {"offers": True, "analytics": True}


def test_walking_into_oodi_with_location_on_gives_an_enter_and_its_offer(
    phone: tuple[BrowserContext, Offline], site: dict[str, Any]
) -> None:
    context, _ = phone
    page = context.new_page()
    # Enrolled at the theatre's door, then walking past the library with the app open.
    page.goto(site["links"]["theatre"])
    page.locator("#consent").get_by_label("Tell me about events and offers").check()
    page.get_by_role("button", name="Continue and check in").click()
    expect(page.get_by_role("heading", name="National Theatre")).to_be_visible()
    banner = page.locator("#location-banner")
    expect(banner).to_be_hidden()

    page.get_by_role("button", name="Use my location").click()
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Using your location while this app is open")
    for lat, lon in WALK[1:]:
        page.wait_for_timeout(1200)
        context.set_geolocation({"latitude": lat, "longitude": lon, "accuracy": 10})
    expect(page.locator("#location-place")).to_contain_text("You're at Helsinki Central Library Oodi", timeout=30_000)
    events = page.evaluate("window.placecast.events")
    assert any(e["kind"] == "enter" and e["place_id"] == site["oodi"] for e in events), events
    expect(page.locator("#inbox li", has_text="3D printers free today")).to_be_visible()
    fits(page)
    shot(page, "visitor-location", tall=True)

    page.get_by_role("button", name="Stop", exact=True).click()
    expect(banner).to_be_hidden()
    expect(page.get_by_role("button", name="Use my location")).to_be_visible()


def test_the_app_shell_loads_offline(phone: tuple[BrowserContext, Offline], site: dict[str, Any]) -> None:
    context, _ = phone
    page = context.new_page()
    check_in_at_oodi(page, site)
    page.wait_for_function("navigator.serviceWorker.controller !== null || navigator.serviceWorker.ready")
    page.evaluate("navigator.serviceWorker.ready")
    page.reload()  # now controlled by the service worker, which has cached the shell
    expect(page.get_by_role("heading", name="Helsinki Central Library Oodi")).to_be_visible()
    page.wait_for_function("navigator.serviceWorker.controller !== null")

    context.set_offline(True)
    try:
        page.reload()
        expect(page.locator("#net")).to_be_visible()
        expect(page.get_by_role("heading", name="Helsinki Central Library Oodi")).to_be_visible()
        expect(page.locator("#content")).to_contain_text("Story time at 15:00")
        shot(page, "visitor-offline")
        manifest = page.evaluate("fetch('/app/manifest.webmanifest').then((r) => r.json())")
        assert manifest["start_url"] == "/app/" and manifest["display"] == "standalone"
    finally:
        context.set_offline(False)


def test_delete_my_data_erases_the_device(phone: tuple[BrowserContext, Offline], site: dict[str, Any]) -> None:
    context, _ = phone
    page = context.new_page()
    check_in_at_oodi(page, site)
    credential = stored(page, "credential")
    device = {"Authorization": f"Bearer {credential}"}
    assert httpx.get(f"{site['url']}/v1/devices/me", headers=device).status_code == 200

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete my data").click()
    page.wait_for_timeout(300)
    assert httpx.get(f"{site['url']}/v1/devices/me", headers=device).status_code == 200  # not without confirming

    said: list[str] = []

    def accept(dialog: Any) -> None:
        said.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Delete my data").click()
    expect(page.get_by_role("heading", name="Your data is deleted")).to_be_visible()
    assert "cannot be undone" in said[0]
    assert httpx.get(f"{site['url']}/v1/devices/me", headers=device).status_code == 401
    assert stored(page, "credential") is None
    assert serious_violations(page) == []
    shot(page, "visitor-erased")
    page.reload()
    expect(page.get_by_role("heading", name="Scan the code at the door")).to_be_visible()


def test_pages_carry_a_strict_content_security_policy(site: dict[str, Any]) -> None:
    for path in ("/app", "/app/", "/app/c/1.2.x"):
        answer = httpx.get(site["url"] + path)
        assert answer.status_code == 200 and '<script type="module" src="/app/static/app.js">' in answer.text
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "connect-src 'self'" in policy
        assert answer.headers["referrer-policy"] == "no-referrer"
    worker = httpx.get(site["url"] + "/app/sw.js")
    assert worker.status_code == 200 and worker.headers["content-type"].startswith("text/javascript")
    manifest = json.loads(httpx.get(site["url"] + "/app/manifest.webmanifest").text)
    assert {icon["sizes"] for icon in manifest["icons"]} >= {"192x192", "512x512"}

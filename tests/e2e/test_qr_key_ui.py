"""The admin UI's "Rotate QR key" for owners, in Debian's Chromium: it warns that printed codes stop working, does
nothing unless confirmed, and is not offered to editors (the server refuses them anyway)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from infra.cli import app as cli
from infra.stack import free_port, start_api
from tests.e2e.ui_helpers import CHROMIUM, CHROMIUM_ARGS, stop
from tests.world import BLOCK

if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Dialog, Page, expect, sync_playwright

PASSWORD = "correct horse battery staple"
runner = CliRunner()


@pytest.fixture(scope="module")
def site(test_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    port = free_port()
    api = start_api(test_env, port)
    slug = "qrui-" + secrets.token_hex(3)
    made = runner.invoke(cli, ["create-org", "QR library", slug])
    assert made.exit_code == 0, made.output
    people = {role: f"{role}-{slug}@example.org" for role in ("owner", "editor")}
    for role, email in people.items():
        result = runner.invoke(cli, ["create-admin", email, "--org", slug, "--role", role, "--password", PASSWORD])
        assert result.exit_code == 0, result.output
    try:
        yield {"url": f"http://127.0.0.1:{port}", "key": made.output.strip().splitlines()[-1], **people}
    finally:
        stop(api)


def _log_in(page: Page, email: str) -> None:
    page.goto("/admin")
    page.locator("#login-email").fill(email)
    page.locator("#login-password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()
    page.get_by_role("tab", name="QR codes").click()


def test_owners_rotate_after_a_warning_and_editors_are_not_offered_it(site: dict[str, Any]) -> None:
    with httpx.Client(base_url=site["url"], headers={"X-API-Key": site["key"]}) as http:
        place = http.post("/admin/v1/places", json={"name": "Oodi", "kind": "library", "fences": [{"geometry": BLOCK}]})
        assert place.status_code == 201, place.text
        assert http.post(f"/admin/v1/places/{place.json()['id']}/qr-token").status_code == 200

        def rotated_at() -> Any:
            return http.get("/admin/v1/organisation/qr-key").json()["rotated_at"]

        with sync_playwright() as driver:
            chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = chromium.new_page(base_url=site["url"])
                page.set_default_timeout(15_000)
                _log_in(page, site["owner"])
                card = page.locator("#qr-key")
                expect(card).to_be_visible()
                expect(card).to_contain_text("invalidates every printed QR code")
                expect(page.locator("#qr-key-state")).to_contain_text("in use")
                said: list[str] = []

                def answer(accept: bool) -> Any:
                    def handle(dialog: Dialog) -> None:
                        said.append(dialog.message)
                        dialog.accept() if accept else dialog.dismiss()

                    return handle

                page.once("dialog", answer(False))
                page.get_by_role("button", name="Rotate QR key…").click()
                page.wait_for_timeout(300)
                assert said and "stops working" in said[0]
                assert rotated_at() is None  # dismissed: nothing happened
                page.once("dialog", answer(True))
                page.get_by_role("button", name="Rotate QR key…").click()
                expect(page.locator("#qr-key-state")).to_contain_text("last rotated")
                assert rotated_at() is not None

                editor = chromium.new_page(base_url=site["url"])
                _log_in(editor, site["editor"])
                expect(editor.locator("#panel-qr")).to_be_visible()
                expect(editor.locator("#qr-key")).to_be_hidden()
            finally:
                chromium.close()

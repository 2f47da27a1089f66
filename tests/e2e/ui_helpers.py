"""Helpers for the browser and process tests: the arq worker process, Chromium, the map.

The API process comes from `infra.stack.start_api` (the app as `infra/run.sh` serves it, UI included).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Every run writes its screenshots to var/screenshots (not tracked); `PLACECAST_SCREENSHOTS=docs/screenshots`
# refreshes the ones the README shows.
SCREENSHOTS = Path(__file__).resolve().parents[2] / os.environ.get("PLACECAST_SCREENSHOTS", "var/screenshots")


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "infra.worker"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def shot(page: Page, name: str, *, tall: bool = False, hide_toast: bool = False) -> Path:
    """Write docs/screenshots/<name>.png; `tall` grows the window to the page's height (the header is sticky,
    which a full-page capture would paint in the middle)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if hide_toast:
        page.evaluate("document.querySelector('#toast').hidden = true")
    size = page.viewport_size
    if tall and size is not None:
        height = int(page.evaluate("document.documentElement.scrollHeight"))
        page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), 2400)})
        page.wait_for_timeout(100)
    page.screenshot(path=str(path))
    if tall and size is not None:
        page.set_viewport_size(size)
    return path


def map_pixel(page: Page, lat: float, lon: float, map_id: str = "map") -> tuple[float, float]:
    """The page coordinates of a point on a Leaflet map of the UI."""
    point: dict[str, float] = page.evaluate(
        """([id, lat, lon]) => {
            const map = window.placecast.map;
            const p = map.latLngToContainerPoint([lat, lon]);
            const box = document.getElementById(id).getBoundingClientRect();
            return {x: box.left + p.x, y: box.top + p.y};
        }""",
        [map_id, lat, lon],
    )
    return point["x"], point["y"]


def map_centre(page: Page) -> tuple[float, float]:
    box = page.locator("#map").bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def draw_polygon(page: Page, points: list[tuple[float, float]]) -> None:
    """Click Geoman's polygon tool, click each corner, then the first corner again to finish."""
    page.get_by_role("button", name="Draw Polygons").click()
    for x, y in points:
        page.mouse.click(x, y)
        page.wait_for_timeout(60)
    page.mouse.click(*points[0])


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
    page.mouse.move(*end, steps=5)
    page.mouse.up()


def api_json(page: Page, method: str, path: str, data: Any = None) -> tuple[int, Any]:
    """A request with the page's own session cookie and CSRF token, as its scripts would send it."""
    me = page.request.get("/admin/v1/me")
    assert me.ok, me.text()
    headers = {"X-CSRF-Token": me.json()["csrf_token"]}
    response = page.request.fetch(path, method=method, headers=headers, data=data)
    try:
        body = response.json()
    except Exception:
        body = response.text()
    return response.status, body


class Offline:
    """Abort every request that is not to our server, and remember it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.elsewhere: list[str] = []

    def __call__(self, route: Route) -> None:
        if route.request.url.startswith(self.base_url + "/") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            self.elsewhere.append(route.request.url)
            route.abort()

"""The admin UI: static files served by the app, browser libraries from admin/node_modules (no CDN, no build).

`/admin` is the single page, `/admin/static/...` our own ES modules and CSS, `/admin/vendor/...` a fixed
list of files from the npm packages installed by `npm ci --prefix admin`, `/admin/config.json` what the
page needs from settings (the tile URL). The page talks only to `/admin/v1` on the same origin; the only
other host it may contact is the configured tile server, and the content security policy says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

ADMIN_DIR = Path(__file__).resolve().parent
STATIC_DIR = ADMIN_DIR / "static"
NODE_MODULES = ADMIN_DIR / "node_modules"

DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_ATTRIBUTION = '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
DEFAULT_CENTER = (60.1699, 24.9384)  # (lat, lon): Helsinki, where the demo data is
DEFAULT_ZOOM = 15

# URL under /admin/vendor/ -> file under admin/node_modules/. Only these are served.
VENDOR_FILES: dict[str, str] = {
    "leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet.css": "leaflet/dist/leaflet.css",
    "images/layers.png": "leaflet/dist/images/layers.png",
    "images/layers-2x.png": "leaflet/dist/images/layers-2x.png",
    "images/marker-icon.png": "leaflet/dist/images/marker-icon.png",
    "images/marker-icon-2x.png": "leaflet/dist/images/marker-icon-2x.png",
    "images/marker-shadow.png": "leaflet/dist/images/marker-shadow.png",
    "leaflet-geoman.js": "@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.min.js",
    "leaflet-geoman.css": "@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.css",
    "chart.umd.js": "chart.js/dist/chart.umd.min.js",
}

MISSING_ASSETS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Placecast admin: assets missing</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>The admin UI is not installed</h1>
<p>The browser libraries of the admin UI (Leaflet, Leaflet-Geoman, Chart.js) come from the npm registry and
are not installed on this server.</p>
<p><strong>To fix it: run infra/run.sh to install the admin UI assets</strong>
(it runs <code>npm ci --prefix admin</code>), then reload this page.</p>
<p>The admin API under <code>/admin/v1</code> works without them.</p>
</body></html>
"""


def tile_origin(tile_url: str) -> str | None:
    """The CSP source for the tile server: `https://{s}.tile.example` becomes `https://*.tile.example`."""
    parts = urlsplit(tile_url.replace("{s}", "x-subdomain"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.netloc.replace("x-subdomain", "*")
    if "{" in host or "}" in host:
        return f"{parts.scheme}:"
    return f"{parts.scheme}://{host}"


def content_security_policy(tile_url: str) -> str:
    tiles = tile_origin(tile_url) if tile_url else None
    images = "'self' data: blob:" + (f" {tiles}" if tiles else "")
    return "; ".join(
        (
            "default-src 'self'",
            f"img-src {images}",
            # Leaflet positions everything with inline styles.
            "style-src 'self' 'unsafe-inline'",
            "script-src 'self'",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        )
    )


def assets_installed(node_modules: Path = NODE_MODULES) -> bool:
    return all((node_modules / relative).is_file() for relative in VENDOR_FILES.values())


def ui_config(settings: Any) -> dict[str, Any]:
    """What the page reads from /admin/config.json. An empty tile URL means no tiles at all (a plain map)."""
    tile_url = getattr(settings, "tile_url", None)
    tile_url = DEFAULT_TILE_URL if tile_url is None else str(tile_url).strip()
    attribution = getattr(settings, "tile_attribution", None)
    if attribution is None:
        attribution = DEFAULT_ATTRIBUTION if "openstreetmap" in tile_url else ""
    center = getattr(settings, "map_center", None) or DEFAULT_CENTER
    return {
        "tile_url": tile_url,
        "tile_attribution": attribution,
        "map_center": [float(center[0]), float(center[1])],
        "map_zoom": int(getattr(settings, "map_zoom", None) or DEFAULT_ZOOM),
    }


def mount_admin_ui(app: FastAPI, settings: Any, node_modules: Path = NODE_MODULES) -> None:
    """Serve the admin UI at /admin (once, however often called). `settings` is read with getattr."""
    if getattr(app.state, "admin_ui_mounted", False):
        return
    app.state.admin_ui_mounted = True
    config = ui_config(settings)
    csp = content_security_policy(config["tile_url"])
    page_headers = {
        "Content-Security-Policy": csp,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }

    def missing() -> HTMLResponse:
        return HTMLResponse(MISSING_ASSETS_PAGE, status_code=503, headers={"Retry-After": "60"})

    @app.get("/admin", include_in_schema=False)
    @app.get("/admin/", include_in_schema=False)
    async def admin_page() -> Response:
        if not assets_installed(node_modules):
            return missing()
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=page_headers)

    @app.get("/admin/config.json", include_in_schema=False)
    async def admin_config() -> Response:
        return JSONResponse(config, headers={"Cache-Control": "no-cache"})

    @app.get("/admin/vendor/{name:path}", include_in_schema=False)
    async def admin_vendor(name: str) -> Response:
        relative = VENDOR_FILES.get(name)
        if relative is None:
            return JSONResponse({"error": "not_found", "message": f"no vendor file {name!r}"}, status_code=404)
        path = node_modules / relative
        if not path.is_file():
            return missing()
        # Versions are pinned in admin/package-lock.json; a day of caching is safe.
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/admin/static", StaticFiles(directory=STATIC_DIR), name="admin-static")

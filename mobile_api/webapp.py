"""The visitor web app at `/app`: an installable PWA of plain ES modules, served by the API itself (no CDN, no
build step).

`/app` and `/app/c/<token>` (what a printed QR code opens) are the one page; `/app/static/...` its modules, styles
and icons; `/app/manifest.webmanifest` and `/app/sw.js` (the service worker, at `/app/` so that its scope is the
whole app). The page talks only to `/v1` on the same origin, and the content security policy says so: no inline
script or style, no other host, no framing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

APP_DIR = Path(__file__).resolve().parent / "static" / "app"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "worker-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    )
)
# Geolocation for this origin only, and nothing else a page could ask for.
PERMISSIONS_POLICY = "geolocation=(self), camera=(), microphone=(), payment=(), usb=()"

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Permissions-Policy": PERMISSIONS_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # The page's URL may hold a QR token: it is not sent on to anyone.
    "Referrer-Policy": "no-referrer",
}


def mount_visitor_app(app: FastAPI) -> None:
    """Serve the visitor app at /app (once, however often called)."""
    if getattr(app.state, "visitor_app_mounted", False):
        return
    app.state.visitor_app_mounted = True

    def page() -> Response:
        return FileResponse(APP_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/app", include_in_schema=False)
    @app.get("/app/", include_in_schema=False)
    async def visitor_page() -> Response:
        return page()

    @app.get("/app/c/{token}", include_in_schema=False)
    async def visitor_checkin_page(token: str) -> Response:
        # The page reads the token from its own URL, then takes it out of the address bar.
        return page()

    @app.get("/app/manifest.webmanifest", include_in_schema=False)
    async def visitor_manifest() -> Response:
        return FileResponse(
            APP_DIR / "manifest.webmanifest",
            media_type="application/manifest+json",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/app/sw.js", include_in_schema=False)
    async def visitor_service_worker() -> Response:
        # Always revalidated, so a new version of the app reaches installed copies on their next visit.
        return FileResponse(
            APP_DIR / "sw.js",
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    app.mount("/app/static", StaticFiles(directory=APP_DIR), name="visitor-app-static")

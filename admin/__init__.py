"""Admin API for administrators: `/admin/v1`, organisation-scoped and role-checked."""

from __future__ import annotations

from fastapi import FastAPI


def register_admin_routers(app: FastAPI) -> None:
    """Add the session, live feed, analytics, upload-import and QR routes (once, however often called)."""
    if getattr(app.state, "admin_routers_registered", False):
        return
    from admin.analytics_api import router as analytics_router
    from admin.auth_api import router as auth_router
    from admin.import_api import router as import_router
    from admin.live_api import router as live_router
    from admin.qr_api import router as qr_router

    for router in (auth_router, live_router, analytics_router, import_router, qr_router):
        app.include_router(router)
    app.state.admin_routers_registered = True

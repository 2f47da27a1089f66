"""The ASGI application: its resources are made in the lifespan by the composition root (`infra/container.py`),
never at import time; `app.state` holds the settings (from creation) and the resources (while it runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from infra.container import close_resources, open_resources
from infra.http import BodyLimitMiddleware, ORJSONResponse, document_errors, install_error_handlers
from infra.logging import configure_logging
from infra.resources import Resources
from infra.settings import Settings, get_settings

# Error answers beyond what an operation's shape tells (422 with parameters or a body, 413 with a body, 401 with
# credentials, 404 with a path id, 503 everywhere): a regular expression over "METHOD /path" -> statuses.
ERROR_ANSWERS = {
    r"^\w+ /admin/v1/": {401, 403},  # the principal: role, organisation, CSRF token, membership
    r"^POST /admin/v1/session$": {429},  # failed logins per address and account
    r"^POST /admin/v1/(content|tasks)$": {404},  # the place named in the body
    r"^POST /admin/v1/webhook-deliveries/\{delivery_id\}/retry$": {409},  # only dead deliveries
    r"^\w+ /v1/": {401, 429},  # the device credential (or enrolment key), limited per device
    r"^POST /v1/devices$": {409},  # an external_id registered already
    r"^POST /v1/(fixes|fixes/batch|checkins|checkouts|owntracks)$|^\w+ /v1/osmand$": {404},  # an erased device
    r"^POST /v1/checkins$": {403},  # no proof of presence
    r"^POST /v1/devices/enrol-by-qr$": {403},  # not a valid QR token of any place
    r"^(GET|POST) /v1/tasks": {403},  # staff devices only
    r"^POST /v1/tasks/\{task_id\}/(acknowledge|complete)$": {409},  # not in a state that allows it
    r"^(POST /v1/owntracks|\w+ /v1/osmand)$": {400},  # a message the client protocol cannot turn into a fix
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = await open_resources(settings, "api")
        app.state.resources = resources
        try:
            yield
        finally:
            await close_resources(resources)

    app = FastAPI(
        title="Placecast",
        version="0.1.0",
        description="Geofences, check-ins and pushes around public buildings.",
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Logging in and out need no credentials (logging out without a session only clears the cookie).
    document_errors(app, ERROR_ANSWERS, optional_auth=("POST /admin/v1/session", "DELETE /admin/v1/session"))
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        overrides={"/admin/v1/import/": settings.import_max_bytes, "/admin/v1/imports": settings.import_max_bytes},
    )

    from admin.content_api import router as content_router
    from admin.events_api import router as events_router
    from admin.organisation_api import router as organisation_router
    from admin.places_api import router as places_router
    from admin.webhooks_api import router as webhooks_router
    from mobile_api.api import router as mobile_router
    from mobile_api.clients_api import router as clients_router
    from mobile_api.inbox_api import router as inbox_router
    from mobile_api.visitor_api import router as visitor_router
    from mobile_api.webapp import mount_visitor_app

    app.include_router(places_router)
    app.include_router(content_router)
    app.include_router(webhooks_router)
    app.include_router(events_router)
    app.include_router(organisation_router)
    from admin import register_admin_routers

    register_admin_routers(app)
    from admin.ui import mount_admin_ui

    mount_admin_ui(app, settings)
    app.include_router(mobile_router)
    app.include_router(clients_router)
    app.include_router(inbox_router)
    app.include_router(visitor_router)
    mount_visitor_app(app)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready() -> Response:
        problems = {}
        resources: Resources = app.state.resources
        try:
            async with resources.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as error:
            problems["postgres"] = type(error).__name__
        try:
            await resources.redis.ping()
        except Exception as error:
            problems["redis"] = type(error).__name__
        if problems:
            return ORJSONResponse({"status": "unavailable", "down": problems}, status_code=503)
        return ORJSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app

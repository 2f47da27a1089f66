"""`placecast` — one command line for running, importing, exporting, simulating and benchmarking."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infra.backup import BackupError, BackupKind, PgBackRest, archiving, parse_target
from infra.settings import Settings, ensure_local_secrets, get_settings
from infra.stack import PgCluster, RedisServer, pg_data_dir

app = typer.Typer(help="Placecast: geofences, check-ins and pushes around public buildings.", no_args_is_help=True)
console = Console(stderr=True)
T = TypeVar("T")


def stack(settings: Settings) -> tuple[PgCluster, RedisServer]:
    pg = PgCluster(
        pg_data_dir(settings.var_dir),
        settings.pg_port,
        settings.pg_user,
        settings.pg_password.get_secret_value(),
        settings.pg_database,
    )
    archiving(settings, pg)  # WAL into the backup repository (infra/backup.py) unless PLACECAST_BACKUP_ENABLED=false
    redis = RedisServer(settings.var_dir / "redis", settings.redis_port, settings.redis_password.get_secret_value())
    return pg, redis


def _with_session(work: Callable[[Any], Awaitable[T]]) -> T:
    from infra.db import make_engine, make_session_factory

    async def main() -> T:
        engine = make_engine(get_settings().database_url, pool_size=2)
        try:
            return await work(make_session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


async def _org_id(factory: Any, slug: str) -> int:
    from services.org_repository import organisation_by_slug

    async with factory() as session:
        found = await organisation_by_slug(session, slug)
    if found is None:
        console.print(f"[red]no organisation {slug!r}[/red] (create one with `placecast create-org`)")
        raise typer.Exit(2)
    return int(found)


@app.command()
def migrate() -> None:
    """Apply the database migrations (Alembic) up to the newest."""
    from infra.migrate import upgrade

    upgrade(get_settings().sync_database_url)
    console.print("migrated to head")


# ---- the container's commands (Dockerfile, infra/k8s/): one process each, in the foreground ----


def api_argv(settings: Settings, workers: int, graceful_shutdown_s: int | None = None) -> list[str]:
    """The API server as `up` starts it (uvicorn on the app factory, no access log, forwarded headers read only
    by the app from trusted proxies), listening where the settings say."""
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "infra.app:create_app",
        "--host",
        settings.api_host,
        "--port",
        str(settings.api_port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--no-proxy-headers",  # X-Forwarded-For is read by infra/proxy.py, from trusted proxies only
    ]
    if graceful_shutdown_s is not None:  # open SSE streams must not hold a stopping pod until it is killed
        argv += ["--timeout-graceful-shutdown", str(graceful_shutdown_s)]
    return argv


@app.command()
def api(
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes (one per container is usual)")] = 1,
    graceful_shutdown_s: Annotated[
        int | None, typer.Option(min=0, help="on SIGTERM, close connections still open after this many seconds")
    ] = None,
) -> None:
    """Serve the HTTP API in the foreground on PLACECAST_API_HOST:PLACECAST_API_PORT (no database, Redis or
    migrations started: they are the deployment's)."""
    argv = api_argv(get_settings(), workers, graceful_shutdown_s)
    os.execv(argv[0], argv)  # uvicorn takes this process: SIGTERM from the container runtime reaches it


@app.command()
def worker() -> None:
    """Run the arq worker in the foreground, as `python -m infra.worker` (on SIGTERM it finishes running jobs for
    up to PLACECAST_WORKER_SHUTDOWN_WAIT_S seconds)."""
    from infra.worker import main

    main()


@app.command("seed-demo")
def seed_demo() -> None:
    """Load the demo organisation, Helsinki's public buildings, content and tasks (idempotent)."""
    from infra.demo import seed_demo as seed

    key_file = get_settings().var_dir / "demo-api-key"
    enrolment_file = get_settings().var_dir / "demo-enrolment-key"
    summary = _with_session(
        lambda factory: seed(
            factory, want_api_key=not key_file.exists(), want_enrolment_key=not enrolment_file.exists()
        )
    )
    for path, key in ((key_file, summary["api_key"]), (enrolment_file, summary["enrolment_key"])):
        if key:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(key + "\n")
            path.chmod(0o600)
    password_file = get_settings().var_dir / "demo-admin-password"
    if not password_file.exists():
        _demo_admin(summary["organisation_id"], password_file)
    console.print(f"demo data: {summary['created']} places created, {summary['updated']} updated")
    _demo_visitor_link(get_settings())


def _demo_visitor_link(settings: Settings) -> None:
    """var/demo-visitor-link: the visitor app's link a printed code at Oodi's door holds (what a phone's camera
    opens), written fresh on every start so it never outlives the organisation's QR key."""
    from admin.qr_api import visitor_app_url
    from infra.demo import visitor_token

    secret, ttl_s = settings.secret_key.get_secret_value(), settings.qr_token_ttl_days * 86400
    token = _with_session(lambda factory: visitor_token(factory, secret=secret, ttl_s=ttl_s))
    if token is None:
        return
    base = (settings.public_base_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
    link = settings.var_dir / "demo-visitor-link"
    link.write_text(visitor_app_url(base, token) + "\n")


DEMO_ADMIN = "admin@demo.placecast"


def _demo_admin(organisation_id: int, password_file: Path) -> None:
    """The demo's UI login: owner of the demo organisation; a lost password file means a new password."""
    from kernel.uow import unit_of_work
    from services.accounts import add_membership, create_user, find_user_id, generate_password, set_password
    from services.models import Role

    password = generate_password()

    async def work(factory: Any) -> None:
        async with unit_of_work(factory) as uow:
            user_id = await find_user_id(uow.session, DEMO_ADMIN)
            if user_id is None:
                await create_user(
                    uow.session, email=DEMO_ADMIN, password=password, organisation_id=organisation_id, role=Role.owner
                )
            else:
                await set_password(uow.session, user_id=user_id, password=password)
                await add_membership(uow.session, user_id=user_id, organisation_id=organisation_id, role=Role.owner)

    _with_session(work)
    password_file.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: no moment where another user could read it.
    with os.fdopen(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(password + "\n")


@app.command("create-org")
def create_org(name: str, slug: str) -> None:
    """Create an organisation and print an owner API key for it."""
    from kernel.uow import unit_of_work
    from services.models import Role
    from services.orgs import create_api_key, create_organisation

    async def work(factory: Any) -> str:
        async with unit_of_work(factory) as uow:
            organisation_id = await create_organisation(uow.session, name=name, slug=slug)
            return await create_api_key(uow.session, organisation_id=organisation_id, name="cli", role=Role.owner)

    typer.echo(_with_session(work))


@app.command("create-admin")
def create_admin(
    email: str,
    org: Annotated[str, typer.Option(help="organisation slug")],
    role: Annotated[str, typer.Option(help="owner, editor or viewer")] = "owner",
    password: Annotated[str | None, typer.Option(help="default: a generated one, printed once")] = None,
) -> None:
    """Create a user of the admin UI in an organisation, or give an existing user a role in one more."""
    if role not in ("owner", "editor", "viewer"):
        console.print("[red]--role is owner, editor or viewer[/red]")
        raise typer.Exit(2)
    from kernel.errors import DomainError
    from kernel.uow import unit_of_work
    from services.accounts import add_membership, create_user, find_user_id, generate_password, set_password
    from services.models import Role

    chosen = password or generate_password()

    async def work(factory: Any) -> bool:
        organisation_id = await _org_id(factory, org)
        async with unit_of_work(factory) as uow:
            user_id = await find_user_id(uow.session, email)
            if user_id is None:
                await create_user(
                    uow.session, email=email, password=chosen, organisation_id=organisation_id, role=Role(role)
                )
                return True
            await add_membership(uow.session, user_id=user_id, organisation_id=organisation_id, role=Role(role))
            if password:
                await set_password(uow.session, user_id=user_id, password=password)
            return False

    try:
        created = _with_session(work)
    except DomainError as error:
        console.print(f"[red]{error.message}[/red] " + "; ".join(f"{p.field}: {p.reason}" for p in error.problems))
        raise typer.Exit(2) from error
    if created:
        console.print(f"created {email} ({role} of {org}); log in at /admin")
        if not password:
            typer.echo(chosen)
    else:
        console.print(f"{email} exists: now {role} of {org}" + ("; password changed" if password else ""))


@app.command("create-api-key")
def create_key(
    org: str,
    name: str = "cli",
    role: Annotated[str, typer.Option(help="owner, editor or viewer")] = "editor",
    purpose: Annotated[str, typer.Option(help="admin (admin API) or enrolment (ships in the app)")] = "admin",
) -> None:
    """Print a new API key for an organisation (shown once; only its hash is stored)."""
    if purpose not in ("admin", "enrolment") or role not in ("owner", "editor", "viewer"):
        console.print("[red]--purpose is admin or enrolment; --role is owner, editor or viewer[/red]")
        raise typer.Exit(2)
    from kernel.uow import unit_of_work
    from services.models import Role
    from services.orgs import create_api_key

    async def work(factory: Any) -> str:
        organisation_id = await _org_id(factory, org)
        async with unit_of_work(factory) as uow:
            return await create_api_key(
                uow.session, organisation_id=organisation_id, name=name, role=Role(role), purpose=purpose
            )

    typer.echo(_with_session(work))


@app.command("org-settings")
def org_settings(
    org: Annotated[str, typer.Option(help="organisation slug")],
    late_fix_after_s: Annotated[
        int | None,
        typer.Option(help="late-fix limit in seconds (60 to 604800): later fixes make late events, never pushed"),
    ] = None,
    service_default: Annotated[
        bool, typer.Option("--service-default", help="clear the organisation's limit: the service's setting applies")
    ] = False,
) -> None:
    """Show an organisation's own settings as JSON, or change its late-fix limit (audited as the CLI)."""
    if late_fix_after_s is not None and service_default:
        console.print("[red]give --late-fix-after-s or --service-default, not both[/red]")
        raise typer.Exit(2)
    from kernel.errors import DomainError
    from kernel.uow import unit_of_work
    from services import orgs

    async def work(factory: Any) -> orgs.OrganisationSettings:
        organisation_id = await _org_id(factory, org)
        async with unit_of_work(factory) as uow:
            if late_fix_after_s is None and not service_default:
                return await orgs.organisation_settings(uow.session, organisation_id)
            return await orgs.set_late_fix_after_s(
                uow.session, organisation_id=organisation_id, actor="cli", late_fix_after_s=late_fix_after_s
            )

    try:
        found = _with_session(work)
    except DomainError as error:
        console.print(f"[red]{error.message}[/red]: " + "; ".join(f"{p.field}: {p.reason}" for p in error.problems))
        raise typer.Exit(2) from error
    own = found.late_fix_after_s
    effective = get_settings().late_fix_after_s if own is None else own
    typer.echo(json.dumps({"late_fix_after_s": own, "effective_late_fix_after_s": effective}))


@app.command("import-osm")
def import_osm(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="An .osm.pbf extract")],
    tags: Annotated[
        str | None, typer.Option(help="e.g. amenity=library,amenity=townhall; default: public buildings")
    ] = None,
    org: Annotated[str, typer.Option(help="organisation slug")] = "demo",
    node_radius_m: Annotated[float | None, typer.Option(help="radius of circles made from tagged nodes")] = None,
) -> None:
    """Import public buildings from OpenStreetMap, idempotent on the OSM id (a re-import updates)."""
    from geofences.osm_import import DEFAULT_PUBLIC_TAGS, parse_tag_filter, read_osm_places
    from kernel.uow import unit_of_work
    from services.places import upsert_places

    settings = get_settings()
    try:
        tag_filter = parse_tag_filter(tags) if tags else DEFAULT_PUBLIC_TAGS
    except ValueError as error:
        console.print(f"[red]bad --tags:[/red] {error}")
        raise typer.Exit(2) from error
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        reading = progress.add_task(f"reading {path.name}", total=None)

        def tick(done: int, total: int | None) -> None:
            progress.update(reading, completed=done, total=total)

        try:
            result = read_osm_places(path, tag_filter, node_radius_m or settings.osm_node_radius_m, progress=tick)
        except (RuntimeError, OSError) as error:  # osmium reports a corrupt file as RuntimeError
            console.print(f"[red]could not read {path}:[/red] {error}")
            raise typer.Exit(2) from error
        progress.update(reading, completed=1, total=1)

        async def store(factory: Any) -> tuple[int, int]:
            organisation_id = await _org_id(factory, org)
            writing = progress.add_task("storing places", total=len(result.places))
            created = updated = 0
            for start in range(0, len(result.places), 200):
                chunk = result.places[start : start + 200]
                async with unit_of_work(factory) as uow:
                    c, u = await upsert_places(uow, organisation_id=organisation_id, actor="cli", specs=chunk)
                created, updated = created + c, updated + u
                progress.advance(writing, len(chunk))
            return created, updated

        created, updated = _with_session(store)
    console.print(f"[green]{created} created, {updated} updated[/green], {len(result.skipped)} skipped")
    for skipped in result.skipped[:20]:
        console.print(f"  skipped {skipped}")


@app.command("import-geojson")
def import_geojson(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    org: Annotated[str, typer.Option(help="organisation slug")] = "demo",
) -> None:
    """Import a GeoJSON FeatureCollection of places (idempotent on external_ref / feature id)."""
    from geofences.geojson_io import features_to_places
    from kernel.uow import unit_of_work
    from services.places import upsert_places

    specs, refused = features_to_places(json.loads(path.read_text()), get_settings().geometry_limits)

    async def store(factory: Any) -> tuple[int, int]:
        organisation_id = await _org_id(factory, org)
        async with unit_of_work(factory) as uow:
            return await upsert_places(uow, organisation_id=organisation_id, actor="cli", specs=specs)

    created, updated = _with_session(store)
    console.print(f"{created} created, {updated} updated, {len(refused)} refused")
    for item in refused:
        console.print(f"  feature {item.index}: " + "; ".join(f"{p.field}: {p.reason}" for p in item.problems))
    if refused:
        raise typer.Exit(1)


@app.command("export-geojson")
def export_geojson(
    org: Annotated[str, typer.Option(help="organisation slug")] = "demo",
    output: Annotated[Path | None, typer.Option("-o", help="file to write (default: stdout)")] = None,
) -> None:
    """Export the organisation's places with their fences as a GeoJSON FeatureCollection."""
    from geofences.geojson_io import places_to_feature_collection
    from kernel.uow import unit_of_work
    from services.places import all_places

    async def load(factory: Any) -> dict[str, Any]:
        organisation_id = await _org_id(factory, org)
        async with unit_of_work(factory) as uow:
            records = await all_places(uow, organisation_id=organisation_id)
        return places_to_feature_collection((r.id, r.spec) for r in records)

    text = json.dumps(_with_session(load), ensure_ascii=False)
    if output:
        output.write_text(text)
    else:
        typer.echo(text)


# ---- placecast events: what the geofence engine recorded (services/activity.py) ----


@app.command("events")
def events(
    org: Annotated[str, typer.Option(help="organisation slug")] = "demo",
    place: Annotated[int | None, typer.Option(min=1, help="only this place (id)")] = None,
    device: Annotated[int | None, typer.Option(min=1, help="only this device (id)")] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="enter, exit, dwell, checkin, checkout (repeat or comma list)")
    ] = None,
    late: Annotated[bool | None, typer.Option("--late/--no-late", help="only late events, or only on-time")] = None,
    since: Annotated[str | None, typer.Option(help="30m, 2h, 1d, 1w ago, or an ISO 8601 time (no zone: UTC)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many (table: default 50; CSV: all)")] = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV to stdout instead of a table")] = False,
) -> None:
    """The events the geofence engine recorded, newest first: a table, or CSV with --csv (streamed)."""
    from geofences.activity import EVENT_COLUMNS, EventFilter, EventRow
    from kernel.errors import DomainError
    from services import activity

    try:
        kinds = activity.parse_kinds(kind, field="--kind")
        start = activity.parse_since(since, field="--since") if since else None
    except DomainError as error:
        console.print(f"[red]{error.message}[/red]: " + "; ".join(f"{p.field}: {p.reason}" for p in error.problems))
        raise typer.Exit(2) from error

    async def work(factory: Any) -> list[EventRow]:
        where = EventFilter(
            organisation_id=await _org_id(factory, org),
            place_id=place,
            device_id=device,
            kinds=kinds,
            late=late,
            start=start,
        )
        chunks = activity.event_chunks(factory, where, limit=limit or (None if csv_out else 50), chunk=500)
        if csv_out:
            async for piece in activity.csv_chunks(chunks, EVENT_COLUMNS):
                typer.echo(piece, nl=False)
            return []
        return [row async for rows in chunks for row in rows]

    rows = _with_session(work)
    if not csv_out:
        _events_table(rows)


def _events_table(rows: list[Any]) -> None:
    from datetime import UTC

    from rich.table import Table
    from rich.text import Text

    table = Table("id", "occurred (UTC)", "kind", "zone", "place", "device", "visit", "late", "received (UTC)")
    for row in rows:
        table.add_row(
            str(row.id),
            row.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            row.kind,
            row.zone,
            Text(f"{row.place_name} ({row.place_id})"),  # Text: a name is never read as rich markup
            str(row.device_id),
            "" if row.visit_id is None else str(row.visit_id),
            "late" if row.late else "",
            row.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
    Console().print(table)
    console.print(f"{len(rows)} events, newest first")


# ---- end of placecast events ----


@app.command()
def simulate(
    route: Annotated[list[str] | None, typer.Option(help="visitor-oodi, staff-fire-station (repeatable)")] = None,
    url: Annotated[str | None, typer.Option(help="API base URL (default: the local server)")] = None,
    enrolment_key: Annotated[str | None, typer.Option(help="default: the demo organisation's")] = None,
    speed: Annotated[float, typer.Option(help="walking speed, m/s")] = 1.4,
    interval: Annotated[float, typer.Option(help="seconds between fixes")] = 5.0,
    noise: Annotated[float, typer.Option(help="GPS noise, metres (1 sigma)")] = 4.0,
    realtime: Annotated[bool, typer.Option(help="wait between fixes instead of replaying at once")] = False,
) -> None:
    """Walk simulated devices along routes through the HTTP API and print the events the server produced."""
    import httpx

    from infra.simulate import ROUTES, run_route

    settings = get_settings()
    key_file = settings.var_dir / "demo-enrolment-key"
    key = enrolment_key or (key_file.read_text().strip() if key_file.exists() else None)
    if not key:
        console.print("[red]no enrolment key[/red]: pass --enrolment-key or run the demo first")
        raise typer.Exit(2)
    names = route or list(ROUTES)
    unknown = [n for n in names if n not in ROUTES]
    if unknown:
        console.print(f"[red]unknown route(s) {unknown}[/red]; choose from {sorted(ROUTES)}")
        raise typer.Exit(2)

    def show(name: str, event: dict[str, Any]) -> None:
        typer.echo(f"{name}: {event['kind']:<6} {event['place_name']} ({event['zone']}) at {event['occurred_at']}")

    base = url or f"http://{settings.api_host}:{settings.api_port}"
    with httpx.Client(base_url=base, timeout=10) as http:
        for name in names:
            events = run_route(
                http,
                key,
                ROUTES[name],
                speed_mps=speed,
                interval_s=interval,
                noise_m=noise,
                realtime=realtime,
                on_event=show,
            )
            console.print(f"{name}: {len(events)} events")


@app.command()
def bench(
    only: Annotated[
        str, typer.Option(help="comma list of flap,engine,http,push,pipeline,pgbench (pgbench: not by default)")
    ] = "flap,engine,http,push,pipeline",
    quick: Annotated[bool, typer.Option(help="smaller sizes, shorter runs")] = False,
) -> None:
    """Run the benchmarks side by side (engine vs PostGIS, HTTP ingest, push); table + JSON in bench/results/."""
    from bench.run import main as run_bench

    parts = [p.strip() for p in only.split(",") if p.strip()]
    unknown = set(parts) - {"flap", "engine", "http", "push", "pipeline", "pgbench"}
    if unknown:
        console.print(f"[red]unknown parts {sorted(unknown)}[/red]")
        raise typer.Exit(2)
    run_bench(parts, quick)


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.var_dir / "run" / f"{name}.pid"


def _spawn(
    settings: Settings, name: str, args: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_dir = settings.var_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
    )
    _pidfile(settings, name).parent.mkdir(parents=True, exist_ok=True)
    _pidfile(settings, name).write_text(str(process.pid))
    return process


def _push_setup(settings: Settings) -> tuple[dict[str, str], str]:
    """With no FCM service account configured, start the local FCM-compatible server for the demo."""
    if settings.fcm_credentials_file is not None:
        return {}, f"FCM through firebase-admin with {settings.fcm_credentials_file}"
    import httpx

    from infra.fake_fcm import ensure_certificate, service_env, write_service_account
    from infra.stack import free_port, port_open

    folder = settings.var_dir / "fake_fcm"
    tls = ensure_certificate(folder)
    port = settings.api_port + 443 if not port_open("127.0.0.1", settings.api_port + 443) else free_port()
    account = write_service_account(folder / "service-account.json", f"https://127.0.0.1:{port}/token")
    _spawn(
        settings,
        "fake_fcm",
        [
            sys.executable,
            "-m",
            "infra.fake_fcm",
            "--port",
            str(port),
            "--cert-dir",
            str(folder),
            "--service-account",
            str(account),
        ],
    )
    base = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    with httpx.Client(verify=str(tls.ca), timeout=1) as http:
        while time.monotonic() < deadline:
            try:
                http.get(f"{base}/_fake/stats")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
    env = service_env(base, account, tls.ca)
    note = (
        f"[yellow]no FCM service account set (PLACECAST_FCM_CREDENTIALS_FILE): pushes go to the local "
        f"FCM-compatible server at {base}[/yellow] — see them: curl --cacert {tls.ca} {base}/_fake/messages"
    )
    return env, note


@app.command()
def up(
    workers: Annotated[int, typer.Option(help="API worker processes")] = 2,
    demo: Annotated[bool, typer.Option(help="load the Helsinki demo data")] = True,
) -> None:
    """Start PostGIS, Redis, migrate, load the demo, serve the API and the worker until Ctrl-C."""
    # First run: a random secret key, database and Redis password in var/secrets/ (0600); later runs reuse them.
    generated = ensure_local_secrets()
    get_settings.cache_clear()
    settings = get_settings()
    pg, redis = stack(settings)
    started = time.monotonic()
    backrest = PgBackRest.for_settings(settings, pg) if settings.backup_enabled else None
    if backrest is not None:
        backrest.configure()  # before the cluster starts archiving through it
    console.print(f"starting PostgreSQL/PostGIS on 127.0.0.1:{settings.pg_port} (data in {pg.data_dir})")
    pg.start()
    if backrest is not None:
        backrest.ensure_stanza()
    console.print(f"starting Redis on 127.0.0.1:{settings.redis_port} (append-only file in {redis.data_dir})")
    redis.start()
    migrate()
    if demo:
        seed_demo()
    if backrest is not None and not backrest.backups():
        # WAL is archived from now on; a point in time can be restored only from a full backup before it.
        console.print(f"first full backup into {backrest.repo_path} (later ones: `placecast backup`, see README)")
        backrest.backup("full")
    python = sys.executable
    api = _spawn(settings, "api", api_argv(settings, workers))
    push_env, push_note = _push_setup(settings)
    worker = _spawn(settings, "worker", [python, "-m", "infra.worker"], env=push_env)
    base = f"http://{settings.api_host}:{settings.api_port}"
    deadline = time.monotonic() + 60
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    key_file = settings.var_dir / "demo-api-key"
    console.print(f"\n[bold green]Placecast is up[/bold green] in {time.monotonic() - started:.1f} s")
    console.print(f"  API        {base}   (OpenAPI docs: {base}/docs, health: {base}/health)")
    if key_file.exists():
        console.print(f"  demo key   {key_file.read_text().strip()}   (also in {key_file})")
        console.print(f"  try        curl -H 'X-API-Key: $(cat {key_file})' '{base}/admin/v1/places?limit=5'")
    admin_file = settings.var_dir / "demo-admin-password"
    if admin_file.exists():
        console.print(f"  admin UI   {base}/admin   (log in as {DEMO_ADMIN}, password in {admin_file})")
    visitor_link = settings.var_dir / "demo-visitor-link"
    if visitor_link.exists():
        console.print(f"  visitor    {visitor_link.read_text().strip()}   (Oodi's door QR code: the visitor app)")
    console.print(
        "  simulate   .venv/bin/placecast simulate  (a visitor walks into Oodi; a worker to the fire station)"
    )
    console.print(f"  push       {push_note}")
    console.print(f"  logs       {settings.var_dir / 'log'}")
    if generated:
        console.print(f"  secrets    {next(iter(generated.values())).parent}   (generated on first run, mode 0600)")
    console.print("  Ctrl-C (or `infra/run.sh stop`) stops everything; data stays in var/.\n")

    def shutdown(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        while api.poll() is None and worker.poll() is None:
            time.sleep(0.5)
        console.print("[red]a process exited[/red]; see the logs")
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        _stop_all(settings)


def _stop_all(settings: Settings) -> None:
    # The worker finishes the pushes it has in flight (arq's job_completion_wait) before it exits, and needs
    # PostgreSQL, Redis and FCM (or the local stand-in) until then: those stop last.
    _stop_processes(settings, ("api", "worker"), wait_s=settings.worker_shutdown_wait_s + 10)
    _stop_processes(settings, ("fake_fcm",), wait_s=10)
    pg, redis = stack(settings)
    redis.stop()
    pg.stop()
    console.print("stopped")


def _stop_processes(settings: Settings, names: tuple[str, ...], wait_s: float) -> None:
    """SIGTERM each process group, wait until they have exited, SIGKILL what is left after `wait_s`."""
    groups = []
    for name in names:
        pidfile = _pidfile(settings, name)
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                pgid = int(pidfile.read_text())
                os.killpg(pgid, signal.SIGTERM)
                groups.append(pgid)
            pidfile.unlink(missing_ok=True)
    deadline = time.monotonic() + wait_s
    for pgid in groups:
        while time.monotonic() < deadline and _alive(pgid):
            time.sleep(0.1)
        if _alive(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether the group's leader still runs (a zombie waiting for `up` to reap it has finished)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@app.command()
def stop() -> None:
    """Stop the API, the worker, Redis and PostgreSQL started by `up`."""
    _stop_all(get_settings())


def _backrest(settings: Settings) -> PgBackRest:
    pg, _ = stack(settings)
    if not settings.backup_enabled:
        console.print("[red]backups are off[/red] (PLACECAST_BACKUP_ENABLED=false)")
        raise typer.Exit(2)
    return PgBackRest.for_settings(settings, pg)


@app.command()
def backup(
    full: Annotated[
        bool, typer.Option("--full/--incr", help="a full backup, or only what changed since the last backup")
    ] = True,
) -> None:
    """Back up the project's PostgreSQL cluster with pgBackRest while it serves (WAL is archived continuously; a
    full backup is where a restore starts). Runs as the cluster's owner; schedule it from cron (see README)."""
    settings = get_settings()
    backrest = _backrest(settings)
    if not backrest.cluster.running():
        console.print(f"[red]PostgreSQL is not running on port {settings.pg_port}[/red]: start it (infra/run.sh)")
        raise typer.Exit(2)
    kind: BackupKind = "full" if full else "incr"
    started = time.monotonic()
    try:
        taken = backrest.backup(kind)
    except BackupError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    size = taken.get("info", {}).get("repository", {}).get("delta", 0)
    console.print(
        f"[green]{taken['type']} backup {taken['label']}[/green] in {time.monotonic() - started:.1f} s,"
        f" {size / 1e6:.1f} MB into {backrest.repo_path}"
    )
    for each in backrest.backups():
        stop = time.strftime("%Y-%m-%d %H:%M:%S%z", time.localtime(each["timestamp"]["stop"]))
        typer.echo(f"{each['label']}  {each['type']:5}  until {stop}")


@app.command()
def restore(
    to: Annotated[
        str | None,
        typer.Option("--to", help="the moment to go back to, with its zone: '2026-12-02 17:00:00+00'; default: latest"),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask before replacing the database")] = False,
    recovery_timeout_s: Annotated[float, typer.Option(help="how long WAL replay may take")] = 3600.0,
) -> None:
    """Restore the database to a point in time: stop PostgreSQL, restore the newest backup before TIME, replay the
    archived WAL up to TIME, promote. Everything committed after TIME is gone afterwards. Stop the service first
    (`infra/run.sh stop`); start it again afterwards."""
    settings = get_settings()
    try:
        target = parse_target(to) if to else None
    except BackupError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error
    running = [name for name in ("api", "worker") if _running_pid(settings, name)]
    if running:
        console.print(f"[red]{' and '.join(running)} still running[/red]: stop the service first (infra/run.sh stop)")
        raise typer.Exit(2)
    backrest = _backrest(settings)
    where = target.isoformat(sep=" ") if target else "the end of the archived WAL"
    if not yes:
        typer.confirm(f"Replace the database in {backrest.cluster.data_dir} with its state at {where}?", abort=True)
    try:
        seconds = backrest.restore(target, recovery_timeout_s=recovery_timeout_s)
    except BackupError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    console.print(f"[green]restored to {where}[/green] in {seconds:.1f} s (stop, restore, WAL replay, promotion)")
    typer.echo(f"{seconds:.1f}")


def _running_pid(settings: Settings, name: str) -> int | None:
    pidfile = _pidfile(settings, name)
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


if __name__ == "__main__":
    app()

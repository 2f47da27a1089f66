"""One settings object for the whole service, read from the environment (prefix PLACECAST_)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from geofences.domain import GeometryLimits
from geofences.transitions import DEFAULT_CONFIG as _RULES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What a fix without accuracy is judged as, per client protocol: a typical phone GPS fix outdoors.
ASSUMED_ACCURACY_M = {"native": 30.0, "owntracks": 30.0, "osmand": 30.0}
# The secrets a development run generates on its first start (infra/run.sh → `placecast up`): one file each in
# `<var_dir>/secrets/`, mode 0600. The environment wins over a file; production reads only the environment. There
# is no public default: with neither, the settings refuse to load and say what to do.
SECRET_FILES = {"secret_key": "secret-key", "pg_password": "pg-password", "redis_password": "redis-password"}
# The VAPID key Web Push is signed with (a P-256 private key, base64url), generated beside them the same way; unlike
# them it is optional: without it Web Push is off, which production allows only with PLACECAST_WEBPUSH_ENABLED=false.
VAPID_KEY_FILE = "vapid-private-key"
DEFAULT_VAPID_SUBJECT = "mailto:placecast@localhost"


def _fresh_secret(name: str) -> str:
    if name == VAPID_KEY_FILE:
        from notifications.webpush import new_vapid_private_key  # cryptography: only when one is made

        return new_vapid_private_key()
    return secrets.token_urlsafe(32)


def secrets_dir(var_dir: Path) -> Path:
    return var_dir / "secrets"


def read_secret_file(var_dir: Path, name: str) -> str | None:
    try:
        found = (secrets_dir(var_dir) / name).read_text().strip()
    except FileNotFoundError:
        return None
    return found or None


def ensure_secret_files(var_dir: Path) -> dict[str, Path]:
    """Generate each missing secret (256 random bits) in `<var_dir>/secrets/`, 0600 from the moment it exists;
    an existing file is kept. Written to a private temporary file and linked into place, so a reader never sees a
    half-written secret and two concurrent first runs agree on one value."""
    folder = secrets_dir(var_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    paths: dict[str, Path] = {}
    for name in (*SECRET_FILES.values(), VAPID_KEY_FILE):
        path = paths[name] = folder / name
        if path.exists():
            continue
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.")  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(_fresh_secret(name) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another first run won: keep its value
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return paths


class _Where(BaseSettings):
    """Just where the data lives and in which mode, read as Settings reads them: enough to generate the secrets
    that Settings itself requires."""

    model_config = SettingsConfigDict(env_prefix="PLACECAST_", env_file=".env", extra="ignore")
    environment: str = "development"
    var_dir: Path = PROJECT_ROOT / "var"


def ensure_local_secrets() -> dict[str, Path]:
    """What `placecast up` (infra/run.sh) does before it reads the settings: generate the missing secrets in the
    configured var/ folder. Production is configured through its environment and gets none."""
    where = _Where()
    return {} if where.environment == "production" else ensure_secret_files(where.var_dir)


def _plain(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting must not print the secrets beside it into a log.
    model_config = SettingsConfigDict(
        env_prefix="PLACECAST_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = "development"
    # Seals stored secrets (webhook signing keys, organisations' QR keys). Required, like the two passwords below:
    # from PLACECAST_SECRET_KEY or, outside production, var/secrets/secret-key (see SECRET_FILES).
    secret_key: SecretStr

    # Where the project keeps its own PostgreSQL cluster, Redis data and logs.
    var_dir: Path = PROJECT_ROOT / "var"
    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_user: str = "placecast"
    pg_password: SecretStr
    pg_database: str = "placecast"
    redis_host: str = "127.0.0.1"
    redis_port: int = 56379
    redis_password: SecretStr  # Redis runs with requirepass
    # Redis behind Sentinel (infra/cluster.sh; several machines alike): the Sentinels as host:port, comma-separated or
    # JSON, e.g. PLACECAST_REDIS_SENTINELS=10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379. Set, every Redis client
    # (the app's, arq's, the rate limits, pub/sub) asks them for the master named below and follows a failover;
    # redis_host/redis_port are then unused. The Sentinels' own password defaults to redis_password.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_master: str = "placecast"
    redis_sentinel_password: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    db_pool_size: int = 20  # per process; connections beyond it are opened and closed per request (measured: churn)

    # Geometry sanity limits for building fences.
    max_vertices: int = 5000
    max_area_m2: float = 2_000_000.0
    min_area_m2: float = 1.0
    min_radius_m: float = 5.0
    max_radius_m: float = 5000.0
    osm_node_radius_m: float = 30.0

    # Request limits.
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    import_max_bytes: int = Field(default=64_000_000, ge=1024)
    # A worker importing an upload renews its hold every third of this; one that stops (killed, cut off) has its
    # import ended as failed by the next sweep (every 10 s) after it lapses (services/imports.py).
    import_lease_s: float = Field(default=60.0, ge=1.0)
    page_size_max: int = 500

    # Mobile API limits per device (fixed window shared through Redis).
    device_requests_per_window: int = 600
    rate_window_s: int = 60
    fix_batch_max: int = 1000
    # Enrolling devices (POST /v1/devices, OwnTracks' first post with the enrolment key), per window: from one
    # client address, and with one enrolment key (the key ships inside the app, so it is public).
    enrolment_window_s: int = Field(default=60, ge=1)
    enrolments_per_address: int = Field(default=10, ge=1)
    enrolments_per_key: int = Field(default=300, ge=1)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto are believed; JSON in the
    # environment, e.g. PLACECAST_TRUSTED_PROXIES='["10.0.0.2", "172.16.0.0/12"]'. None by default: the peer of
    # the socket is the client (login throttling and enrolment limits count per client address).
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    # Failed logins from one client address, over all accounts, in the 15-minute login window before it is refused
    # (429): one address trying a password on each of many accounts is never stopped by the per-account counts.
    login_failures_per_address: int = Field(default=20, ge=1)
    fix_retention_days: int = Field(default=7, ge=1)

    # Geofence engine: the transition model's parameters (see geofences/transitions.py, which documents each;
    # a place may override the zone parameters in its `gps_tuning`).
    # Defaults come from TransitionConfig itself, so the two cannot drift apart.
    max_accuracy_m: float = Field(default=_RULES.max_accuracy_m, gt=0)
    min_sigma_m: float = Field(default=_RULES.min_sigma_m, gt=0)
    enter_sigmas: float = Field(default=_RULES.enter_sigmas, ge=0)
    min_depth_m: float = Field(default=_RULES.min_depth_m, ge=0)
    min_mean_age_s: float = Field(default=_RULES.min_mean_age_s, ge=0)
    min_mean_sigma_m: float = Field(default=_RULES.min_mean_sigma_m, gt=0)
    enter_depth_sigmas: float = Field(default=_RULES.enter_depth_sigmas, ge=0)
    min_enter_depth_m: float = Field(default=_RULES.min_enter_depth_m, ge=0)
    lone_fix_sigmas: float = Field(default=_RULES.lone_fix_sigmas, ge=0)
    approach_rise_sigmas: float = Field(default=_RULES.approach_rise_sigmas, ge=0)
    approach_rise_m: float = Field(default=_RULES.approach_rise_m, ge=0)
    approach_from_sigmas: float = Field(default=_RULES.approach_from_sigmas, ge=0)
    approach_max_mps: float = Field(default=_RULES.approach_max_mps, gt=0)  # metres per second
    settled_after_s: float = Field(default=_RULES.settled_after_s, ge=0)
    settled_within_s: float = Field(default=_RULES.settled_within_s, ge=0)
    exit_sigmas: float = Field(default=_RULES.exit_sigmas, ge=0)
    exit_fix_sigmas: float = Field(default=_RULES.exit_fix_sigmas, ge=0)
    still_exit_sigmas: float = Field(default=_RULES.still_exit_sigmas, ge=0)
    min_exit_margin_m: float = Field(default=_RULES.min_exit_margin_m, ge=0)
    min_exit_s: float = Field(default=_RULES.min_exit_s, ge=0)
    decorrelation_s: float = Field(default=_RULES.decorrelation_s, gt=0)
    memory_s: float = Field(default=_RULES.memory_s, gt=0)
    moved_sigmas: float = Field(default=_RULES.moved_sigmas, gt=0)
    dwell_after_s: float = Field(default=_RULES.dwell_after_s, ge=0)
    max_speed_mps: float = Field(default=_RULES.max_speed_mps, gt=0)  # metres per second
    max_rejected_jumps: int = Field(default=_RULES.max_rejected_jumps, ge=0)
    # Accuracy assumed for a fix that reports none, per client protocol (Traccar/OsmAnd URL templates often
    # leave it out): a typical phone GPS fix outdoors. Never infinity: such fixes must still trigger.
    assumed_accuracy_m: dict[str, float] = Field(default_factory=lambda: dict(ASSUMED_ACCURACY_M))
    # A fix that reaches the server later than this after it was measured makes `late` events: recorded, sent to
    # webhooks with the flag, never pushed. Organisations may set their own (organisations.late_fix_after_s).
    late_fix_after_s: int = Field(default=600, ge=0)
    checkin_max_accuracy_m: float = 150.0
    qr_token_ttl_days: int = 365
    # Where visitors reach this service: a printed QR code opens <public_base_url>/app/c/<token>, the visitor web
    # app. None: the address the admin reached the API at (behind a proxy, set it: e.g. https://placecast.example).
    public_base_url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")

    # Push through FCM (firebase-admin). Without a service-account file, `placecast up` runs a local
    # FCM-compatible server (infra/fake_fcm.py) so the demo shows pushes arriving.
    fcm_credentials_file: Path | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_send_path: Literal["async", "threads"] = "async"
    push_lease_s: float = Field(default=60.0, gt=0)  # a push claimed longer ago than this is sent again
    # Pushes in flight per worker process: firebase-admin's async path slows down past ~100 (bench.pipeline).
    fcm_in_flight: int = Field(default=100, ge=1, le=1000)
    fcm_batch_size: int = Field(default=50, ge=1, le=500)  # measured: 50 beats 500 on send_each_async
    # Web Push (notifications/webpush.py) for devices that registered a browser subscription. The VAPID key comes
    # from PLACECAST_VAPID_PRIVATE_KEY or, outside production, var/secrets/vapid-private-key (generated on the
    # first run); the subject is the contact push services see (mailto: or https:), required in production.
    webpush_enabled: bool = True
    vapid_private_key: SecretStr | None = None
    vapid_subject: str = Field(default=DEFAULT_VAPID_SUBJECT, pattern=r"^(mailto:\S+@\S+|https://\S+)$")
    webpush_in_flight: int = Field(default=100, ge=1, le=1000)
    # Development and tests only: the local push service (infra/fake_webpush.py, e.g. http://127.0.0.1:8089) whose
    # endpoints may be registered and reached although they are not public addresses.
    webpush_local_origin: str | None = None

    # Worker: measured (see README); one job handles a batch of events.
    worker_max_jobs: int = 50
    worker_poll_delay_s: float = 0.02
    # On SIGTERM/SIGINT the worker takes no new job and waits this long for running ones (pushes in flight)
    # before cancelling them: a restart then sends nothing twice.
    worker_shutdown_wait_s: int = Field(default=30, ge=0, le=600)
    pipeline_window_s: float = Field(default=0.05, gt=0, le=5)  # at most one pipeline job per window
    pipeline_batch_size: int = Field(default=500, ge=1, le=5000)  # events per transaction of that job
    outbox_sweep_after_s: float = 5.0

    # Webhooks may reach only public addresses unless this is set (receivers on the deployment's own network,
    # tests); see notifications/egress.py.
    webhook_allow_private_networks: bool = False

    # Admin UI map background; the map still works (plain background) where no tile loads.
    tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"

    # Backups (infra/backup.py, pgBackRest): the project's own cluster archives every WAL segment into a repository
    # and `placecast backup` takes full or incremental backups there; `placecast restore --to TIME` goes back to
    # any moment since the oldest full backup kept. The repository is a folder (default: var/backups) or, with
    # backup_repo_type=s3, a bucket of S3-compatible storage (then backup_repo_path is the path inside it).
    backup_enabled: bool = True  # archive WAL from the cluster `placecast up` starts
    backup_stanza: str = Field(default="placecast", pattern=r"^[A-Za-z0-9_-]+$")
    backup_repo_type: Literal["posix", "s3"] = "posix"
    backup_repo_path: str | None = None
    backup_retention_full: int = Field(default=2, ge=1)  # full backups kept, with the WAL to replay from each
    backup_archive_timeout_s: int = Field(default=60, ge=0)  # a quiet database's WAL is archived at least this often
    backup_s3_endpoint: str | None = None  # e.g. s3.eu-north-1.amazonaws.com or a MinIO host
    backup_s3_bucket: str | None = None
    backup_s3_region: str = "us-east-1"
    backup_s3_key: SecretStr | None = None
    backup_s3_key_secret: SecretStr | None = None
    backup_s3_uri_style: Literal["host", "path"] = "host"  # path for MinIO and most self-hosted storage
    backup_s3_verify_tls: bool = True
    # With a passphrase the repository is encrypted (AES-256); it cannot be read, or restored from, without it.
    backup_cipher_pass: SecretStr | None = None

    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("assumed_accuracy_m")
    @classmethod
    def _every_protocol_assumed(cls, value: dict[str, float]) -> dict[str, float]:
        """A setting naming some protocols keeps the defaults of the others; the accuracy must be positive."""
        unknown = set(value) - set(ASSUMED_ACCURACY_M)
        if unknown:
            raise ValueError(f"unknown client protocols {sorted(unknown)}; known: {sorted(ASSUMED_ACCURACY_M)}")
        if not all(math.isfinite(v) and v > 0 for v in value.values()):
            raise ValueError("assumed accuracies must be positive numbers of metres")
        return {**ASSUMED_ACCURACY_M, **value}

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_addresses(cls, value: Any) -> Any:
        """`host:port` each, from a list, JSON or a comma-separated string; the port is required."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [part for part in text.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        found = [str(item).strip() for item in value]
        for address in found:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"a Sentinel is host:port, not {address!r}")
        return found

    @model_validator(mode="before")
    @classmethod
    def _secrets_configured(cls, data: Any) -> Any:
        """Each secret from the environment or, outside production, from its generated file; else a clear error."""
        if not isinstance(data, dict):
            return data
        data = {key: value for key, value in data.items() if not (key in SECRET_FILES and value in (None, ""))}
        production = data.get("environment") == "production"
        var_dir = Path(data.get("var_dir") or PROJECT_ROOT / "var")
        missing = []
        for field, file_name in SECRET_FILES.items():
            if field not in data and not production:
                found = read_secret_file(var_dir, file_name)
                if found is not None:
                    data[field] = found
            if field not in data:
                missing.append(f"PLACECAST_{field.upper()}")
        if missing:
            where = (
                "production reads them from the environment only"
                if production
                else f"run infra/run.sh once (it generates them in {secrets_dir(var_dir)}) or set them"
            )
            raise ValueError(f"{', '.join(missing)} not configured: {where}")
        if production and len(_plain(data["secret_key"])) < 32:
            raise ValueError("PLACECAST_SECRET_KEY must be at least 32 characters of random text in production")
        if production and _plain(data["pg_password"]) == "placecast":  # the public password of earlier versions
            raise ValueError("PLACECAST_PG_PASSWORD must not be the old public default in production")
        return data

    @model_validator(mode="after")
    def _vapid_configured(self) -> Settings:
        """The VAPID key from the environment or, outside production, its generated file; checked to be a P-256 key.
        Production refuses to start with Web Push on and no key, the default subject, or a local push service."""
        production = self.environment == "production"
        if self.vapid_private_key is None and not production:
            found = read_secret_file(self.var_dir, VAPID_KEY_FILE)
            self.vapid_private_key = SecretStr(found) if found else None
        if production and self.webpush_enabled:
            if self.vapid_private_key is None:
                raise ValueError(
                    "PLACECAST_VAPID_PRIVATE_KEY not configured: Web Push needs it in production"
                    " (or set PLACECAST_WEBPUSH_ENABLED=false)"
                )
            if self.vapid_subject == DEFAULT_VAPID_SUBJECT:
                raise ValueError("PLACECAST_VAPID_SUBJECT must name a real contact (mailto: or https:) in production")
        if production and self.webpush_local_origin:
            raise ValueError("PLACECAST_WEBPUSH_LOCAL_ORIGIN is for development and tests only")
        if self.vapid_private_key is not None:
            from notifications.webpush import vapid_public_key

            try:
                vapid_public_key(self.vapid_private_key.get_secret_value())
            except Exception as exc:
                raise ValueError("PLACECAST_VAPID_PRIVATE_KEY is not a P-256 private key (base64url or DER)") from exc
        return self

    @property
    def database_url(self) -> str:
        user, password = quote(self.pg_user, safe=""), quote(self.pg_password.get_secret_value(), safe="")
        return f"postgresql+asyncpg://{user}:{password}@{self.pg_host}:{self.pg_port}/{self.pg_database}"

    @property
    def sync_database_url(self) -> str:
        return self.database_url.replace("+asyncpg", "+psycopg")

    @property
    def redis_url(self) -> str:
        password = quote(self.redis_password.get_secret_value(), safe="")
        return f"redis://:{password}@{self.redis_host}:{self.redis_port}/0"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The Sentinels as (host, port) pairs; empty when Redis is reached directly."""
        pairs = (address.rpartition(":") for address in self.redis_sentinels)
        return [(host.strip("[]"), int(port)) for host, _, port in pairs]

    @property
    def sentinel_password(self) -> str:
        chosen = self.redis_sentinel_password or self.redis_password
        return chosen.get_secret_value()

    @property
    def geometry_limits(self) -> GeometryLimits:
        return GeometryLimits(
            max_vertices=self.max_vertices,
            max_area_m2=self.max_area_m2,
            min_area_m2=self.min_area_m2,
            min_radius_m=self.min_radius_m,
            max_radius_m=self.max_radius_m,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()

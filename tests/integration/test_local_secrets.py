"""Secure by default: generated secrets in var/, no public default anywhere, Redis and PostgreSQL that check them."""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError

from infra.settings import PROJECT_ROOT, SECRET_FILES, Settings, ensure_secret_files
from infra.stack import PgCluster, free_port
from notifications.webpush import new_vapid_private_key, vapid_public_key

SECRET_ENV = [f"PLACECAST_{field.upper()}" for field in SECRET_FILES]


@pytest.fixture
def no_secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No secret in the environment, an empty var/ of the test's own: what a fresh clone has."""
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PLACECAST_ENVIRONMENT", raising=False)
    monkeypatch.setenv("PLACECAST_VAR_DIR", str(tmp_path))
    return tmp_path


def test_generated_secrets_are_private_random_and_reused(tmp_path: Path) -> None:
    first = ensure_secret_files(tmp_path)
    assert set(first) == {"secret-key", "pg-password", "redis-password", "vapid-private-key"}
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    values = {}
    for name, path in first.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        values[name] = path.read_text()
        assert len(values[name].strip()) >= 43  # 256 random bits, URL-safe base64
    assert len(set(values.values())) == 4
    vapid_public_key(values["vapid-private-key"].strip())  # the VAPID key is a P-256 key
    # A second run keeps every value (the cluster's and Redis's passwords must keep working) and leaves no litter.
    again = ensure_secret_files(tmp_path)
    assert {name: path.read_text() for name, path in again.items()} == values
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == sorted(values)
    # Another var/ gets other secrets.
    other = ensure_secret_files(tmp_path / "other")
    assert not set(values.values()) & {path.read_text() for path in other.values()}


def test_concurrent_first_runs_agree_on_one_value(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: ensure_secret_files(tmp_path), range(8)))
    for name in runs[0]:
        assert len({run[name].read_text() for run in runs}) == 1
    assert len(list((tmp_path / "secrets").iterdir())) == 4


def test_development_without_secrets_fails_clearly_instead_of_a_public_default(no_secret_env: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    said = str(refused.value)
    assert "PLACECAST_SECRET_KEY" in said and "PLACECAST_PG_PASSWORD" in said and "PLACECAST_REDIS_PASSWORD" in said
    assert "infra/run.sh" in said


def test_development_reads_the_generated_secrets_and_the_environment_wins(
    no_secret_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = ensure_secret_files(no_secret_env)
    settings = Settings(_env_file=None)
    assert settings.secret_key.get_secret_value() == files["secret-key"].read_text().strip()
    assert settings.pg_password.get_secret_value() == files["pg-password"].read_text().strip()
    redis_password = files["redis-password"].read_text().strip()
    assert settings.redis_password.get_secret_value() == redis_password
    assert f":{redis_password}@" in settings.redis_url
    monkeypatch.setenv("PLACECAST_PG_PASSWORD", "from the environment/@:")
    settings = Settings(_env_file=None)
    assert settings.pg_password.get_secret_value() == "from the environment/@:"
    assert ":from%20the%20environment%2F%40%3A@" in settings.database_url  # quoted into the URL


def test_production_refuses_to_start_without_configured_secrets(
    no_secret_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_secret_files(no_secret_env)  # files in var/ do not count in production: its environment configures it
    monkeypatch.setenv("PLACECAST_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match=r"PLACECAST_SECRET_KEY.*environment"):
        Settings(_env_file=None)
    monkeypatch.setenv("PLACECAST_SECRET_KEY", "too short")
    monkeypatch.setenv("PLACECAST_PG_PASSWORD", "a database password")
    monkeypatch.setenv("PLACECAST_REDIS_PASSWORD", "a redis password")
    with pytest.raises(ValidationError, match="at least 32") as refused:
        Settings(_env_file=None)
    assert "a database password" not in str(refused.value)  # a refusal never prints the secrets
    monkeypatch.setenv("PLACECAST_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("PLACECAST_PG_PASSWORD", "placecast")
    with pytest.raises(ValidationError, match="PLACECAST_PG_PASSWORD"):
        Settings(_env_file=None)
    monkeypatch.setenv("PLACECAST_PG_PASSWORD", "a database password")
    # Web Push on (the default) needs a VAPID key from the environment and a real contact, and no local service.
    monkeypatch.delenv("PLACECAST_WEBPUSH_LOCAL_ORIGIN", raising=False)
    monkeypatch.delenv("PLACECAST_VAPID_PRIVATE_KEY", raising=False)
    with pytest.raises(ValidationError, match="PLACECAST_VAPID_PRIVATE_KEY"):
        Settings(_env_file=None)
    monkeypatch.setenv("PLACECAST_VAPID_PRIVATE_KEY", new_vapid_private_key())
    with pytest.raises(ValidationError, match="PLACECAST_VAPID_SUBJECT"):
        Settings(_env_file=None)
    monkeypatch.setenv("PLACECAST_VAPID_SUBJECT", "mailto:push@city.example")
    monkeypatch.setenv("PLACECAST_WEBPUSH_LOCAL_ORIGIN", "http://127.0.0.1:8089")
    with pytest.raises(ValidationError, match="PLACECAST_WEBPUSH_LOCAL_ORIGIN"):
        Settings(_env_file=None)
    monkeypatch.delenv("PLACECAST_WEBPUSH_LOCAL_ORIGIN")
    assert Settings(_env_file=None).environment == "production"
    # Without Web Push, no VAPID key is needed.
    monkeypatch.delenv("PLACECAST_VAPID_PRIVATE_KEY")
    monkeypatch.setenv("PLACECAST_WEBPUSH_ENABLED", "false")
    assert Settings(_env_file=None).vapid_private_key is None


def test_the_old_public_secret_is_gone_from_every_code_path() -> None:
    public = "dev-secret" + "-change-me"
    found = [
        str(path.relative_to(PROJECT_ROOT))
        for folder in ("infra", "services", "admin", "mobile_api", "notifications", "geofences", "bench")
        for path in (PROJECT_ROOT / folder).rglob("*")
        if path.suffix in (".py", ".sh", ".js", ".html", ".toml")
        and "node_modules" not in path.parts
        and public in path.read_text(errors="replace")
    ]
    assert found == []
    assert not (PROJECT_ROOT / ".env").exists() or public not in (PROJECT_ROOT / ".env").read_text()


async def test_the_stack_redis_refuses_unauthenticated_commands(test_env: dict[str, str]) -> None:
    port = int(test_env["PLACECAST_REDIS_PORT"])
    anonymous = Redis(host="127.0.0.1", port=port)
    try:
        with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)auth"):
            await anonymous.set("placecast:probe", "1")
    finally:
        await anonymous.aclose()
    wrong = Redis(host="127.0.0.1", port=port, password="not-the-password")
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            await wrong.ping()
    finally:
        await wrong.aclose()
    known = Redis(host="127.0.0.1", port=port, password=test_env["PLACECAST_REDIS_PASSWORD"])
    try:
        assert await known.ping()
    finally:
        await known.aclose()
    # The password lives in the server's own 0600 config file, not on its command line.
    config = Path(test_env["PLACECAST_VAR_DIR"]).parent / "redis" / "redis.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_the_stack_postgresql_refuses_a_wrong_password(test_env: dict[str, str]) -> None:
    dsn = f"host=127.0.0.1 port={test_env['PLACECAST_PG_PORT']} dbname={test_env['PLACECAST_PG_DATABASE']}"
    for password in ("placecast", "not-the-password", ""):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"{dsn} user=placecast password='{password}'", connect_timeout=5).close()
    psycopg.connect(f"{dsn} user=placecast password={test_env['PLACECAST_PG_PASSWORD']}", connect_timeout=5).close()


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="placecast-secrets-"))
    root.chmod(0o755)  # the postgres system user must reach its data folder when we are root
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_cluster_from_before_gets_the_generated_password_and_no_trust(cluster_dir: Path) -> None:
    """A demo cluster made with the old public password (and, say, a `trust` rule someone added) is started with
    the generated password: the old one and any wrong one are refused from then on."""
    port = free_port()
    old = PgCluster(cluster_dir / "pg", port, "placecast", "placecast", "placecast", fast_unsafe=True)
    old.start()
    try:
        old.stop()
        hba = cluster_dir / "pg" / "pg_hba.conf"
        hba.write_text("host all all 127.0.0.1/32 trust\n" + hba.read_text())
        new = PgCluster(cluster_dir / "pg", port, "placecast", "a-generated-password", "placecast", fast_unsafe=True)
        new.start()
        assert "trust" not in "".join(
            line.split("#")[0] for line in hba.read_text().splitlines() if not line.startswith("#")
        )
        dsn = f"host=127.0.0.1 port={port} dbname=placecast user=placecast"
        for password in ("placecast", "wrong"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(f"{dsn} password={password}", connect_timeout=5).close()
        psycopg.connect(f"{dsn} password=a-generated-password", connect_timeout=5).close()
    finally:
        old.destroy()

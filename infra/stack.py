"""Start and stop the project's own PostgreSQL/PostGIS cluster and Redis on loopback.

No Docker here: the Debian binaries run with a data folder of the project's. PostgreSQL refuses
to run as root, so when we are root the cluster belongs to the `postgres` system user.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
# Who may connect to the project's cluster, and how: with a password (SCRAM-SHA-256), from loopback only.
PG_HBA = """\
# Written by infra/stack.py: every connection proves its password; nothing is trusted.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""
# WAL archiving into the backup repository (infra/backup.py) lives in this file of the data folder, included from
# postgresql.conf: a restore brings it back with the cluster, and it can be read where PostgreSQL reads its settings.
ARCHIVE_CONF = "placecast-archive.conf"


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _pg_bin(name: str) -> str:
    for folder in PG_BIN_CANDIDATES:
        if (folder / name).exists():
            return str(folder / name)
    raise StackError(f"PostgreSQL binary {name!r} not found; run the set-up script (installs postgresql)")


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_as_owner(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    if _as_root():
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def _postgres_can_reach(path: Path) -> bool:
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], check=False)
    return probe.returncode == 0


def pg_data_dir(var_dir: Path) -> Path:
    """The cluster lives in var/; if `postgres` cannot traverse to it (e.g. under /root), next to /var/tmp."""
    wanted = var_dir / "pg"
    if not _as_root():
        return wanted
    var_dir.mkdir(parents=True, exist_ok=True)
    if _postgres_can_reach(var_dir):
        return wanted
    tag = hashlib.sha256(str(var_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"placecast-{tag}" / "pg"


@dataclass
class PgCluster:
    data_dir: Path
    port: int
    user: str
    password: str
    database: str
    fast_unsafe: bool = False  # fsync off: for throw-away test clusters only
    # The command PostgreSQL archives each finished WAL segment with (pgBackRest's archive-push, see infra/backup.py);
    # None: no archiving. archive_timeout bounds how long a quiet database keeps a commit out of the archive.
    archive_command: str | None = None
    archive_timeout_s: int = 60

    @property
    def _superuser_password_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-superuser.pw"

    def superuser_password(self) -> str:
        return self._superuser_password_file.read_text().strip()

    def _superuser_dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres password={self.superuser_password()} dbname={dbname}"

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._superuser_password_file.write_text(secrets.token_urlsafe(24))
        self._superuser_password_file.chmod(0o600)
        if _as_root():
            postgres = pwd.getpwnam("postgres")
            for path in (self.data_dir.parent, self.data_dir):
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
            os.chown(self._superuser_password_file, postgres.pw_uid, postgres.pw_gid)
        _run_as_owner(
            [
                _pg_bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={self._superuser_password_file}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )

    def _secure_hba(self) -> bool:
        """Password (SCRAM) authentication for every connection, over loopback TCP and the socket alike; never
        `trust`. A cluster made by an older version with other rules gets these; True when the file changed."""
        hba = self.data_dir / "pg_hba.conf"
        if hba.read_text() == PG_HBA:
            return False
        hba.write_text(PG_HBA)
        if _as_root():
            postgres = pwd.getpwnam("postgres")
            os.chown(hba, postgres.pw_uid, postgres.pw_gid)
        hba.chmod(0o600)
        return True

    def _write_archive_settings(self) -> bool:
        """archive_mode, archive_command and archive_timeout in ARCHIVE_CONF, included from postgresql.conf; True
        when a file changed. A cluster that never archived and is not asked to keeps its files untouched."""
        path = self.data_dir / ARCHIVE_CONF
        if self.archive_command is None and not path.exists():
            return False
        if self.archive_command is None:
            wanted = "archive_mode = off\n"
        else:
            quoted = self.archive_command.replace("'", "''")
            wanted = (
                "# Written by infra/stack.py from the backup settings (infra/backup.py); rewritten on each start.\n"
                f"archive_mode = on\narchive_command = '{quoted}'\narchive_timeout = {self.archive_timeout_s}\n"
            )
        changed = False
        main = self.data_dir / "postgresql.conf"
        include = f"include_if_exists = '{ARCHIVE_CONF}'\n"
        if include not in main.read_text():
            with main.open("a") as out:
                out.write("\n" + include)
            changed = True
        if not path.exists() or path.read_text() != wanted:
            path.write_text(wanted)
            if _as_root():
                postgres = pwd.getpwnam("postgres")
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
            changed = True
        return changed

    def _options(self) -> str:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {self.data_dir}",
            "-c max_connections=200",
            "-c shared_buffers=256MB",
        ]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        return " ".join(options)

    def _pg_ctl(self, action: str, *extra: str) -> None:
        log = str(self.data_dir / "server.log")
        _run_as_owner([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", log, "-o", self._options(), *extra, action])

    def running(self) -> bool:
        return port_open("127.0.0.1", self.port)

    def start(self, *, recovery_timeout_s: float = 60.0) -> None:
        """Start the cluster (made on first use) or bring a running one to its settings; returns once it accepts
        writes. A cluster restored from a backup replays WAL first: that may take up to `recovery_timeout_s`."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        hba_changed = self._secure_hba()
        archive_changed = self._write_archive_settings()
        if self.running() and (hba_changed or archive_changed):
            _run_as_owner([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "reload"])
        if not self.running():
            self._pg_ctl("start", "-w", "-t", str(round(max(60.0, recovery_timeout_s))))
        self._wait_ready(max(30.0, recovery_timeout_s))
        if self._archive_mode() != ("off" if self.archive_command is None else "on"):
            # archive_mode is read only at server start: a cluster that ran without archiving restarts once.
            self._pg_ctl("restart", "-m", "fast", "-w", "-t", "60")
            self._wait_ready()
        self._wait_primary(recovery_timeout_s)
        self._ensure_role_and_database()

    def _archive_mode(self) -> str:
        with psycopg.connect(self._superuser_dsn(), autocommit=True) as conn:
            row = conn.execute("SHOW archive_mode").fetchone()
        return str(row[0]) if row else ""

    def commit_now(self) -> None:
        """One committed transaction, now: a point-in-time restore reaches a moment only by replaying a commit
        after it (infra/backup.py makes one before it archives the last WAL)."""
        with psycopg.connect(self._superuser_dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_current_xact_id()")

    def _wait_primary(self, timeout: float) -> None:
        """Until recovery (a restore replaying archived WAL) has finished and the server was promoted."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._superuser_dsn(), connect_timeout=2, autocommit=True) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
            except psycopg.OperationalError:
                if not (self.data_dir / "postmaster.pid").exists():
                    raise StackError(f"PostgreSQL stopped during recovery: {self.log_tail()}") from None
            if time.monotonic() > deadline:
                raise StackError(f"PostgreSQL on port {self.port} still in recovery after {timeout:.0f} s")
            time.sleep(0.1)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.data_dir / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server.log)"

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._superuser_dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise StackError(f"PostgreSQL on port {self.port} did not come up: {error}") from error
                time.sleep(0.2)

    def _ensure_role_and_database(self) -> None:
        with psycopg.connect(self._superuser_dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,)).fetchone()
            # The password is set on every start: a cluster from before generated secrets had a public one.
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.database), sql.Identifier(self.user)
                    )
                )
        # PostGIS is not a trusted extension: the superuser creates it, the migration then finds it.
        with psycopg.connect(self._superuser_dsn(self.database), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            _run_as_owner([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._superuser_password_file.unlink(missing_ok=True)


@dataclass
class RedisServer:
    """A Redis of the project's own. With a password it runs with `requirepass`, kept in `redis.conf` (0600) in its
    folder rather than on the command line (which other local users can read); a restart without a password given
    reuses that file, so a stopped and restarted server keeps the password its clients know."""

    data_dir: Path
    port: int
    password: str | None = None

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "redis.conf"

    def _write_config(self) -> None:
        if self.password is None:
            return
        wanted = f"requirepass {self.password}\n"
        if self.config_file.exists() and self.config_file.read_text() == wanted:
            return
        fd, temporary = tempfile.mkstemp(dir=self.data_dir, prefix=".redis.conf.")  # 0600 from the start
        with os.fdopen(fd, "w") as out:
            out.write(wanted)
        os.replace(temporary, self.config_file)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not port_open("127.0.0.1", self.port):
            redis_server = shutil.which("redis-server")
            if redis_server is None:
                raise StackError("redis-server not found; run the set-up script (installs redis-server)")
            config = [str(self.config_file)] if self.config_file.exists() else []
            subprocess.run(
                [
                    redis_server,
                    *config,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--dir",
                    str(self.data_dir),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    str(self.pidfile),
                    "--logfile",
                    str(self.data_dir / "redis.log"),
                ],
                check=True,
            )
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise StackError(f"Redis on port {self.port} did not come up; see {self.data_dir}/redis.log")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.pidfile.exists():
            try:
                pid = int(self.pidfile.read_text().strip())
                os.kill(pid, 15)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except (ProcessLookupError, ValueError):
                pass
            self.pidfile.unlink(missing_ok=True)


@contextmanager
def private_stack(prefix: str, *, fast_unsafe: bool = False) -> Iterator[tuple[Path, dict[str, str]]]:
    """A throw-away PostGIS + Redis on free loopback ports (tests, benchmarks): yields its folder and the
    `PLACECAST_*` environment that points the service at it. Never touches the demo's data."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)  # the postgres system user must reach its data folder
    pg = PgCluster(root / "pg", free_port(), "placecast", secrets.token_urlsafe(24), "placecast", fast_unsafe)
    redis = RedisServer(root / "redis", free_port(), secrets.token_urlsafe(24))
    secret_key = secrets.token_urlsafe(32)
    try:
        pg.start()
        redis.start()
        yield (
            root,
            {
                "PLACECAST_ENVIRONMENT": "test",
                "PLACECAST_VAR_DIR": str(root / "var"),
                "PLACECAST_PG_PORT": str(pg.port),
                "PLACECAST_PG_PASSWORD": pg.password,
                "PLACECAST_PG_DATABASE": pg.database,
                "PLACECAST_REDIS_PORT": str(redis.port),
                "PLACECAST_REDIS_PASSWORD": redis.password or "",
                "PLACECAST_SECRET_KEY": secret_key,
            },
        )
    finally:
        redis.stop()
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


def start_api(env: dict[str, str], port: int, *, workers: int = 1, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
    """The API as `placecast up` serves it (uvicorn, the app factory) on 127.0.0.1:`port`, returned once /health
    answers; for tests and benchmarks. Raises with uvicorn's output if it exits or does not come up."""
    import httpx

    args = [sys.executable, "-m", "uvicorn", "--factory", "infra.app:create_app", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    args += ["--no-proxy-headers"]  # as `placecast up`: infra/proxy.py reads X-Forwarded-For
    # Its output goes to a file, not a pipe: a full pipe would stall a long-running server.
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(args, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return process  # the child keeps its own descriptor of the (unlinked) file
            except httpx.HTTPError:
                time.sleep(0.1)
        process.kill()
        process.wait()
        output.seek(0)
        said = output.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"the API did not come up on port {port}: {said}")

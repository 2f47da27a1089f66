"""The highly available topology on one machine (`infra/cluster.sh`): a rehearsal of several machines.

Every node is a process of its own on its own loopback port, with its folder under `<var_dir>/cluster/`:

- etcd x3 (the DCS Patroni keeps the leader lock in);
- PostgreSQL/PostGIS x3 managed by Patroni, `synchronous_mode: true`: a commit (a 202) is on two nodes;
- HAProxy: one port for the PostgreSQL leader (Patroni's REST `GET /primary` is its health check), one for the
  two API processes (admin UI and both APIs on one address), one for its statistics;
- Redis master + replica, three Sentinels (`requirepass` everywhere);
- two API processes (uvicorn) and two arq workers, with the settings in `<var_dir>/cluster/cluster.env`;
- the local FCM-compatible server, as `placecast up` has, when no FCM service account is configured.

The cluster's own var folder is `<var_dir>/cluster/` (its secrets, demo keys, uploads, logs): it never touches the
single-machine demo of `infra/run.sh`, and both may run at once. The application processes get only settings an
operator would give them on several machines (the HAProxy address, the Sentinels' addresses, the master's name).

`topology.json` in that folder names every node's ports, folder and pid, for the fault drills.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from infra.cli import _alive  # a pid that runs (not a zombie)
from infra.settings import PROJECT_ROOT, Settings, _Where, ensure_secret_files, read_secret_file
from infra.stack import PG_BIN_CANDIDATES, StackError, pg_data_dir, port_open

DEFAULT_PORT_BASE = 25000  # below the ephemeral ports (32768-60999): no outgoing connection holds one
SCOPE = "placecast"  # Patroni's cluster name, and the Sentinels' name of the Redis master
PG_NODES = 3
# Patroni's timing: a lost leader's lock expires after `ttl` s; loop_wait + 2 * retry_timeout must stay ≤ ttl.
PATRONI_TTL_S, PATRONI_LOOP_WAIT_S, PATRONI_RETRY_TIMEOUT_S = 10, 2, 4
SENTINEL_DOWN_AFTER_MS, SENTINEL_FAILOVER_TIMEOUT_MS = 3000, 10000
# Extra secrets of the cluster, beside the service's own (SECRET_FILES): generated once, 0600.
CLUSTER_SECRETS = ("pg-superuser-password", "pg-replication-password")


@dataclass
class Ports:
    base: int

    def etcd_client(self, i: int) -> int:
        return self.base + 1 + i

    def etcd_peer(self, i: int) -> int:
        return self.base + 11 + i

    def pg(self, i: int) -> int:
        return self.base + 21 + i

    def patroni_rest(self, i: int) -> int:
        return self.base + 31 + i

    @property
    def haproxy_pg(self) -> int:
        return self.base + 40

    @property
    def haproxy_stats(self) -> int:
        return self.base + 41

    def redis(self, i: int) -> int:
        return self.base + 50 + i

    def sentinel(self, i: int) -> int:
        return self.base + 60 + i

    @property
    def haproxy_api(self) -> int:
        return self.base + 80

    def api(self, i: int) -> int:
        return self.base + 81 + i

    @property
    def fake_fcm(self) -> int:
        return self.base + 90


@dataclass
class Layout:
    """Where the cluster lives and on which ports; the same on every run with the same settings."""

    root: Path  # <var_dir>/cluster: the cluster processes' PLACECAST_VAR_DIR
    pg_root: Path  # the PostgreSQL nodes' folders (under root, unless the postgres user cannot reach it)
    ports: Ports
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> Layout:
        where = _Where()
        root = Path(os.environ.get("PLACECAST_CLUSTER_DIR") or where.var_dir / "cluster").resolve()
        asked = os.environ.get("PLACECAST_CLUSTER_PORT_BASE")
        recorded = root / "port-base"  # etcd's members and Redis's replicas remember their peers' ports
        made_with = int(recorded.read_text()) if recorded.exists() else None
        base = int(asked) if asked else made_with or DEFAULT_PORT_BASE
        if made_with is not None and base != made_with:
            raise StackError(f"{root} was made with port base {made_with}; use it, or remove the folder for {base}")
        return cls(root, pg_data_dir(root).parent / "pg-nodes", Ports(base))

    def record(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "port-base").write_text(f"{self.ports.base}\n")

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def topology_file(self) -> Path:
        return self.root / "topology.json"

    def patroni_config(self, i: int) -> Path:
        return self.pg_root / f"n{i + 1}" / "patroni.yml"

    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"


# ---- processes ----


def _pid_of(layout: Layout, name: str) -> int | None:
    try:
        pid = int(layout.pidfile(name).read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _spawn(
    layout: Layout, name: str, args: list[str], *, env: dict[str, str] | None = None, user: str | None = None
) -> int:
    """A node in the background, in a session of its own, its output in log/<name>.log; returns its pid. With
    `user` it runs as that user from the start (no su in between: the pid is the node's own)."""
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with (layout.log_dir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            user=user,
            group=user,
            extra_groups=[] if user else None,
            cwd=PROJECT_ROOT,
        )
    layout.pidfile(name).write_text(str(process.pid))
    return process.pid


def _ensure(layout: Layout, name: str, port: int | None, start: Callable[[], int]) -> int | None:
    """Start the node unless it runs (its pid alive, or its port already answering); its pid."""
    pid = _pid_of(layout, name)
    if pid is not None or (port is not None and port_open("127.0.0.1", port)):
        return pid
    return start()


def _wait(what: str, ready: Callable[[], bool], timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            said = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
            raise StackError(f"{what} not ready after {timeout_s:.0f} s{': ' + said if said else ''}")
        time.sleep(0.2)


def _stop(layout: Layout, name: str, wait_s: float, *, group: bool = True) -> None:
    """SIGTERM (the process group, or the process alone), wait, SIGKILL what is left."""
    pid = _pid_of(layout, name)
    t0 = time.monotonic()
    if os.environ.get("CLUSTER_DEBUG"):
        print("stopping", name, pid, flush=True)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    layout.pidfile(name).unlink(missing_ok=True)
    if os.environ.get("CLUSTER_DEBUG"):
        print("stopped", name, round(time.monotonic() - t0, 1), flush=True)


def _write_private(path: Path, text: str, owner: str | None = None) -> None:
    """A config file holding a password: 0600 from the start, and the node's user's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


# ---- etcd ----


def _etcd_args(layout: Layout, i: int) -> list[str]:
    ports = layout.ports
    members = ",".join(f"e{j + 1}=http://127.0.0.1:{ports.etcd_peer(j)}" for j in range(3))
    data = layout.root / "etcd" / f"e{i + 1}"
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    return [
        "etcd",
        f"--name=e{i + 1}",
        f"--data-dir={data}",
        f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client(i)}",
        f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client(i)}",
        f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer(i)}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer(i)}",
        f"--initial-cluster={members}",
        "--initial-cluster-state=new",  # ignored once the member has its data
        f"--initial-cluster-token={SCOPE}",
        "--log-level=warn",
    ]


def etcd_healthy(layout: Layout) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{layout.ports.etcd_client(0)}/health", timeout=1).json().get("health") in (
            "true",
            True,
        )
    except (httpx.HTTPError, ValueError):
        return False


# ---- PostgreSQL under Patroni ----


def _pg_owner() -> str | None:
    """PostgreSQL refuses to run as root: as root, the nodes belong to the `postgres` system user."""
    return "postgres" if os.geteuid() == 0 else None


def _pg_bin_dir() -> Path:
    for folder in PG_BIN_CANDIDATES:
        if (folder / "postgres").exists():
            return folder
    raise StackError("PostgreSQL not installed; run infra/cluster.sh (installs it)")


def patroni_config(layout: Layout, i: int, passwords: dict[str, str]) -> str:
    """One node's patroni.yml (JSON is YAML): the DCS, the REST API, and PostgreSQL with SCRAM everywhere."""
    ports, name = layout.ports, f"n{i + 1}"
    node_dir = layout.pg_root / name
    hba = [
        "local all all scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host replication replicator 127.0.0.1/32 scram-sha-256",
    ]
    config = {
        "scope": SCOPE,
        "name": name,
        "log": {"level": "WARNING"},
        "restapi": {
            "listen": f"127.0.0.1:{ports.patroni_rest(i)}",
            "connect_address": f"127.0.0.1:{ports.patroni_rest(i)}",
        },
        "etcd3": {"hosts": [f"127.0.0.1:{ports.etcd_client(j)}" for j in range(3)]},
        "bootstrap": {
            "dcs": {
                "ttl": PATRONI_TTL_S,
                "loop_wait": PATRONI_LOOP_WAIT_S,
                "retry_timeout": PATRONI_RETRY_TIMEOUT_S,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": True,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "max_connections": 300,
                        "shared_buffers": "128MB",
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "password_encryption": "scram-sha-256",
                    },
                },
            },
            "initdb": [
                {"encoding": "UTF8"},
                {"locale": "C.UTF-8"},
                {"auth-host": "scram-sha-256"},
                {"auth-local": "scram-sha-256"},
                "data-checksums",
            ],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{ports.pg(i)}",
            "connect_address": f"127.0.0.1:{ports.pg(i)}",
            "data_dir": str(node_dir / "data"),
            "bin_dir": str(_pg_bin_dir()),
            "pgpass": str(node_dir / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": passwords["pg-superuser-password"]},
                "replication": {"username": "replicator", "password": passwords["pg-replication-password"]},
                "rewind": {"username": "postgres", "password": passwords["pg-superuser-password"]},
            },
            "parameters": {"unix_socket_directories": str(node_dir)},
            "pg_hba": hba,
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }
    return json.dumps(config, indent=2) + "\n"


def _start_patroni(layout: Layout, i: int, passwords: dict[str, str]) -> int | None:
    owner = _pg_owner()
    node_dir = layout.pg_root / f"n{i + 1}"
    for folder in (layout.pg_root, node_dir):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700 if folder == node_dir else 0o755)
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
    _write_private(layout.patroni_config(i), patroni_config(layout, i, passwords), owner)
    home = {"HOME": pwd.getpwnam(owner).pw_dir} if owner else {}
    return _ensure(
        layout,
        f"patroni-n{i + 1}",
        layout.ports.patroni_rest(i),
        lambda: _spawn(layout, f"patroni-n{i + 1}", ["patroni", str(layout.patroni_config(i))], env=home, user=owner),
    )


def _patroni(layout: Layout, i: int, path: str) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{layout.ports.patroni_rest(i)}{path}", timeout=1).status_code
    except httpx.HTTPError:
        return 0


def leader_and_sync(layout: Layout) -> bool:
    """A leader holds the lock and a synchronous standby streams: a commit is then on two nodes."""
    nodes = range(PG_NODES)
    return any(_patroni(layout, i, "/primary") == 200 for i in nodes) and any(
        _patroni(layout, i, "/sync") == 200 for i in nodes
    )


def _superuser_dsn(layout: Layout, passwords: dict[str, str], dbname: str) -> str:
    password = passwords["pg-superuser-password"]
    return f"host=127.0.0.1 port={layout.ports.haproxy_pg} user=postgres password={password} dbname={dbname}"


def _ensure_role_and_database(layout: Layout, passwords: dict[str, str], settings: Settings) -> None:
    """The service's role (its password set on every run), its database and PostGIS (not a trusted extension),
    on the leader through HAProxy; replicated from there."""
    with psycopg.connect(_superuser_dsn(layout, passwords, "postgres"), autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (settings.pg_user,)).fetchone()
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                sql.SQL("ALTER" if exists else "CREATE"),
                sql.Identifier(settings.pg_user),
                sql.Literal(settings.pg_password.get_secret_value()),
            )
        )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.pg_database,)).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(settings.pg_database), sql.Identifier(settings.pg_user)
                )
            )
    with psycopg.connect(_superuser_dsn(layout, passwords, settings.pg_database), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")


# ---- Redis and Sentinel ----


def redis_config(port: int, password: str, folder: Path, master_port: int | None) -> str:
    """A Redis node: requirepass (and masterauth, to follow whichever node Sentinel makes master), append-only."""
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        f"dir {folder}",
        f"requirepass {password}",
        f"masterauth {password}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
    ]
    if master_port is not None:
        lines.append(f"replicaof 127.0.0.1 {master_port}")
    return "\n".join(lines) + "\n"


def sentinel_config(port: int, password: str, folder: Path, master_port: int, master: str = SCOPE) -> str:
    """A Sentinel of the master named `master`: quorum 2 of 3, its own requirepass (the same password by default,
    PLACECAST_REDIS_SENTINEL_PASSWORD otherwise) and the one the other Sentinels ask of it."""
    return (
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f"dir {folder}",
                f"requirepass {password}",
                f"sentinel sentinel-pass {password}",
                f"sentinel monitor {master} 127.0.0.1 {master_port} 2",
                f"sentinel auth-pass {master} {password}",
                f"sentinel down-after-milliseconds {master} {SENTINEL_DOWN_AFTER_MS}",
                f"sentinel failover-timeout {master} {SENTINEL_FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {master} 1",
            ]
        )
        + "\n"
    )


def write_once(path: Path, text: str) -> Path:
    """Redis and the Sentinels rewrite their own config (who is master now): written only when missing, so a
    restart after a failover keeps the roles it left."""
    if not path.exists():
        _write_private(path, text)
    return path


def redis_node_args(config: Path, *, sentinel: bool = False) -> list[str]:
    return ["redis-sentinel" if sentinel else "redis-server", str(config)]


def sentinel_master(port: int, password: str, master: str = SCOPE) -> tuple[str, int] | None:
    """Where this Sentinel says the master is (`sentinel get-master-addr-by-name`)."""
    import redis

    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
        with contextlib.closing(client):
            found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master)
    except redis.RedisError:
        return None
    if not found:
        return None
    host, master_port = found
    return (host.decode() if isinstance(host, bytes) else str(host), int(master_port))


# ---- HAProxy ----


# HAProxy's answer when no API process is up: the API's own 503 (infra/http.py), Retry-After included.
API_UNAVAILABLE = json.dumps({"error": "unavailable", "message": "no API process is up; retry shortly"})
RETRY_AFTER_S = 2  # infra/http.py's RETRY_AFTER_UNAVAILABLE_S


def haproxy_config(layout: Layout) -> str:
    """The PostgreSQL leader on one port (Patroni answers `/primary` with 200 on the leader only; sessions to a
    node marked down are cut, so clients reconnect to the new leader), the API processes on another (a connection
    refused by a stopped API is retried on the other; with none up, a 503 with Retry-After), statistics on a
    third."""
    ports = layout.ports
    pg_servers = "\n".join(
        f"    server n{i + 1} 127.0.0.1:{ports.pg(i)} check port {ports.patroni_rest(i)}" for i in range(PG_NODES)
    )
    api_servers = "\n".join(f"    server api{i + 1} 127.0.0.1:{ports.api(i)} check" for i in range(2))
    return f"""# Written by infra/cluster.py on every run.
global
    maxconn 4000

defaults
    log global
    timeout connect 3s
    retries 3

listen postgres
    bind 127.0.0.1:{ports.haproxy_pg}
    mode tcp
    timeout client 1h
    timeout server 1h
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
{pg_servers}

listen api
    bind 127.0.0.1:{ports.haproxy_api}
    mode http
    balance roundrobin
    option forwardfor
    option redispatch
    retry-on conn-failure empty-response response-timeout
    timeout client 1h
    timeout server 1h
    timeout http-request 30s
    option httpchk GET /health
    default-server inter 1s fall 2 rise 1
    # No API process up (all restarting): the service's own 503, which says when to come back.
    http-error status 503 content-type application/json string '{API_UNAVAILABLE}' hdr Retry-After {RETRY_AFTER_S}
{api_servers}

listen stats
    bind 127.0.0.1:{ports.haproxy_stats}
    mode http
    timeout client 30s
    timeout server 30s
    stats enable
    stats uri /
"""


# ---- the service ----


def cluster_env(layout: Layout) -> dict[str, str]:
    """The settings of every API and worker process: what several real machines would be given, with their
    addresses instead of loopback ports. Secrets come from the cluster's var folder (or the environment)."""
    ports = layout.ports
    return {
        "PLACECAST_VAR_DIR": str(layout.root),
        "PLACECAST_PG_HOST": "127.0.0.1",
        "PLACECAST_PG_PORT": str(ports.haproxy_pg),
        "PLACECAST_REDIS_SENTINELS": ",".join(f"127.0.0.1:{ports.sentinel(i)}" for i in range(3)),
        "PLACECAST_REDIS_SENTINEL_MASTER": SCOPE,
        "PLACECAST_API_HOST": "127.0.0.1",
        "PLACECAST_API_PORT": str(ports.haproxy_api),
        "PLACECAST_TRUSTED_PROXIES": '["127.0.0.1/32"]',  # HAProxy's X-Forwarded-For
    }


def _cluster_settings(env: dict[str, str]) -> Settings:
    from infra.settings import get_settings

    os.environ.update(env)
    get_settings.cache_clear()
    return get_settings()


def _start_fake_fcm(layout: Layout) -> dict[str, str]:
    """The local FCM-compatible server, as `placecast up` starts it when no service account is configured. It
    exits with its parent, so a small parent that waits for it holds it (both stop with the process group)."""
    from infra.fake_fcm import ensure_certificate, service_env, write_service_account

    folder = layout.root / "fake_fcm"
    tls = ensure_certificate(folder)
    port = layout.ports.fake_fcm
    account = write_service_account(folder / "service-account.json", f"https://127.0.0.1:{port}/token")
    fake = [sys.executable, "-m", "infra.fake_fcm", "--port", str(port), "--cert-dir", str(folder)]
    fake += ["--service-account", str(account)]
    fake += ["--record", str(folder / "messages.jsonl")]  # what it received, kept across restarts (fault drills)
    holder = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))", *fake]
    _ensure(layout, "fake_fcm", port, lambda: _spawn(layout, "fake_fcm", holder))
    _wait("the local FCM server", lambda: port_open("127.0.0.1", port), 20, layout.log_dir / "fake_fcm.log")
    return service_env(f"https://127.0.0.1:{port}", account, tls.ca)


def _api_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _secrets(layout: Layout) -> dict[str, str]:
    ensure_secret_files(layout.root)
    found = {}
    for name in CLUSTER_SECRETS:
        if read_secret_file(layout.root, name) is None:
            _write_private(layout.root / "secrets" / name, os.urandom(24).hex() + "\n")
        found[name] = read_secret_file(layout.root, name) or ""
    return found


def up(*, demo: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Bring the whole topology up (idempotent: what runs is left running) and write topology.json."""
    started = time.monotonic()
    layout = Layout.from_environment()
    layout.record()
    layout.root.chmod(0o755)  # the postgres user traverses it to its nodes' folders
    passwords = _secrets(layout)
    env = cluster_env(layout)
    settings = _cluster_settings(env)
    redis_password = settings.redis_password.get_secret_value()
    sentinel_password = settings.sentinel_password
    ports = layout.ports

    echo(f"etcd x3 on 127.0.0.1:{ports.etcd_client(0)}-{ports.etcd_client(2)}")
    for i in range(3):
        _ensure(
            layout,
            f"etcd-e{i + 1}",
            ports.etcd_client(i),
            partial(_spawn, layout, f"etcd-e{i + 1}", _etcd_args(layout, i)),
        )
    _wait("etcd", lambda: etcd_healthy(layout), 60, layout.log_dir / "etcd-e1.log")

    echo(f"PostgreSQL/PostGIS x{PG_NODES} under Patroni on 127.0.0.1:{ports.pg(0)}-{ports.pg(PG_NODES - 1)}")
    for i in range(PG_NODES):
        _start_patroni(layout, i, passwords)

    echo(
        f"Redis master + replica on 127.0.0.1:{ports.redis(0)},{ports.redis(1)};"
        f" Sentinels on {ports.sentinel(0)}-{ports.sentinel(2)}"
    )
    for i in range(2):
        folder = layout.root / "redis" / f"r{i + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        replica_of = None if i == 0 else ports.redis(0)
        config = write_once(folder / "redis.conf", redis_config(ports.redis(i), redis_password, folder, replica_of))
        _ensure(
            layout,
            f"redis-r{i + 1}",
            ports.redis(i),
            partial(_spawn, layout, f"redis-r{i + 1}", redis_node_args(config)),
        )
    for i in range(3):
        folder = layout.root / "sentinel" / f"s{i + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        text = sentinel_config(ports.sentinel(i), sentinel_password, folder, ports.redis(0))
        config = write_once(folder / "sentinel.conf", text)
        args = redis_node_args(config, sentinel=True)
        _ensure(layout, f"sentinel-s{i + 1}", ports.sentinel(i), partial(_spawn, layout, f"sentinel-s{i + 1}", args))

    haproxy_cfg = layout.root / "haproxy.cfg"
    wanted = haproxy_config(layout)
    changed = not haproxy_cfg.exists() or haproxy_cfg.read_text() != wanted
    if changed:
        _write_private(haproxy_cfg, wanted)
        _stop(layout, "haproxy", 5)  # a changed configuration: started again below with it
    _ensure(layout, "haproxy", None, partial(_spawn, layout, "haproxy", ["haproxy", "-db", "-f", str(haproxy_cfg)]))

    _wait(
        "a Patroni leader with a synchronous standby",
        lambda: leader_and_sync(layout),
        120,
        layout.log_dir / "patroni-n1.log",
    )
    _wait("the leader through HAProxy", lambda: port_open("127.0.0.1", ports.haproxy_pg), 20)
    _wait("a Sentinel's master", lambda: sentinel_master(ports.sentinel(0), sentinel_password) is not None, 30)

    echo("migrating and loading the demo through HAProxy")
    deadline = time.monotonic() + 30
    while True:  # HAProxy marks the leader up within a second of its first check
        try:
            _ensure_role_and_database(layout, passwords, settings)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    from infra.cli import DEMO_ADMIN, api_argv, migrate, seed_demo

    migrate()
    if demo:
        seed_demo()

    push_env = _start_fake_fcm(layout) if settings.fcm_credentials_file is None else {}
    for i in range(2):
        argv = api_argv(settings.model_copy(update={"api_port": ports.api(i)}), workers=1)
        api_env = {**env, "PLACECAST_API_PORT": str(ports.api(i))}
        _ensure(layout, f"api{i + 1}", ports.api(i), partial(_spawn, layout, f"api{i + 1}", argv, env=api_env))
    worker_argv = [sys.executable, "-m", "infra.worker"]
    for i in range(2):
        _ensure(
            layout,
            f"worker{i + 1}",
            None,
            partial(_spawn, layout, f"worker{i + 1}", worker_argv, env={**env, **push_env}),
        )
    for i in range(2):
        _wait(f"API process {i + 1}", partial(_api_up, ports.api(i)), 90, layout.log_dir / f"api{i + 1}.log")
    _wait("the API through HAProxy", lambda: _api_up(ports.haproxy_api), 20)

    topology = write_topology(layout, env)
    (layout.root / "cluster.env").write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items()))
    base = f"http://127.0.0.1:{ports.haproxy_api}"
    echo(f"\nPlacecast cluster is up in {time.monotonic() - started:.1f} s")
    echo(f"  API + admin UI   {base}  (admin UI {base}/admin, as {DEMO_ADMIN})")
    echo(f"  admin password   {layout.root / 'demo-admin-password'}")
    echo(f"  demo key         {layout.root / 'demo-api-key'}")
    echo(f"  PostgreSQL       127.0.0.1:{ports.haproxy_pg} (HAProxy → the Patroni leader)")
    echo(f"  Sentinels        {env['PLACECAST_REDIS_SENTINELS']} (master {SCOPE!r})")
    echo(f"  HAProxy stats    http://127.0.0.1:{ports.haproxy_stats}/")
    echo(f"  patronictl       patronictl -c {layout.patroni_config(0)} list")
    echo(f"  settings         {layout.root / 'cluster.env'};  topology {layout.topology_file}")
    echo(f"  logs             {layout.log_dir}")
    echo("  infra/cluster.sh stop   stops all of it; data stays in the cluster folder.")
    return topology


def write_topology(layout: Layout, env: dict[str, str]) -> dict[str, Any]:
    """Every node's ports, folder and pid (the fault drills read it)."""
    ports = layout.ports

    def pid(name: str) -> int | None:
        return _pid_of(layout, name)

    topology: dict[str, Any] = {
        "root": str(layout.root),
        "port_base": ports.base,
        "env": env,
        "etcd": [
            {
                "name": f"e{i + 1}",
                "client_port": ports.etcd_client(i),
                "peer_port": ports.etcd_peer(i),
                "pid": pid(f"etcd-e{i + 1}"),
                "data_dir": str(layout.root / "etcd" / f"e{i + 1}"),
            }
            for i in range(3)
        ],
        "postgres": [
            {
                "name": f"n{i + 1}",
                "port": ports.pg(i),
                "rest_port": ports.patroni_rest(i),
                "patroni_pid": pid(f"patroni-n{i + 1}"),
                "patroni_config": str(layout.patroni_config(i)),
                "data_dir": str(layout.pg_root / f"n{i + 1}" / "data"),
                "postmaster_pid_file": str(layout.pg_root / f"n{i + 1}" / "data" / "postmaster.pid"),
            }
            for i in range(PG_NODES)
        ],
        "redis": [{"name": f"r{i + 1}", "port": ports.redis(i), "pid": pid(f"redis-r{i + 1}")} for i in range(2)],
        "sentinels": [
            {"name": f"s{i + 1}", "port": ports.sentinel(i), "pid": pid(f"sentinel-s{i + 1}")} for i in range(3)
        ],
        "redis_master_name": SCOPE,
        "haproxy": {
            "postgres_port": ports.haproxy_pg,
            "api_port": ports.haproxy_api,
            "stats_port": ports.haproxy_stats,
            "pid": pid("haproxy"),
        },
        "api": [{"name": f"api{i + 1}", "port": ports.api(i), "pid": pid(f"api{i + 1}")} for i in range(2)],
        "workers": [{"name": f"worker{i + 1}", "pid": pid(f"worker{i + 1}")} for i in range(2)],
        "fake_fcm": {"port": ports.fake_fcm, "pid": pid("fake_fcm")},
        "logs": str(layout.log_dir),
    }
    layout.topology_file.write_text(json.dumps(topology, indent=2) + "\n")
    return topology


def stop(*, echo: Callable[[str], None] = print) -> None:
    """Everything down, the service first (the workers finish what they started), etcd last. The replicas stop
    before the leader, so stopping causes no failover."""
    layout = Layout.from_environment()
    wait_s = float(os.environ.get("PLACECAST_WORKER_SHUTDOWN_WAIT_S") or 30) + 10
    for name in ("api1", "api2", "worker1", "worker2"):
        _stop(layout, name, wait_s)
    for name in ("fake_fcm", "haproxy"):
        _stop(layout, name, 10)
    leaders = [i for i in range(PG_NODES) if _patroni(layout, i, "/primary") == 200]
    for i in sorted(range(PG_NODES), key=lambda i: i in leaders):
        _stop(layout, f"patroni-n{i + 1}", 60, group=False)
    for name in ("sentinel-s1", "sentinel-s2", "sentinel-s3", "redis-r2", "redis-r1", "etcd-e1", "etcd-e2", "etcd-e3"):
        _stop(layout, name, 10)
    if layout.topology_file.exists():
        write_topology(layout, json.loads(layout.topology_file.read_text()).get("env", {}))
    echo("cluster stopped")


def status() -> dict[str, Any]:
    layout = Layout.from_environment()
    return {name: asdict(layout.ports) for name in ("ports",)} | (
        json.loads(layout.topology_file.read_text()) if layout.topology_file.exists() else {}
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "up"
    if command == "stop":
        stop()
    elif command == "status":
        print(json.dumps(status(), indent=2))
    elif command in ("up", "--no-demo"):
        up(demo="--no-demo" not in args)
    else:
        raise SystemExit(f"usage: infra/cluster.sh [stop|status|--no-demo]; got {command!r}")


if __name__ == "__main__":
    if shutil.which("patroni") is None:
        raise SystemExit("patroni not installed: run infra/cluster.sh (it installs the Debian packages)")
    main()

"""Backups of the project's PostgreSQL cluster with pgBackRest (the Debian package `pgbackrest`).

PostgreSQL hands every finished WAL segment to `pgbackrest archive-push` (its archive_command, written by
infra/stack.py), `placecast backup` takes full or incremental backups, and `placecast restore --to TIME` puts the
cluster back as it was at that moment: the newest backup before it, then the archived WAL replayed up to the last
transaction committed at or before TIME. Everything pgBackRest needs is the project's own: its configuration,
logs, locks and spool next to the data folder (`var/pgbackrest/`), the repository in `var/backups/` or in a bucket
of S3-compatible storage (PLACECAST_BACKUP_REPO_TYPE=s3). pgBackRest runs as the cluster's owner, the `postgres`
system user, as PostgreSQL itself does.

Redis needs no backup: it holds queues, counters and messages whose durable record is in PostgreSQL (see
`REDIS_NOTE`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from infra.settings import Settings
from infra.stack import PgCluster, StackError

BackupKind = Literal["full", "diff", "incr"]
REDIS_NOTE = (
    "Redis is not backed up: the pipeline's queue and arq's jobs are rebuilt from the outbox (the worker's sweep), "
    "webhook deliveries and pushes are rows in PostgreSQL, rate-limit and login-throttle windows are counters that "
    "start again, and live feeds are messages."
)


class BackupError(RuntimeError):
    pass


def _as_root() -> bool:
    return os.geteuid() == 0


def _give_to_postgres(path: Path) -> None:
    if _as_root():
        postgres = pwd.getpwnam("postgres")
        os.chown(path, postgres.pw_uid, postgres.pw_gid)


def _write_private(path: Path, text: str) -> bool:
    """Write `text` to `path` (0600, the cluster owner's) unless it already says that; True when written."""
    if path.exists() and path.read_text() == text:
        return False
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600 from the start
    with os.fdopen(fd, "w") as out:
        out.write(text)
    _give_to_postgres(Path(temporary))
    os.replace(temporary, path)
    return True


def parse_target(text: str) -> datetime:
    """A restore target: an ISO 8601 moment with its zone ("2026-12-02 17:00:00+00"), in the past."""
    cleaned = text.strip()
    if re.search(r"[+-]\d\d$", cleaned):  # PostgreSQL's short zone, +00: Python wants +00:00
        cleaned += ":00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError as error:
        raise BackupError(f"--to {text!r} is not a moment like '2026-12-02 17:00:00+00'") from error
    if moment.tzinfo is None:
        raise BackupError(f"--to {text!r} needs its time zone, e.g. '2026-12-02 17:00:00+00'")
    if moment > datetime.now(UTC):
        raise BackupError(f"--to {text!r} is in the future")
    return moment.astimezone(UTC)


def archiving(settings: Settings, cluster: PgCluster) -> PgBackRest | None:
    """The cluster's pgBackRest when backups are enabled, with the cluster set to archive its WAL through it."""
    if not settings.backup_enabled:
        return None
    backrest = PgBackRest.for_settings(settings, cluster)
    cluster.archive_command = backrest.archive_command()
    cluster.archive_timeout_s = settings.backup_archive_timeout_s
    return backrest


@dataclass
class PgBackRest:
    """pgBackRest for one cluster: one stanza, one repository, a configuration file of the project's."""

    cluster: PgCluster
    stanza: str
    work_dir: Path  # pgbackrest.conf, its logs, locks and spool
    repo_type: Literal["posix", "s3"] = "posix"
    repo_path: str = ""
    retention_full: int = 2
    s3: dict[str, str] = field(default_factory=dict)  # repo1-s3-* options, without the prefix
    cipher_pass: str | None = None
    process_max: int = 2

    @classmethod
    def for_settings(cls, settings: Settings, cluster: PgCluster) -> PgBackRest:
        """The cluster's pgBackRest as the settings describe it: next to its data folder unless told otherwise."""
        home = cluster.data_dir.parent
        if settings.backup_repo_type == "s3":
            missing = [
                f"PLACECAST_BACKUP_S3_{name.upper()}"
                for name in ("endpoint", "bucket", "key", "key_secret")
                if not getattr(settings, f"backup_s3_{name}")
            ]
            if missing:
                raise BackupError(f"backup_repo_type=s3 needs {', '.join(missing)}")
            assert settings.backup_s3_key and settings.backup_s3_key_secret  # for mypy: checked above
            s3 = {
                "endpoint": str(settings.backup_s3_endpoint),
                "bucket": str(settings.backup_s3_bucket),
                "region": settings.backup_s3_region,
                "key": settings.backup_s3_key.get_secret_value(),
                "key-secret": settings.backup_s3_key_secret.get_secret_value(),
                "uri-style": settings.backup_s3_uri_style,
                "verify-tls": "y" if settings.backup_s3_verify_tls else "n",
            }
            repo_path = settings.backup_repo_path or "/placecast"
        else:
            s3 = {}
            repo_path = settings.backup_repo_path or str(home / "backups")
        cipher = settings.backup_cipher_pass.get_secret_value() if settings.backup_cipher_pass else None
        return cls(
            cluster=cluster,
            stanza=settings.backup_stanza,
            work_dir=home / "pgbackrest",
            repo_type=settings.backup_repo_type,
            repo_path=repo_path,
            retention_full=settings.backup_retention_full,
            s3=s3,
            cipher_pass=cipher,
        )

    @property
    def config_file(self) -> Path:
        return self.work_dir / "pgbackrest.conf"

    @property
    def _pgpass_file(self) -> Path:
        return self.work_dir / "pgpass"

    def archive_command(self) -> str:
        """PostgreSQL's archive_command: pgBackRest pushes the segment `%p` into the repository."""
        return f"{self._binary()} --config={self.config_file} --stanza={self.stanza} archive-push %p"

    @staticmethod
    def _binary() -> str:
        return shutil.which("pgbackrest") or "/usr/bin/pgbackrest"

    def render(self) -> str:
        data = self.cluster.data_dir
        lines = [
            "# Written by infra/backup.py from the PLACECAST_BACKUP_* settings; rewritten when they change.",
            "[global]",
            f"repo1-type={self.repo_type}",
            f"repo1-path={self.repo_path}",
            f"repo1-retention-full={self.retention_full}",
            *(f"repo1-s3-{name}={value}" for name, value in self.s3.items()),
            *([f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={self.cipher_pass}"] if self.cipher_pass else []),
            "compress-type=zst",
            f"process-max={self.process_max}",
            "start-fast=y",  # a backup starts with an immediate checkpoint, not after the next scheduled one
            f"log-path={self.work_dir / 'log'}",
            f"lock-path={self.work_dir / 'lock'}",
            f"spool-path={self.work_dir / 'spool'}",
            "log-level-console=warn",
            "log-level-file=info",
            "",
            f"[{self.stanza}]",
            f"pg1-path={data}",
            f"pg1-port={self.cluster.port}",
            f"pg1-socket-path={data}",
            "pg1-user=postgres",
            # The cluster's socket lives in its data folder (infra/stack.py): its lock file is no data to restore.
            f"exclude=.s.PGSQL.{self.cluster.port}.lock",
            "",
        ]
        return "\n".join(lines)

    def configure(self) -> None:
        """The configuration, its folders and the superuser's password file (0600, the cluster owner's)."""
        for folder in (self.work_dir, self.work_dir / "log", self.work_dir / "lock", self.work_dir / "spool"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            _give_to_postgres(folder)
        if self.repo_type == "posix":
            repo = Path(self.repo_path)
            repo.mkdir(parents=True, exist_ok=True)
            repo.chmod(0o750)
            _give_to_postgres(repo)
        _write_private(self.config_file, self.render())
        try:
            password = self.cluster.superuser_password()
        except FileNotFoundError:  # a cluster not made yet: its first start makes the password, the next call this
            return
        # pgBackRest reaches the cluster over its socket as `postgres`, which proves its password like everyone.
        _write_private(self._pgpass_file, f"*:{self.cluster.port}:*:postgres:{password}\n")

    def run(self, *args: str, timeout: float | None = None) -> str:
        """`pgbackrest ARGS` for this stanza as the cluster's owner; its output, or BackupError with its errors."""
        argv = [
            "env",
            f"PGPASSFILE={self._pgpass_file}",
            self._binary(),
            f"--config={self.config_file}",
            f"--stanza={self.stanza}",
            *args,
        ]
        if _as_root():
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, check=False, text=True, capture_output=True, cwd="/", timeout=timeout)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-3000:]
            raise BackupError(f"pgbackrest {args[-1] if args else ''} failed ({done.returncode}): {said}")
        return done.stdout

    def stanza_exists(self) -> bool:
        if self.repo_type == "posix":
            return (Path(self.repo_path) / "archive" / self.stanza / "archive.info").exists()
        return bool(self.info().get("archive"))

    def ensure_stanza(self) -> None:
        """The stanza (pgBackRest's record of this cluster in the repository); made once, checked cheaply after."""
        self.configure()
        if not self.stanza_exists():
            self.run("stanza-create")

    def info(self) -> dict[str, Any]:
        found = json.loads(self.run("info", "--output=json") or "[]")
        return found[0] if found else {}

    def backups(self) -> list[dict[str, Any]]:
        return list(self.info().get("backup", []))

    def backup(self, kind: BackupKind = "full") -> dict[str, Any]:
        """Take a backup (online: the cluster keeps serving) and return pgBackRest's record of it. An incremental
        or differential one without a full one before it is taken as full."""
        self.ensure_stanza()
        self.run("backup", f"--type={kind}")
        return self.backups()[-1]

    def _archive_now(self) -> None:
        """Make the WAL of everything committed so far reach the repository: one more commit (a time target is
        reached only by a commit after it), then pgBackRest's check switches the segment and waits for it."""
        self.cluster.commit_now()
        self.run("check")

    def restore(self, target: datetime | None, *, recovery_timeout_s: float = 3600.0) -> float:
        """Put the cluster back as it was at `target` (None: as far as the archive goes) and return the seconds it
        took, from stopping the cluster to its accepting writes again. Stops the cluster if it runs; the newest
        backup before the target is restored over the data folder (--delta: only files that differ are copied),
        PostgreSQL replays the archived WAL up to the target and is promoted to a new timeline."""
        self.ensure_stanza()
        if not self.backups():
            raise BackupError("no backup to restore from: take one with `placecast backup` first")
        started = time.monotonic()
        if not self.cluster.running():
            # A stopped cluster's last WAL segment is not in the archive yet: start it to archive that. One that
            # cannot start is restored from what the archive has.
            with contextlib.suppress(subprocess.CalledProcessError, StackError):
                self.cluster.start()
        if self.cluster.running():
            self._archive_now()
            self.cluster.stop()
        args = ["--delta", "--archive-mode=preserve"]
        if target is not None:
            # PostgreSQL stops after the last transaction committed at or before the target, then promotes.
            args += ["--type=time", f"--target={target.isoformat(sep=' ')}", "--target-action=promote"]
        try:
            self.run("restore", *args)
            for stale in self.cluster.data_dir.glob(".s.PGSQL.*.lock"):  # from a backup taken before the exclusion
                stale.unlink()
            self.cluster.start(recovery_timeout_s=recovery_timeout_s)
        except (subprocess.CalledProcessError, StackError) as error:
            raise BackupError(f"the restored cluster did not come up: {error}\n{self.cluster.log_tail()}") from error
        return time.monotonic() - started

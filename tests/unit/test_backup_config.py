"""pgBackRest's configuration as the settings describe it (no cluster, no pgbackrest run): the local repository by
default, S3-compatible storage with one setting, the restore target's form. S3 itself cannot be reached here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.backup import BackupError, PgBackRest, archiving, parse_target
from infra.settings import Settings
from infra.stack import PgCluster

SECRETS = {"secret_key": "k" * 32, "pg_password": "p" * 24, "redis_password": "r" * 24}


def _cluster(tmp_path: Path) -> PgCluster:
    return PgCluster(tmp_path / "pg", 54321, "placecast", "x", "placecast")


def _lines(text: str) -> set[str]:
    return set(text.splitlines())


def test_the_local_repository_is_next_to_the_cluster_and_postgres_archives_into_it(tmp_path: Path) -> None:
    settings = Settings(environment="test", var_dir=tmp_path, **SECRETS)  # type: ignore[arg-type]
    cluster = _cluster(tmp_path)
    backrest = archiving(settings, cluster)
    assert backrest is not None
    assert cluster.archive_command == (
        f"{backrest._binary()} --config={tmp_path}/pgbackrest/pgbackrest.conf --stanza=placecast archive-push %p"
    )
    lines = _lines(backrest.render())
    assert {"repo1-type=posix", f"repo1-path={tmp_path}/backups", "repo1-retention-full=2"} <= lines
    assert {f"pg1-path={tmp_path}/pg", "pg1-port=54321", f"pg1-socket-path={tmp_path}/pg", "[placecast]"} <= lines
    assert not any(line.startswith(("repo1-s3", "repo1-cipher")) for line in lines)


def test_s3_compatible_storage_is_one_setting_and_its_keys(tmp_path: Path) -> None:
    s3 = {
        "backup_repo_type": "s3",
        "backup_s3_endpoint": "minio.city.example",
        "backup_s3_bucket": "placecast-backups",
        "backup_s3_key": "AKIA",
        "backup_s3_key_secret": "very-secret",
        "backup_s3_uri_style": "path",
        "backup_cipher_pass": "passphrase",
    }
    settings = Settings(environment="test", var_dir=tmp_path, **SECRETS, **s3)  # type: ignore[arg-type]
    lines = _lines(PgBackRest.for_settings(settings, _cluster(tmp_path)).render())
    assert {
        "repo1-type=s3",
        "repo1-path=/placecast",
        "repo1-s3-endpoint=minio.city.example",
        "repo1-s3-bucket=placecast-backups",
        "repo1-s3-key=AKIA",
        "repo1-s3-key-secret=very-secret",
        "repo1-s3-uri-style=path",
        "repo1-s3-region=us-east-1",
        "repo1-cipher-type=aes-256-cbc",
        "repo1-cipher-pass=passphrase",
    } <= lines
    incomplete = Settings(environment="test", var_dir=tmp_path, backup_repo_type="s3", **SECRETS)  # type: ignore[arg-type]
    with pytest.raises(BackupError, match="PLACECAST_BACKUP_S3_ENDPOINT"):
        PgBackRest.for_settings(incomplete, _cluster(tmp_path))


def test_backups_off_leave_the_cluster_without_archiving(tmp_path: Path) -> None:
    settings = Settings(environment="test", var_dir=tmp_path, backup_enabled=False, **SECRETS)  # type: ignore[arg-type]
    cluster = _cluster(tmp_path)
    assert archiving(settings, cluster) is None and cluster.archive_command is None


def test_a_restore_target_is_a_past_moment_with_its_zone() -> None:
    assert parse_target("2026-01-02 17:00:00+00") == datetime(2026, 1, 2, 17, tzinfo=UTC)
    assert parse_target("2026-01-02T19:00:00+02:00") == datetime(2026, 1, 2, 17, tzinfo=UTC)
    with pytest.raises(BackupError, match="time zone"):
        parse_target("2026-01-02 17:00:00")
    with pytest.raises(BackupError, match="future"):
        parse_target((datetime.now(UTC) + timedelta(hours=1)).isoformat())
    with pytest.raises(BackupError, match="not a moment"):
        parse_target("yesterday")

"""`placecast org-settings`: an operator reads and sets an organisation's late-fix limit from the command line."""

from __future__ import annotations

import json
import secrets

import psycopg
from typer.testing import CliRunner

from infra.cli import app as cli

runner = CliRunner()


def sql(settings, statement: str, *params):
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, params).fetchall()


def org_settings(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, ["org-settings", *args])
    return result.exit_code, result.output


def test_show_set_and_clear_the_late_limit(settings) -> None:
    slug = "cli-" + secrets.token_hex(4)
    assert runner.invoke(cli, ["create-org", slug, slug]).exit_code == 0
    service = settings.late_fix_after_s

    code, output = org_settings("--org", slug)
    assert code == 0 and json.loads(output) == {"late_fix_after_s": None, "effective_late_fix_after_s": service}
    code, output = org_settings("--org", slug, "--late-fix-after-s", "900")
    assert code == 0 and json.loads(output) == {"late_fix_after_s": 900, "effective_late_fix_after_s": 900}
    assert sql(settings, "SELECT late_fix_after_s FROM organisations WHERE slug = %s", slug) == [(900,)]

    code, output = org_settings("--org", slug, "--late-fix-after-s", "30")
    assert code == 2 and "late_fix_after_s" in output and "between 60 and 604800" in output
    code, output = org_settings("--org", slug, "--late-fix-after-s", "60", "--service-default")
    assert code == 2 and "not both" in output
    assert sql(settings, "SELECT late_fix_after_s FROM organisations WHERE slug = %s", slug) == [(900,)]

    code, output = org_settings("--org", slug, "--service-default")
    assert code == 0 and json.loads(output) == {"late_fix_after_s": None, "effective_late_fix_after_s": service}
    audit = sql(
        settings,
        "SELECT a.actor, a.details FROM audit_log a JOIN organisations o ON o.id = a.organisation_id"
        " WHERE o.slug = %s AND a.entity = 'organisation' ORDER BY a.id",
        slug,
    )
    assert audit == [
        ("cli", {"late_fix_after_s": {"from": None, "to": 900}}),
        ("cli", {"late_fix_after_s": {"from": 900, "to": None}}),
    ]


def test_an_unknown_organisation_is_refused(settings) -> None:
    code, output = org_settings("--org", "no-such-" + secrets.token_hex(4), "--late-fix-after-s", "600")
    assert code == 2 and "no organisation" in output

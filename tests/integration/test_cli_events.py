"""`placecast events` as an operator runs it: a table or CSV of one organisation's events, with filters."""

from __future__ import annotations

import csv
import io
import re
import secrets
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from infra.cli import app as cli

runner = CliRunner()
TRICKY = '+358 "Kallio", library'  # a formula start, a comma and quotes
HEADER = [
    "id",
    "kind",
    "zone",
    "place_id",
    "place_name",
    "fence_id",
    "device_id",
    "visit_id",
    "occurred_at",
    "created_at",
    "late",
]


def sql(settings, statement: str, *params):
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, params).fetchall()


def seed(settings, slug: str) -> dict[str, int]:
    """An organisation made by the CLI; two places, two devices and four events written directly."""
    made = runner.invoke(cli, ["create-org", slug, slug])
    assert made.exit_code == 0, made.output
    [(org,)] = sql(settings, "SELECT id FROM organisations WHERE slug = %s", slug)
    ids = {"org": org}
    for name, key in ((TRICKY, "kallio"), ("Oodi", "oodi")):
        [(ids[key],)] = sql(
            settings,
            "INSERT INTO places (organisation_id, name, kind) VALUES (%s, %s, 'library') RETURNING id",
            org,
            name,
        )
    for key in ("phone", "tablet"):
        [(ids[key],)] = sql(
            settings,
            "INSERT INTO devices (organisation_id, platform, role, credential_hash)"
            " VALUES (%s, 'android', 'visitor', %s) RETURNING id",
            org,
            secrets.token_hex(32),
        )
    now = datetime.now(UTC)
    for key, kind, place, device, ago, late in [
        ("enter", "enter", "kallio", "phone", timedelta(days=2), False),
        ("checkin", "checkin", "kallio", "phone", timedelta(minutes=10), False),
        ("exit", "exit", "oodi", "phone", timedelta(hours=3), True),
        ("dwell", "dwell", "oodi", "tablet", timedelta(minutes=5), False),
    ]:
        [(ids[key],)] = sql(
            settings,
            "INSERT INTO events (organisation_id, device_id, place_id, kind, occurred_at, late)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            org,
            ids[device],
            ids[place],
            kind,
            now - ago,
            late,
        )
    return ids


@pytest.fixture(scope="module")
def seeded(settings) -> tuple[str, dict[str, int], dict[str, int]]:
    mine, theirs = "cli-ev-" + secrets.token_hex(3), "cli-other-" + secrets.token_hex(3)
    return mine, seed(settings, mine), seed(settings, theirs)


def events_csv(*args: str) -> list[list[str]]:
    result = runner.invoke(cli, ["events", *args, "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert rows[0] == HEADER
    return rows[1:]


def ids_of(rows: list[list[str]]) -> list[int]:
    return [int(r[0]) for r in rows]


def test_csv_lists_one_organisations_events_newest_first(seeded) -> None:
    slug, ids, theirs = seeded
    rows = events_csv("--org", slug)
    assert ids_of(rows) == [ids["dwell"], ids["exit"], ids["checkin"], ids["enter"]]
    by_id = {int(r[0]): dict(zip(HEADER, r, strict=True)) for r in rows}
    assert by_id[ids["enter"]]["place_name"] == "'" + TRICKY  # quoted on the way, defused for spreadsheets
    assert by_id[ids["exit"]]["late"] == "true" and by_id[ids["enter"]]["late"] == "false"
    assert by_id[ids["dwell"]]["device_id"] == str(ids["tablet"])
    assert not set(ids_of(rows)) & {theirs[k] for k in ("enter", "checkin", "exit", "dwell")}


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["--kind", "checkin,exit"], ["exit", "checkin"]),
        (["--kind", "checkin", "--kind", "exit"], ["exit", "checkin"]),
        (["--late"], ["exit"]),
        (["--no-late"], ["dwell", "checkin", "enter"]),
        (["--since", "1h"], ["dwell", "checkin"]),
        (["--since", "90m"], ["dwell", "checkin"]),
        (["--since", "1d"], ["dwell", "exit", "checkin"]),
        (["--limit", "1"], ["dwell"]),
        (["--since", "1w", "--no-late", "--kind", "enter,dwell", "--limit", "5"], ["dwell", "enter"]),
    ],
)
def test_csv_filters(seeded, args, wanted) -> None:
    slug, ids, _ = seeded
    assert ids_of(events_csv("--org", slug, *args)) == [ids[k] for k in wanted]


def test_place_device_and_iso_since(seeded) -> None:
    slug, ids, theirs = seeded
    assert ids_of(events_csv("--org", slug, "--place", str(ids["oodi"]))) == [ids["dwell"], ids["exit"]]
    assert ids_of(events_csv("--org", slug, "--device", str(ids["tablet"]))) == [ids["dwell"]]
    since = (datetime.now(UTC) - timedelta(hours=4)).isoformat()
    assert ids_of(events_csv("--org", slug, "--since", since)) == [ids["dwell"], ids["exit"], ids["checkin"]]
    # Another organisation's place or device simply matches nothing.
    assert events_csv("--org", slug, "--place", str(theirs["oodi"])) == []
    assert events_csv("--org", slug, "--device", str(theirs["phone"])) == []


def test_table_by_default(seeded) -> None:
    slug, ids, _ = seeded
    result = runner.invoke(cli, ["events", "--org", slug], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "4 events, newest first" in result.output
    assert f"{TRICKY} ({ids['kallio']})" in result.stdout  # shown as text, not read as markup
    first_column = [int(m.group(1)) for m in re.finditer(r"^\W+(\d+) ", result.stdout, re.MULTILINE)]
    assert first_column == [ids[k] for k in ("dwell", "exit", "checkin", "enter")]
    limited = runner.invoke(cli, ["events", "--org", slug, "--limit", "2"], env={"COLUMNS": "220"})
    assert limited.exit_code == 0 and "2 events, newest first" in limited.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "teleport"], "unknown kind"),
        (["--since", "yesterday"], "--since"),
        (["--since", "0001-01-01"], "between 2000-01-01"),
        (["--org", "no-such-org"], "no organisation"),
        (["--limit", "0"], "limit"),
    ],
)
def test_bad_options_are_clear_errors(seeded, args, message) -> None:
    slug, _, _ = seeded
    result = runner.invoke(cli, ["events", "--org", slug, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output

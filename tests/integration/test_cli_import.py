"""The CLI as an administrator uses it: import a city's buildings from OSM, export and re-import GeoJSON."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import psycopg
from typer.testing import CliRunner

from infra.cli import app as cli

EXTRACT = Path(__file__).resolve().parents[1] / "data" / "osm" / "helsinki-centre.osm.pbf"
runner = CliRunner()


def query(settings, sql: str, *params):
    dsn = settings.sync_database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def make_org(slug: str) -> None:
    result = runner.invoke(cli, ["create-org", slug, slug])
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("pck_")


def test_import_osm_is_idempotent_and_keeps_the_libraries(settings) -> None:
    slug = "osm-" + secrets.token_hex(3)
    make_org(slug)
    first = runner.invoke(cli, ["import-osm", str(EXTRACT), "--org", slug])
    assert first.exit_code == 0, first.output
    assert "62 created, 0 updated" in first.output
    second = runner.invoke(cli, ["import-osm", str(EXTRACT), "--org", slug])
    assert "0 created, 62 updated" in second.output

    rows = query(
        settings,
        """
        SELECT p.name, p.kind, g.kind, ST_GeometryType(g.geom), p.external_ref
        FROM places p JOIN geofences g ON g.place_id = p.id JOIN organisations o ON o.id = p.organisation_id
        WHERE o.slug = %s""",
        slug,
    )
    assert len(rows) == 62  # one fence per place, none duplicated by the second run
    by_name = {r[0]: r for r in rows}
    assert by_name["Helsingin keskustakirjasto Oodi"][1:4] == ("library", "polygon", "ST_Polygon")
    assert by_name["Kansalliskirjasto"][1:3] == ("library", "polygon")
    assert by_name["Erottajan paloasema"][4] == "osm:relation/167018"


def test_tag_filter_limits_the_import(settings) -> None:
    slug = "lib-" + secrets.token_hex(3)
    make_org(slug)
    result = runner.invoke(cli, ["import-osm", str(EXTRACT), "--org", slug, "--tags", "amenity=library"])
    assert "7 created" in result.output
    kinds = query(
        settings,
        "SELECT DISTINCT p.kind FROM places p JOIN organisations o ON o.id = p.organisation_id WHERE o.slug = %s",
        slug,
    )
    assert kinds == [("library",)]


def test_unknown_org_and_bad_file_are_clear_errors(tmp_path) -> None:
    missing_org = runner.invoke(cli, ["import-osm", str(EXTRACT), "--org", "no-such-org"])
    assert missing_org.exit_code == 2 and "no organisation" in missing_org.output
    broken = tmp_path / "broken.osm.pbf"
    broken.write_bytes(b"not a pbf at all")
    bad = runner.invoke(cli, ["import-osm", str(broken), "--org", "no-such-org"])
    assert bad.exit_code == 2 and "could not read" in bad.output
    bad_tags = runner.invoke(cli, ["import-osm", str(EXTRACT), "--tags", "=library"])
    assert bad_tags.exit_code == 2 and "bad --tags" in bad_tags.output


def test_geojson_export_then_import_into_another_org_round_trips(tmp_path, settings) -> None:
    source, target = "src-" + secrets.token_hex(3), "dst-" + secrets.token_hex(3)
    make_org(source)
    make_org(target)
    runner.invoke(cli, ["import-osm", str(EXTRACT), "--org", source, "--tags", "amenity=library,amenity=fire_station"])
    exported = tmp_path / "places.geojson"
    assert runner.invoke(cli, ["export-geojson", "--org", source, "-o", str(exported)]).exit_code == 0
    imported = runner.invoke(cli, ["import-geojson", str(exported), "--org", target])
    assert imported.exit_code == 0 and "8 created" in imported.output
    again = tmp_path / "again.geojson"
    runner.invoke(cli, ["export-geojson", "--org", target, "-o", str(again)])

    def comparable(path: Path) -> list[dict[str, Any]]:
        features = json.loads(path.read_text())["features"]
        for feature in features:
            feature["properties"].pop("place_id", None)
        return sorted(features, key=lambda f: f["id"])

    assert comparable(again) == comparable(exported)

"""Uploaded imports as the admin UI runs them: 202 at once, progress over SSE, the end state in Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from infra.settings import get_settings
from tests.api import test_admin_live_analytics as live
from tests.integration.worker_helpers import run_worker
from tests.world import BLOCK

# The routes and the real-socket server (SSE cannot go through httpx's ASGI transport) come from the live tests.
_admin_routes = live._admin_routes
served = live.served
sse = live.sse

EXTRACT = Path(__file__).resolve().parents[1] / "data" / "osm" / "helsinki-centre.osm.pbf"
ORDER = ["queued", "reading", "storing", "done"]


async def upload(client, headers: dict[str, str], name: str, content: bytes, **form: str) -> str:
    answer = await client.post(
        "/admin/v1/imports", files={"file": (name, content, "application/octet-stream")}, data=form, headers=headers
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


async def follow(served_url: str, headers: dict[str, str], import_id: str) -> list[dict[str, Any]]:
    """Every progress message until the stream ends, which it must do by itself at done or failed, while a real
    arq worker runs the import."""
    messages, _ = await asyncio.gather(_follow(served_url, headers, import_id), run_worker(get_settings()))
    return list(messages)


async def _follow(served_url: str, headers: dict[str, str], import_id: str) -> list[dict[str, Any]]:
    messages = []
    async with (
        httpx.AsyncClient(base_url=served_url) as http,
        sse(http, f"/admin/v1/imports/{import_id}/events", headers=headers) as stream,
    ):
        try:
            while True:
                name, data = await stream.next()
                assert name == "progress"
                messages.append(data)
        except EOFError:
            pass
    return messages


async def test_osm_upload_imports_helsinki_with_progress(app, client, org, served) -> None:
    organisation_id, headers = org
    import_id = await upload(client, headers, "helsinki-centre.osm.pbf", EXTRACT.read_bytes())
    messages = await follow(served, headers, import_id)

    final = messages[-1]
    assert final["phase"] == "done", final
    assert (final["created"], final["updated"], final["total"], final["done"]) == (62, 0, 62, 62)
    assert final["refused_count"] == len(final["refused"]) > 0  # outlines OSM has but the service refuses
    assert all(r["external_ref"].startswith("osm:") and r["problems"] for r in final["refused"])
    assert len(messages) >= 2 and all(m["phase"] != "done" for m in messages[:-1]), "progress before the end"
    phases = [ORDER.index(m["phase"]) for m in messages]
    assert phases == sorted(phases), "phases only move forward"
    assert (await client.get(f"/admin/v1/imports/{import_id}", headers=headers)).json() == final

    async with app.state.resources.session_factory() as session:
        count = await session.execute(
            text("SELECT count(*) FROM places WHERE organisation_id = :o"), {"o": organisation_id}
        )
        assert count.scalar_one() == 62
        actors = await session.execute(
            text("SELECT DISTINCT actor FROM audit_log WHERE organisation_id = :o AND action = 'import'"),
            {"o": organisation_id},
        )
        assert [a.startswith("api-key:") for a in actors.scalars()] == [True]


async def test_tag_filter_limits_an_osm_upload(client, org, served) -> None:
    _, headers = org
    import_id = await upload(client, headers, "centre.osm.pbf", EXTRACT.read_bytes(), tags="amenity=library")
    final = (await follow(served, headers, import_id))[-1]
    assert (final["phase"], final["created"]) == ("done", 7)


async def test_a_broken_osm_file_fails_with_a_reason(client, org, served) -> None:
    _, headers = org
    # 3 MB: over the general body limit, so this also shows the import limit covers /admin/v1/imports.
    import_id = await upload(client, headers, "broken.osm.pbf", b"not a pbf at all" * 200_000)
    final = (await follow(served, headers, import_id))[-1]
    assert final["phase"] == "failed"
    assert final["error"].startswith("could not read the OSM file")
    assert final["created"] == 0


async def test_geojson_upload_keeps_the_good_features_and_explains_the_bad(client, org, served) -> None:
    _, headers = org
    unclosed = {"type": "Polygon", "coordinates": [[[24.93, 60.17], [24.94, 60.17], [24.94, 60.18]]]}
    document = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "id": "a", "properties": {"name": "Good", "kind": "library"}, "geometry": BLOCK},
            {"type": "Feature", "id": "b", "properties": {"name": "Bad"}, "geometry": unclosed},
        ],
    }
    import_id = await upload(client, headers, "places.geojson", orjson.dumps(document))
    final = (await follow(served, headers, import_id))[-1]
    assert (final["phase"], final["created"], final["refused_count"]) == ("done", 1, 1)
    [refused] = final["refused"]
    assert refused["index"] == 1 and refused["external_ref"] == "b"
    assert refused["problems"][0]["field"].startswith("features[1].geometry")

    broken = await upload(client, headers, "broken.json", b'{"type": "FeatureCollection", "features": [')
    failed = (await follow(served, headers, broken))[-1]
    assert failed["phase"] == "failed" and failed["error"].startswith("the file is not valid JSON")
    wrong = await upload(client, headers, "point.geojson", b'{"type": "Point", "coordinates": [1, 2]}')
    failed = (await follow(served, headers, wrong))[-1]
    assert failed["phase"] == "failed" and "FeatureCollection" in failed["error"]


@pytest.mark.parametrize(
    ("files", "form", "field"),
    [
        ({"file": ("notes.txt", b"hello", "text/plain")}, {}, "file"),
        ({"file": ("empty.geojson", b"", "application/geo+json")}, {}, "file"),
        ({"file": ("a.osm.pbf", b"x", "application/octet-stream")}, {"tags": "=library"}, "tags"),
        (None, {"tags": "amenity=library"}, "file"),
    ],
)
async def test_bad_uploads_are_422(client, org, files, form, field) -> None:
    _, headers = org
    answer = await client.post("/admin/v1/imports", files=files, data=form, headers=headers)
    assert answer.status_code == 422, answer.text
    assert field in [p["field"] for p in answer.json()["detail"]]


async def test_an_import_belongs_to_its_organisation(client, org, world, served) -> None:
    _, headers = org
    import_id = await upload(client, headers, "places.geojson", b'{"type": "FeatureCollection", "features": []}')
    assert (await client.get(f"/admin/v1/imports/{import_id}", headers=world.admin)).status_code == 404
    assert (await client.get(f"/admin/v1/imports/{import_id}/events", headers=world.admin)).status_code == 404
    assert (await client.get("/admin/v1/imports/not-an-id", headers=headers)).status_code == 404
    assert (await follow(served, headers, import_id))[-1]["phase"] == "done"


async def stored_upload(app, import_id: str) -> tuple[int, int] | None:
    """(size, bytes in its chunks) of an import's upload in PostgreSQL, None once it is gone."""
    async with app.state.resources.session_factory() as session:
        row = (
            await session.execute(
                text(
                    "SELECT u.size, (SELECT coalesce(sum(length(c.data)), 0) FROM import_upload_chunks c"
                    " WHERE c.upload_id = u.id) FROM import_uploads u WHERE u.id = :i"
                ),
                {"i": import_id},
            )
        ).one_or_none()
        return None if row is None else (int(row[0]), int(row[1]))


async def test_the_worker_runs_the_import_not_the_api_process(app, client, org, served) -> None:
    _, headers = org
    document = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"name": "Queued hall", "kind": "library"}, "geometry": BLOCK}],
    }
    content = orjson.dumps(document)
    import_id = await upload(client, headers, "hall.geojson", content)
    await asyncio.sleep(0.5)  # an import running in the API process would be done by now
    state = (await client.get(f"/admin/v1/imports/{import_id}", headers=headers)).json()
    assert state["phase"] == "queued"
    assert await stored_upload(app, import_id) == (len(content), len(content)), "the upload waits in PostgreSQL"
    assert not (get_settings().var_dir / "uploads").exists() or not any((get_settings().var_dir / "uploads").iterdir())

    final = (await follow(served, headers, import_id))[-1]
    assert (final["phase"], final["created"]) == ("done", 1)
    assert await stored_upload(app, import_id) is None, "the worker deleted the upload"


async def test_a_large_upload_is_stored_in_chunks_and_deleted_when_the_import_fails(app, client, org, served) -> None:
    _, headers = org
    content = b"not a pbf at all" * 200_000  # 3.2 MB: four 1 MiB rows
    import_id = await upload(client, headers, "broken.osm.pbf", content)
    async with app.state.resources.session_factory() as session:
        sizes = (
            await session.execute(
                text("SELECT length(data) FROM import_upload_chunks WHERE upload_id = :i ORDER BY seq"),
                {"i": import_id},
            )
        ).scalars()
        assert list(sizes) == [1 << 20] * 3 + [len(content) - 3 * (1 << 20)]
    final = (await follow(served, headers, import_id))[-1]
    assert final["phase"] == "failed"
    assert await stored_upload(app, import_id) is None, "a failed import's upload is deleted too"

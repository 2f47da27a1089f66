"""The OpenAPI document is the contract: one error schema for every error answer, the statuses each operation
really answers, strict types where coercion would hide a client's bug, 413 for any body over the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.http import Error
from tests.world import INSIDE, World, fix, register


@pytest.fixture(scope="module")
def spec(app) -> dict[str, Any]:
    document: dict[str, Any] = app.openapi()
    return document


def operations(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{m.upper()} {p}", op) for p, item in spec["paths"].items() for m, op in item.items()]


def test_every_error_answer_is_the_one_error_schema(spec) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["Error"]["required"] == ["error", "message"]
    for key, operation in operations(spec):
        for status, answer in operation["responses"].items():
            if int(status) >= 400 and key != "GET /ready":
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, key


def test_operations_document_what_they_answer(spec) -> None:
    def statuses(key: str) -> set[int]:
        method, path = key.split(" ", 1)
        return {int(s) for s in spec["paths"][path][method.lower()]["responses"]}

    assert {401, 413, 422, 429, 503} <= statuses("POST /v1/fixes")
    assert {400, 401, 429} <= statuses("GET /v1/osmand")
    assert {401, 403, 404, 422} <= statuses("GET /admin/v1/places/{place_id}")
    assert {401, 403, 404, 409} <= statuses("POST /v1/tasks/{task_id}/complete")
    assert {404, 409} <= statuses("POST /admin/v1/webhook-deliveries/{delivery_id}/retry")
    assert {401, 429} <= statuses("POST /admin/v1/session")
    retry_after = spec["paths"]["/v1/fixes"]["post"]["responses"]["429"]["headers"]
    assert "Retry-After" in retry_after
    ids = [operation["operationId"] for _, operation in operations(spec)]
    assert len(ids) == len(set(ids))


def test_parameters_are_never_null(spec) -> None:
    """A header or query parameter is text or absent: clients generated from the spec must not send "null"."""
    for key, operation in operations(spec):
        for parameter in operation.get("parameters", []):
            assert {"type": "null"} not in parameter["schema"].get("anyOf", []), (key, parameter["name"])
    organisation = [p for p in spec["paths"]["/admin/v1/places"]["get"]["parameters"] if p["name"] == "X-Organisation"]
    assert organisation[0]["schema"]["pattern"]


async def test_a_422_body_is_the_documented_error(client, world: World) -> None:
    device = await register(client, world)
    answer = await client.post("/v1/fixes", json={"lat": 100, "lon": 0}, headers=device)
    assert answer.status_code == 422
    error = Error.model_validate(answer.json())
    assert error.error == "validation_failed"
    assert {p.field for p in error.detail} == {"lat", "ts"}


async def test_a_body_that_is_not_text_is_a_422(client, world: World) -> None:
    device = await register(client, world)
    answer = await client.post(
        "/v1/fixes", content=b"\xff\xfe\x80", headers={**device, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["code"] == "json_invalid"


async def test_405_allows_every_method_of_the_path(client, world: World) -> None:
    answer = await client.request("OPTIONS", "/v1/devices/me")
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) == {"GET", "DELETE"}


@pytest.mark.parametrize(
    "field, value",
    [("battery", False), ("accuracy_m", True), ("lat", "60.174"), ("speed_mps", "1")],
)
async def test_fix_numbers_are_json_numbers(client, world: World, field: str, value: object) -> None:
    device = await register(client, world)
    answer = await client.post("/v1/fixes", json={**fix(INSIDE), field: value}, headers=device)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] == field


async def test_fix_times_stay_iso_or_epoch_and_numbers_may_be_integers(client, world: World) -> None:
    device = await register(client, world)
    iso = {**fix(INSIDE), "battery": 80, "accuracy_m": 10}
    assert (await client.post("/v1/fixes", json=iso, headers=device)).status_code == 202
    epoch = {**fix(INSIDE), "ts": datetime.fromisoformat(fix(INSIDE)["ts"]).timestamp()}
    assert (await client.post("/v1/fixes", json=epoch, headers=device)).status_code == 202
    batch = {"batch_id": "b1", "fixes": [{**fix(INSIDE), "heading": False}]}
    assert (await client.post("/v1/fixes/batch", json=batch, headers=device)).status_code == 422


async def test_consents_are_booleans(client, world: World) -> None:
    device = await register(client, world)
    answer = await client.put("/v1/devices/me/consents", json={"consents": {"offers": 0}}, headers=device)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] == "consents.offers"
    answer = await client.post(
        "/v1/devices", json={"platform": "android", "consents": {"offers": "yes"}}, headers=world.enrolment
    )
    assert answer.status_code == 422, answer.text
    answer = await client.put("/v1/devices/me/consents", json={"consents": {"offers": True}}, headers=device)
    assert answer.status_code == 200 and answer.json()["offers"] is True


async def test_check_in_place_is_an_integer_not_true(client, world: World) -> None:
    device = await register(client, world)
    answer = await client.post("/v1/checkins", json={"place_id": True}, headers=device)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] == "place_id"


@pytest.mark.parametrize(
    "path", ["/admin/v1/events?to=0", "/admin/v1/visits?from=1700000000", "/admin/v1/analytics?to=0"]
)
async def test_dates_in_queries_are_iso_8601_not_numbers(client, world: World, path: str) -> None:
    answer = await client.get(path, headers=world.admin)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] in ("from", "to")


async def test_iso_dates_in_queries_still_work(client, world: World) -> None:
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    answer = await client.get("/admin/v1/events", params={"from": since}, headers=world.admin)
    assert answer.status_code == 200, answer.text
    today = datetime.now(UTC).date().isoformat()
    answer = await client.get("/admin/v1/analytics", params={"to": today}, headers=world.admin)
    assert answer.status_code == 200, answer.text


async def test_a_chunked_body_over_the_limit_is_413(client, world: World, settings) -> None:
    device = await register(client, world)
    chunk = b" " * 65536

    async def body() -> AsyncIterator[bytes]:
        for _ in range(settings.max_body_bytes // len(chunk) + 2):
            yield chunk

    # No Content-Length: the limit is found while reading.
    answer = await client.post("/v1/fixes", content=body(), headers={**device, "Content-Type": "application/json"})
    assert answer.status_code == 413, answer.text
    assert Error.model_validate(answer.json()).error == "too_large"
    answer = await client.post("/v1/osmand", content=body(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413, answer.text

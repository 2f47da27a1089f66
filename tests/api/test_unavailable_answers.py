"""Every 503 tells the client when to retry, and a database that cannot serve right now is a 503, not a 500.

Seen by the outage tests: a request reaching PostgreSQL while it was starting up got a 500 ("the database system is
starting up" arrived as a plain DBAPIError), and the 503 for a connection lost mid-request had no Retry-After, so
phones had no hint when to send their fixes again.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from infra.http import install_error_handlers
from kernel.errors import ConnectionLost, Unavailable


class _ServerError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


async def _get(error: Exception) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(error), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/boom")


@pytest.mark.parametrize(
    "sqlstate",
    [
        "57P03",  # cannot_connect_now: "the database system is starting up"
        "57P01",  # admin_shutdown
        "08006",  # connection_failure
        "53300",  # too_many_connections
    ],
)
async def test_a_database_that_cannot_serve_now_is_a_503_with_retry_after(sqlstate: str) -> None:
    answer = await _get(DBAPIError("SELECT 1", {}, _ServerError(sqlstate)))
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["error"] == "unavailable"


async def test_a_real_database_bug_stays_a_500() -> None:
    answer = await _get(DBAPIError("SELECT 1", {}, _ServerError("42P01")))  # undefined_table
    assert answer.status_code == 500


@pytest.mark.parametrize("error", [ConnectionLost("the connection is gone"), Unavailable("try again")])
async def test_every_unavailable_answer_says_when_to_retry(error: Exception) -> None:
    answer = await _get(error)
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0

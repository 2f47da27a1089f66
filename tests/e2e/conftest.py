"""Processes started as a user starts them: uvicorn API replicas on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.stack import free_port, start_api


@pytest.fixture(scope="session")
def two_replicas(test_env) -> Iterator[list[str]]:
    ports = [free_port(), free_port()]
    processes = [start_api(test_env, port) for port in ports]
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)

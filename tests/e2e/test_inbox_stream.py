"""The inbox's live stream (server-sent events) on a real uvicorn: a new notification arrives while open."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.integration.test_pipeline_inbox import add_content
from tests.integration.worker_helpers import run_worker
from tests.world import FAR_OUTSIDE, INSIDE, World, fix


async def test_open_app_receives_the_notification_live(two_replicas, app, world: World, settings) -> None:
    await add_content(app, world, title="Live offer")
    base = two_replicas[0]
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        registered = await http.post(
            "/v1/devices", headers=world.enrolment, json={"platform": "web", "consents": {"offers": True}}
        )
        device = {"Authorization": f"Bearer {registered.json()['credential']}"}
        received: list[dict[str, object]] = []

        async def listen() -> None:
            async with http.stream("GET", "/v1/inbox/stream", headers=device) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        received.append(json.loads(line[6:]))
                        return

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.5)  # subscribed
        await http.post("/v1/fixes", json=fix(FAR_OUTSIDE), headers=device)
        await http.post("/v1/fixes", json=fix(INSIDE), headers=device)
        await run_worker(settings)
        await asyncio.wait_for(listener, timeout=10)
    assert [item["title"] for item in received] == ["Live offer"]

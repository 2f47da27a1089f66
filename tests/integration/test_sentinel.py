"""Redis behind Sentinel, for real: a master, a replica and three Sentinels (the Debian binaries, the configs
infra/cluster.py writes) on free ports. The process's client (`connect_redis`), arq's enqueue and a worker, the rate
limit and pub/sub all go through the Sentinels' master, and follow it after a failover."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from infra.cluster import redis_config, redis_node_args, sentinel_config, sentinel_master, write_once
from infra.stack import free_port, port_open

pytestmark = pytest.mark.skipif(shutil.which("redis-sentinel") is None, reason="redis-sentinel not installed")
PASSWORD = "sentinel-test-password"


@pytest.fixture(scope="module")
def sentinels():
    root = Path(tempfile.mkdtemp(prefix="placecast-sentinel-"))
    redis_ports, sentinel_ports = [free_port(), free_port()], [free_port() for _ in range(3)]
    processes = []
    try:
        for i, port in enumerate(redis_ports):
            folder = root / f"r{i}"
            folder.mkdir()
            replica_of = redis_ports[0] if i else None
            config = write_once(folder / "redis.conf", redis_config(port, PASSWORD, folder, replica_of))
            processes.append(subprocess.Popen(redis_node_args(config), stdout=subprocess.DEVNULL))
        for i, port in enumerate(sentinel_ports):
            folder = root / f"s{i}"
            folder.mkdir()
            config = write_once(folder / "sentinel.conf", sentinel_config(port, PASSWORD, folder, redis_ports[0]))
            processes.append(subprocess.Popen(redis_node_args(config, sentinel=True), stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 15
        while not all(port_open("127.0.0.1", p) for p in redis_ports + sentinel_ports):
            assert time.monotonic() < deadline, "Redis or a Sentinel did not come up"
            time.sleep(0.05)
        yield redis_ports, sentinel_ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sentinel_settings(sentinels, settings):
    _, sentinel_ports = sentinels
    return settings.model_copy(
        update={
            "redis_sentinels": [f"127.0.0.1:{port}" for port in sentinel_ports],
            "redis_sentinel_master": "placecast",
            "redis_password": type(settings.redis_password)(PASSWORD),
            "redis_host": "127.0.0.1",
            "redis_port": 1,  # never asked: the Sentinels say where the master is
        }
    )


def test_sentinel_settings_parse():
    from infra.settings import Settings

    parsed = Settings(redis_sentinels="10.0.0.1:26379, 10.0.0.2:26379")
    assert parsed.sentinel_addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert Settings(redis_sentinels='["[::1]:26379"]').sentinel_addresses == [("::1", 26379)]
    with pytest.raises(ValueError, match="host:port"):
        Settings(redis_sentinels="10.0.0.1")


def test_arq_settings_name_the_sentinels(sentinel_settings):
    from infra.container import redis_settings

    arq = redis_settings(sentinel_settings)
    assert arq.sentinel and arq.sentinel_master == "placecast"
    assert arq.host == sentinel_settings.sentinel_addresses


async def test_client_worker_limits_and_pubsub_through_sentinel(sentinels, sentinel_settings):
    from arq.worker import Worker, func

    from infra.container import connect_redis
    from kernel.errors import RateLimited
    from services.ratelimit import check_rate

    redis_ports, sentinel_ports = sentinels
    redis = await connect_redis(sentinel_settings, default_queue_name="sentinel-test")
    try:
        found = sentinel_master(sentinel_ports[0], PASSWORD)
        assert found is not None and found[1] in redis_ports
        # the rate limit (a Lua script) on the master
        for _ in range(2):
            await check_rate(redis, "sentinel-device", 2, 60)
        with pytest.raises(RateLimited):
            await check_rate(redis, "sentinel-device", 2, 60)
        # pub/sub (the live feed, fence changes, inbox wake-ups)
        pubsub = redis.pubsub()
        await pubsub.subscribe("placecast:sentinel-test")
        await redis.publish("placecast:sentinel-test", "hello")
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                break
        await pubsub.aclose()
        assert message and message["data"] in (b"hello", "hello")
        # a job enqueued through the Sentinels' master is run by a worker that found it the same way
        ran: list[int] = []

        async def job(ctx, value: int) -> int:
            ran.append(value)
            return value

        await redis.enqueue_job("job", 7)
        worker_redis = await connect_redis(sentinel_settings, default_queue_name="sentinel-test")
        worker = Worker(
            functions=[func(job, name="job")], redis_pool=worker_redis, burst=True, poll_delay=0.05,
            handle_signals=False, queue_name="sentinel-test",
        )  # fmt: skip
        await worker.main()
        await worker.close()
        assert ran == [7]
    finally:
        await redis.aclose()


async def test_the_client_follows_a_failover(sentinels, sentinel_settings):
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ReadOnlyError, ResponseError

    from infra.container import connect_redis

    _, sentinel_ports = sentinels
    redis = await connect_redis(sentinel_settings)
    try:
        await redis.set("placecast:before", "1")
        before = sentinel_master(sentinel_ports[0], PASSWORD)
        async with Redis(host="127.0.0.1", port=sentinel_ports[0], password=PASSWORD) as sentinel:
            # A Sentinel promotes only a replica it has seen in sync (its INFO polled, the link up): on a loaded
            # machine that takes a few seconds after start, and until then it answers NOGOODSLAVE. Wait for it.
            deadline = time.monotonic() + 30
            while True:
                try:
                    await sentinel.execute_command("SENTINEL", "FAILOVER", "placecast")
                    break
                except ResponseError as error:
                    assert "NOGOODSLAVE" in str(error) and time.monotonic() < deadline, error
                    await asyncio.sleep(0.5)
        deadline = time.monotonic() + 30
        while sentinel_master(sentinel_ports[0], PASSWORD) == before:
            assert time.monotonic() < deadline, "no failover"
            await asyncio.sleep(0.2)
        written = False
        for _ in range(50):  # a connection to the demoted master fails once and is made again to the new one
            try:
                await redis.set("placecast:after", "1")
                written = True
                break
            except (RedisConnectionError, ReadOnlyError):
                await asyncio.sleep(0.2)
        assert written
        assert await redis.get("placecast:before") in (b"1", "1")
    finally:
        await redis.aclose()

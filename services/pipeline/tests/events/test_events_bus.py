"""The change buses: wake-ups without lost notifications, the backstop poller, and Redis
pub/sub between replicas — including a Redis restart."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from flightdeck_common.devstack.ports import free_port
from flightdeck_common.devstack.redis import RedisServer
from flightdeck_common.redis_client import create_redis
from flightdeck_pipeline.events.bus import (
    READ_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    LocalChangeBus,
    RedisChangeBus,
)

pytestmark = pytest.mark.timeout(30)


async def woken(bus: LocalChangeBus | RedisChangeBus, generation: int, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            await bus.wait(generation)
    except TimeoutError:
        return False
    return True


async def test_a_notification_between_read_and_wait_is_not_lost() -> None:
    bus = LocalChangeBus()
    generation = bus.generation  # taken before "reading the table"
    bus.notify(5)  # a commit lands before the stream waits
    assert await woken(bus, generation, 0.01)
    assert bus.latest_seen_id == 5

    generation = bus.generation
    waiters = [asyncio.create_task(bus.wait(generation)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    bus.notify(6)
    async with asyncio.timeout(1):
        await asyncio.gather(*waiters)


async def test_poller_wakes_waiters_only_when_a_new_id_appears() -> None:
    latest = 3

    async def latest_id() -> int:
        return latest

    async with LocalChangeBus(latest_id=latest_id, poll_interval=0.05) as bus:
        await asyncio.sleep(0.1)
        generation = bus.generation
        assert not await woken(bus, generation, 0.2)  # nothing new: no wake-ups
        latest = 4  # written by another process, without a bus
        assert await woken(bus, generation, 0.5)
        assert bus.latest_seen_id == 4


async def test_poller_survives_a_failing_database(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def latest_id() -> int:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionRefusedError("database down")
        return 9

    caplog.set_level(logging.INFO, "flightdeck_pipeline.events.bus")
    async with LocalChangeBus(latest_id=latest_id, poll_interval=0.02) as bus:
        generation = bus.generation
        assert await woken(bus, generation, 1.0)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot read the latest change id" in m for m in messages) == 1
    assert sum("database reachable again" in m for m in messages) == 1


async def test_redis_bus_carries_commits_to_the_other_replicas(redis_url: str) -> None:
    redis_a, redis_b = create_redis(redis_url), create_redis(redis_url)
    try:
        async with RedisChangeBus(redis_a) as bus_a, RedisChangeBus(redis_b) as bus_b:
            async with asyncio.timeout(2):
                await bus_a.subscribed.wait()
                await bus_b.subscribed.wait()
            generation_a, generation_b = bus_a.generation, bus_b.generation
            bus_a.notify(41)
            assert await woken(bus_b, generation_b, 1.0)
            assert bus_b.latest_seen_id == 41
            await asyncio.sleep(0.2)
            # The replica does not wake its streams again for its own announcement.
            assert bus_a.generation == generation_a + 1

            generation_b = bus_b.generation
            bus_a.notify(None)  # unknown ids: every replica wakes
            assert await woken(bus_b, generation_b, 1.0)
    finally:
        await redis_a.aclose()
        await redis_b.aclose()


async def test_redis_subscriber_reconnects_after_a_restart_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "flightdeck_pipeline.events.bus")
    server = RedisServer(tmp_path / "redis", free_port())
    await asyncio.to_thread(server.start)
    publisher, subscriber = create_redis(server.url), create_redis(server.url)
    try:
        async with RedisChangeBus(publisher) as bus_a, RedisChangeBus(subscriber) as bus_b:
            async with asyncio.timeout(2):
                await bus_b.subscribed.wait()

            await asyncio.to_thread(server.stop)
            await asyncio.sleep(0.8)  # the loss is noticed, a few reconnects fail
            assert not bus_b.subscribed.is_set()
            await asyncio.to_thread(server.start)

            async with asyncio.timeout(8):
                await bus_b.subscribed.wait()
                await bus_a.subscribed.wait()
            generation = bus_b.generation
            bus_a.notify(bus_b.latest_seen_id + 1)
            assert await woken(bus_b, generation, 2.0)
    finally:
        await publisher.aclose()
        await subscriber.aclose()
        await asyncio.to_thread(server.stop)

    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    lost = [m for m in messages if "subscription lost" in m]
    assert len(lost) == 2  # one per bus, not one per failed attempt
    assert sum("subscribed to Redis again" in m for m in messages) == 2


async def test_redis_bus_stops_promptly_even_while_subscribing(redis_url: str) -> None:
    """redis-py can swallow a cancellation that lands while it connects: the bus must stop
    anyway (an app's shutdown waits for it)."""
    for attempt in range(16):
        redis = create_redis(redis_url)
        try:
            bus = RedisChangeBus(redis)
            await bus.start()
            await asyncio.sleep(attempt * 0.001)  # at every stage of connecting
            started = time.monotonic()
            await asyncio.wait_for(bus.stop(), STOP_TIMEOUT_SECONDS)
            assert time.monotonic() - started < READ_TIMEOUT_SECONDS + 0.5
        finally:
            await redis.aclose()

"""After Redis restarts, the first commands already succeed: connections pooled before
the restart are dead, and the clients replace them instead of failing once on each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from flightdeck_common.devstack.ports import free_port
from flightdeck_common.devstack.redis import RedisServer
from flightdeck_common.rate_limit import RateLimiter
from flightdeck_common.redis_client import create_redis

pytestmark = pytest.mark.redis


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    # Its own server: the tests restart it, which must not disturb other tests.
    server = RedisServer(tmp_path_factory.mktemp("redis-restart"), free_port())
    server.start()
    yield server
    server.stop()


def _restart(server: RedisServer) -> None:
    server.stop()
    server.start()


async def test_client_commands_succeed_right_after_a_restart(own_redis: RedisServer) -> None:
    client = create_redis(own_redis.url)
    try:
        # Several connections in the pool, all opened before the restart.
        await asyncio.gather(*(client.ping() for _ in range(3)))
        await asyncio.to_thread(_restart, own_redis)
        for _ in range(4):
            assert await client.ping() is True
        assert await client.incr("after-restart") == 1
    finally:
        await client.aclose()


async def test_rate_limits_stay_shared_right_after_a_restart(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(own_redis.url, {"login": "3/minute"})
    other_replica = RateLimiter(own_redis.url, {"login": "3/minute"})
    await asyncio.gather(*(limiter.hit("login", f"warm-{n}") for n in range(3)))
    await asyncio.to_thread(_restart, own_redis)
    with caplog.at_level(logging.WARNING, logger="flightdeck_common.rate_limit"):
        results = [(await limiter.hit("login", "ip"))[0] for _ in range(3)]
        results.append((await other_replica.hit("login", "ip"))[0])
    assert results == [True, True, True, False]  # counted in Redis, not per process
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]

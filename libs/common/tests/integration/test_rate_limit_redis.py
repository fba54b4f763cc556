"""Rate limits shared through Redis between replicas, and the fallback when Redis is down."""

from __future__ import annotations

import logging

import pytest

from flightdeck_common.devstack.ports import free_port
from flightdeck_common.rate_limit import RateLimiter


async def test_two_replicas_share_one_budget(redis_url: str) -> None:
    replica_a = RateLimiter(redis_url, {"login": "3/minute"})
    replica_b = RateLimiter(redis_url, {"login": "3/minute"})
    results = [
        (await replica_a.hit("login", "10.0.0.1"))[0],
        (await replica_b.hit("login", "10.0.0.1"))[0],
        (await replica_a.hit("login", "10.0.0.1"))[0],
        (await replica_b.hit("login", "10.0.0.1"))[0],
    ]
    assert results == [True, True, True, False]
    # Another client keeps its own budget.
    assert (await replica_b.hit("login", "10.0.0.2"))[0] is True


async def test_denied_hit_reports_time_to_reset(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, {"login": "1/minute"})
    await limiter.hit("login", "k")
    allowed, item, reset_in = await limiter.hit("login", "k")
    assert not allowed
    assert item.amount == 1
    assert 0 < reset_in <= 60


async def test_redis_down_falls_back_to_process_limits(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    limiter = RateLimiter(dead, {"login": "2/minute"})
    with caplog.at_level(logging.WARNING, logger="flightdeck_common.rate_limit"):
        results = [(await limiter.hit("login", "ip"))[0] for _ in range(4)]
    # Still limited (never unlimited guessing), and the outage is logged once, not per hit.
    assert results == [True, True, False, False]
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1

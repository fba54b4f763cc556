"""Optional Redis connection (shared rate limits, cache, pub/sub)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def reconnect_options() -> dict[str, Any]:
    """Client options that retry a command once, at once, on a broken connection.

    After Redis restarts, every connection pooled before the outage is dead; without a
    retry the first command on each fails although the server is back. The retry opens a
    fresh connection. Timeouts are not retried: a hung Redis must not double the wait.
    """
    return {"retry": Retry(NoBackoff(), 1), "retry_on_error": [RedisConnectionError]}


def create_redis(url: str) -> Redis:
    """A client with short timeouts so a dead Redis degrades requests instead of hanging them."""
    return Redis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=15,
        retry_on_timeout=False,
        decode_responses=False,
        **reconnect_options(),
    )

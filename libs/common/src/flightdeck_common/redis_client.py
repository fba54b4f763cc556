"""Optional Redis connection (shared rate limits, cache, pub/sub)."""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str) -> Redis:
    """A client with short timeouts so a dead Redis degrades requests instead of hanging them."""
    return Redis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=15,
        retry_on_timeout=False,
        decode_responses=False,
    )

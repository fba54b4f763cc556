"""Rate limiting on the `limits` engine (the one slowapi wraps), used through its async API.

slowapi's decorator needs a module-global limiter and talks to Redis synchronously
from the event loop; we keep its storage model (Redis when ``REDIS_URL`` is set,
memory otherwise, in-memory fallback when Redis fails) behind a FastAPI dependency
so limits come from settings and never block the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from flightdeck_common.client_addresses import address_key
from flightdeck_common.errors import RateLimited
from flightdeck_common.redis_client import reconnect_options

logger = logging.getLogger(__name__)


def client_ip(request: Request) -> str:
    """The client address as seen by uvicorn (proxy headers are trusted only from the ingress)."""
    return request.client.host if request.client else "unknown"


def client_address_key(request: Request) -> str:
    """What per-address limits count the client under: its IPv4 address or its IPv6 /64
    (see :func:`flightdeck_common.client_addresses.address_key`)."""
    return address_key(client_ip(request))


class RateLimiter:
    """Counts hits per (limit name, key) in Redis, or in memory when Redis is absent or down."""

    def __init__(self, redis_url: str | None, limits_by_name: dict[str, str]) -> None:
        self._memory = MemoryStorage()
        self._primary: Storage = (
            RedisStorage(
                _async_redis_uri(redis_url),
                implementation="redispy",
                socket_timeout=1.0,
                **reconnect_options(),
            )
            if redis_url
            else self._memory
        )
        self._shared = SlidingWindowCounterRateLimiter(self._primary)
        self._local = SlidingWindowCounterRateLimiter(self._memory)
        self._degraded_logged = False
        self.limits: dict[str, RateLimitItem] = {
            name: parse(value) for name, value in limits_by_name.items()
        }

    async def hit(self, name: str, key: str) -> tuple[bool, RateLimitItem, float]:
        """Count one hit; return (allowed, limit, seconds until the window resets)."""
        item = self.limits[name]
        try:
            allowed = await self._shared.hit(item, name, key)
            stats = await self._shared.get_window_stats(item, name, key)
            self._degraded_logged = False
        except Exception as exc:
            # Redis down: per-process limits keep guessing bounded; log once per outage.
            if not self._degraded_logged:
                logger.warning("rate limit storage unavailable, using per-process limits: %r", exc)
                self._degraded_logged = True
            allowed = await self._local.hit(item, name, key)
            stats = await self._local.get_window_stats(item, name, key)
        return allowed, item, seconds_to_reset(allowed, item, stats.reset_time, time.time())

    async def reset(self) -> None:
        await self._memory.reset()
        if self._primary is not self._memory:
            await self._primary.reset()


def seconds_to_reset(allowed: bool, item: RateLimitItem, reset_time: float, now: float) -> float:
    """Seconds until the limit admits again; never zero for a denied hit.

    ``limits``' sliding window computes the reset as ``expires_in % window``, which is
    0 when a key's TTL is an exact multiple of the window (hits straddling a window
    boundary). A denied client told "retry in 0 s" would retry at once, so a
    non-positive figure for a denied hit becomes the time to the end of the current
    window, which is in (0, window].
    """
    remaining = reset_time - now
    if allowed:
        return max(0.0, remaining)
    if remaining > 0:
        return remaining
    window = float(item.get_expiry())
    return window - (now % window)


def _async_redis_uri(url: str) -> str:
    return url if url.startswith("async+") else f"async+{url}"


def rate_limit(
    name: str, key: Callable[[Request], str] = client_address_key
) -> Callable[[Request, Response], Awaitable[None]]:
    """Dependency enforcing the limit called ``name`` (``rate_limit_<name>`` in settings),
    counted per ``key`` (default: per client address, IPv6 by /64)."""

    async def enforce(request: Request, response: Response) -> None:
        limiter: RateLimiter = request.app.state.resources.rate_limiter
        allowed, item, reset_in = await limiter.hit(name, key(request))
        retry_after = str(max(1, int(reset_in + 0.999)))
        if not allowed:
            raise RateLimited(
                f"Rate limit of {item} exceeded; retry in {retry_after} s.",
                headers={"Retry-After": retry_after, "RateLimit-Limit": str(item.amount)},
            )
        response.headers["RateLimit-Limit"] = str(item.amount)

    enforce.__name__ = f"rate_limit_{name}"
    return enforce


def limits_from_settings(settings: Any) -> dict[str, str]:
    """Collect every ``rate_limit_<name>`` setting into {name: "N/period"}."""
    return {
        field[len("rate_limit_") :]: str(getattr(settings, field))
        for field in type(settings).model_fields
        if field.startswith("rate_limit_")
    }

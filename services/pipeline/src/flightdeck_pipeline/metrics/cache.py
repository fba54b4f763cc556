"""Cache of the stats/history/DORA answers, dropped on every write.

Computations are bounded: at most ``max_concurrent`` answers are computed at once per
process. The others wait their turn, then look in the cache again, so a burst of one
question is computed at most ``max_concurrent`` times when caching is on. Without the
bound, 32 clients asking for DORA over 1M runs ran 32 heavy queries at once: PostgreSQL's
CPU was saturated, readiness probes timed out and the ingress took the replica out.

Entries live under a key that includes a *generation* number; ``invalidate()`` bumps the
generation, so every older entry is unreachable at once (and expires by its TTL). With
Redis the generation is a shared counter (``INCR``), so a write on one replica
invalidates the answers cached by all of them; without Redis both the counter and the
entries are in-process (one replica, the embedded mode).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from flightdeck_common.metrics import counter

logger = logging.getLogger(__name__)

KEY_PREFIX = "flightdeck:pipeline:metrics:"
GENERATION_KEY = KEY_PREFIX + "generation"
# In-process entries kept at most (oldest dropped first); Redis bounds itself by TTL.
MAX_LOCAL_ENTRIES = 512
DEFAULT_MAX_CONCURRENT = 4

CACHE_LOOKUPS = counter(
    "flightdeck_metrics_cache_total",
    "Lookups of the stats/history/DORA cache by endpoint and result (hit, miss, error).",
    ("endpoint", "result"),
)

Compute = Callable[[], Awaitable[BaseModel]]


class MetricsCache:
    """JSON answers cached for ``ttl_seconds`` (0 disables caching), per generation."""

    def __init__(
        self, redis: Redis | None, ttl_seconds: int, max_concurrent: int = DEFAULT_MAX_CONCURRENT
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self._slots = asyncio.Semaphore(max_concurrent)
        self._generation = 0
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}
        self._redis_failing = False

    async def invalidate(self) -> None:
        """Make every cached answer stale (on this replica and, with Redis, on all)."""
        self._generation += 1
        self._entries.clear()
        if self.redis is not None:
            try:
                await self.redis.incr(GENERATION_KEY)
                self._redis_recovered()
            except (RedisError, OSError) as exc:
                # Entries written before the outage stay readable until their TTL ends.
                self._redis_failed(exc)

    async def get_or_compute(
        self, name: str, params: dict[str, Any], compute: Compute
    ) -> dict[str, Any]:
        """The cached answer of ``name`` for ``params``, else ``compute()``'s (then cached).

        ``params`` must be JSON-serializable (datetimes are rendered with ``str``) and
        complete: two requests with the same params share an answer. A Redis failure
        never fails the request: the answer is computed (the failure is logged once).
        """
        if self.ttl_seconds <= 0:
            CACHE_LOOKUPS.labels(name, "miss").inc()
            return await self._compute(compute)
        if self.redis is not None:
            return await self._through_redis(name, params, compute)
        key = self._key(self._generation, name, params)
        answer = self._local_entry(key)
        if answer is not None:
            CACHE_LOOKUPS.labels(name, "hit").inc()
            return answer
        CACHE_LOOKUPS.labels(name, "miss").inc()
        async with self._slots:
            answer = self._local_entry(key)  # computed while this request waited its turn
            if answer is None:
                answer = (await compute()).model_dump(mode="json")
                self._store_locally(key, answer)
        return answer

    async def _compute(self, compute: Compute) -> dict[str, Any]:
        async with self._slots:
            return (await compute()).model_dump(mode="json")

    def _local_entry(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    async def _through_redis(
        self, name: str, params: dict[str, Any], compute: Compute
    ) -> dict[str, Any]:
        assert self.redis is not None
        try:
            # Read the generation first: an answer computed afterwards can only be
            # stored under this generation or an older one, never a newer one.
            generation = int(await self.redis.get(GENERATION_KEY) or 0)
            key = self._key(generation, name, params)
            answer = await self._redis_entry(key)
            self._redis_recovered()
        except (RedisError, OSError, ValueError) as exc:
            self._redis_failed(exc)
            CACHE_LOOKUPS.labels(name, "error").inc()
            return await self._compute(compute)
        if answer is not None:
            CACHE_LOOKUPS.labels(name, "hit").inc()
            return answer
        CACHE_LOOKUPS.labels(name, "miss").inc()
        async with self._slots:
            try:  # computed (here or on another replica) while this request waited its turn
                answer = await self._redis_entry(key)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            if answer is not None:
                return answer
            answer = (await compute()).model_dump(mode="json")
        try:
            await self.redis.set(
                key, json.dumps(answer, separators=(",", ":")), ex=self.ttl_seconds
            )
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
        return answer

    async def _redis_entry(self, key: str) -> dict[str, Any] | None:
        assert self.redis is not None
        cached = await self.redis.get(key)
        if cached is None:
            return None
        try:
            answer: dict[str, Any] = json.loads(cached)
        except ValueError:
            logger.warning("dropping an unreadable metrics cache entry %s", key)
            return None
        return answer

    @staticmethod
    def _key(generation: int, name: str, params: dict[str, Any]) -> str:
        canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
        return f"{KEY_PREFIX}{generation}:{name}:{digest}"

    def _store_locally(self, key: str, answer: dict[str, Any]) -> None:
        now = time.monotonic()
        if len(self._entries) >= MAX_LOCAL_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            while len(self._entries) >= MAX_LOCAL_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (now + self.ttl_seconds, answer)

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._redis_failing:
            logger.warning("metrics cache: Redis unavailable, computing answers (%r)", exc)
        self._redis_failing = True

    def _redis_recovered(self) -> None:
        if self._redis_failing:
            logger.info("metrics cache: Redis reachable again")
        self._redis_failing = False

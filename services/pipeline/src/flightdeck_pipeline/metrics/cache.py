"""Cache of the stats/history/DORA answers, dropped when what they read is written.

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

There is one generation per *scope*, the tables an answer reads: stats and history read
runs (``RUNS``), DORA reads deployments, commits and incidents (``DEPLOYMENTS``). A write
makes stale only the answers of what it wrote, so the steady stream of workflow run and
job deliveries leaves a cached DORA answer cached, and a deployment leaves stats alone.

An answer is kept as the JSON bytes the client receives (the model serialized as FastAPI
would: by alias, compact), and a hit serves those bytes as they are: no decoding, no
validation, no encoding again. Through Redis a hit is one round trip: a script reads the
generation and the entry of that generation together.
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
# Scopes: what a write wrote, and what an answer reads.
RUNS = "runs"  # runs, jobs and their rollups
DEPLOYMENTS = "deployments"  # deployments and their statuses, commits, incidents
SCOPES = (RUNS, DEPLOYMENTS)
ENDPOINT_SCOPES = {"stats": RUNS, "history": RUNS, "dora": DEPLOYMENTS}
# In-process entries kept at most (oldest dropped first); Redis bounds itself by TTL.
MAX_LOCAL_ENTRIES = 512
DEFAULT_MAX_CONCURRENT = 4

CACHE_LOOKUPS = counter(
    "flightdeck_metrics_cache_total",
    "Lookups of the stats/history/DORA cache by endpoint and result (hit, miss, error).",
    ("endpoint", "result"),
)

# KEYS[1]: the scope's generation counter; ARGV: the entry key's parts before and after it.
# Returns {generation, entry or false}: one round trip for a lookup. (The entry key is
# built inside the script, so it is not declared in KEYS: fine on one Redis server or a
# replicated one, not on Redis Cluster, which Flightdeck does not use.)
LOOKUP_SCRIPT = """
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('GET', ARGV[1] .. generation .. ARGV[2])}
"""

Compute = Callable[[], Awaitable[BaseModel]]


def answer_bytes(answer: BaseModel) -> bytes:
    """``answer`` as the response body FastAPI would make of it (by alias, compact JSON)."""
    return answer.model_dump_json(by_alias=True).encode()


def generation_key(scope: str) -> str:
    """The Redis counter of ``scope``'s generation."""
    return f"{KEY_PREFIX}generation:{scope}"


def entry_prefix(scope: str) -> str:
    """What every entry key of ``scope`` starts with (its generation number follows)."""
    return f"{KEY_PREFIX}{scope}:"


def scope_of(name: str) -> str:
    try:
        return ENDPOINT_SCOPES[name]
    except KeyError:
        raise ValueError(f"no metrics cache scope for {name!r}") from None


class MetricsCache:
    """JSON answers (bytes) cached for ``ttl_seconds`` (0 disables caching), per generation."""

    def __init__(
        self, redis: Redis | None, ttl_seconds: int, max_concurrent: int = DEFAULT_MAX_CONCURRENT
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self._slots = asyncio.Semaphore(max_concurrent)
        self._generations = dict.fromkeys(SCOPES, 0)
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._redis_failing = False
        self._lookup = redis.register_script(LOOKUP_SCRIPT) if redis is not None else None

    async def invalidate(self, *scopes: str) -> None:
        """Make the cached answers that read ``scopes`` stale (none named: every answer),
        on this replica and, with Redis, on all."""
        unknown = set(scopes) - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown metrics cache scopes: {sorted(unknown)}")
        stale = scopes or SCOPES
        for scope in stale:
            self._generations[scope] += 1
        prefixes = tuple(entry_prefix(scope) for scope in stale)
        self._entries = {k: v for k, v in self._entries.items() if not k.startswith(prefixes)}
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
                    for scope in stale:
                        pipe.incr(generation_key(scope))
                    await pipe.execute()
                self._redis_recovered()
            except (RedisError, OSError) as exc:
                # Entries written before the outage stay readable until their TTL ends.
                self._redis_failed(exc)

    async def get_or_compute(self, name: str, params: dict[str, Any], compute: Compute) -> bytes:
        """The cached answer of ``name`` for ``params``, else ``compute()``'s (then cached),
        as the JSON bytes of the response body.

        ``params`` must be JSON-serializable (datetimes are rendered with ``str``) and
        complete: two requests with the same params share an answer. ``name`` is one of
        ``ENDPOINT_SCOPES``, which says what writes make its answers stale. A Redis failure
        never fails the request: the answer is computed (the failure is logged once).
        """
        scope = scope_of(name)
        if self.ttl_seconds <= 0:
            CACHE_LOOKUPS.labels(name, "miss").inc()
            return await self._compute(compute)
        if self.redis is not None:
            return await self._through_redis(scope, name, params, compute)
        key = self._key(scope, self._generations[scope], name, params)
        answer = self._local_entry(key)
        if answer is not None:
            CACHE_LOOKUPS.labels(name, "hit").inc()
            return answer
        CACHE_LOOKUPS.labels(name, "miss").inc()
        async with self._slots:
            answer = self._local_entry(key)  # computed while this request waited its turn
            if answer is None:
                answer = answer_bytes(await compute())
                self._store_locally(key, answer)
        return answer

    async def _compute(self, compute: Compute) -> bytes:
        async with self._slots:
            return answer_bytes(await compute())

    def _local_entry(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    async def _through_redis(
        self, scope: str, name: str, params: dict[str, Any], compute: Compute
    ) -> bytes:
        assert self.redis is not None
        assert self._lookup is not None
        try:
            # The generation is read with the entry: an answer computed afterwards can only
            # be stored under this generation or an older one, never a newer one.
            before, after = self._key_parts(scope, name, params)
            generation, cached = await self._lookup(
                keys=[generation_key(scope)], args=[before, after]
            )
            key = f"{before}{int(generation)}{after}"
            answer = self._readable(key, cached)
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
            answer = answer_bytes(await compute())
        try:
            await self.redis.set(key, answer, ex=self.ttl_seconds)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
        return answer

    async def _redis_entry(self, key: str) -> bytes | None:
        assert self.redis is not None
        return self._readable(key, await self.redis.get(key))

    @staticmethod
    def _readable(key: str, cached: bytes | str | None) -> bytes | None:
        """A stored answer, or None for none. Entries are served without being decoded:
        one that is not a JSON object's bytes (only written by hand) is ignored."""
        if cached is None:
            return None
        body = cached.encode() if isinstance(cached, str) else bytes(cached)
        if not (body.startswith(b"{") and body.endswith(b"}")):
            logger.warning("ignoring an unreadable metrics cache entry %s", key)
            return None
        return body

    @staticmethod
    def _key_parts(scope: str, name: str, params: dict[str, Any]) -> tuple[str, str]:
        """The entry key around its generation number: ``before + generation + after``."""
        canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
        return entry_prefix(scope), f":{name}:{digest}"

    @classmethod
    def _key(cls, scope: str, generation: int, name: str, params: dict[str, Any]) -> str:
        before, after = cls._key_parts(scope, name, params)
        return f"{before}{generation}{after}"

    def _store_locally(self, key: str, answer: bytes) -> None:
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

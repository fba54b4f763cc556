"""Failed-login counters with exponential lockout, per username and per client IP.

A failure increments the username's and the IP's counters. When a counter reaches its
limit the key is locked for ``base_lock_seconds``; every further failure doubles the
lock, up to ``max_lock_seconds``. A counter lives ``window_seconds`` after its last
failure plus the current lock, so waiting out a lock does not reset the doubling.

Counters live in Redis (shared by all replicas, updated atomically by a Lua script)
or in process memory. When Redis fails, :class:`LoginThrottle` falls back to memory
and logs once per outage, so guessing stays bounded (per replica) instead of unlimited.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

LockScope = Literal["user", "ip"]
_T = TypeVar("_T")
# Beyond 2**40 * base the cap has long applied; bounds the exponent for huge counts.
_MAX_DOUBLINGS = 40


@dataclass(frozen=True, slots=True)
class LockState:
    """An active lock: retry after ``retry_after`` whole seconds (>= 1), for ``scope``."""

    retry_after: int
    scope: LockScope


@dataclass(frozen=True, slots=True)
class FailureHit:
    """One counter to increment and the lock key it controls."""

    counter_key: str
    lock_key: str
    limit: int


@dataclass(frozen=True, slots=True)
class LockPolicy:
    window_seconds: float
    base_lock_seconds: float
    max_lock_seconds: float

    def lock_seconds(self, count: int, limit: int) -> float:
        """How long a key is locked after its ``count``-th failure (0: not locked)."""
        if count < limit:
            return 0.0
        doublings = min(count - limit, _MAX_DOUBLINGS)
        return float(min(self.base_lock_seconds * 2**doublings, self.max_lock_seconds))


class ThrottleStore(ABC):
    """Where counters and locks live. Every method is atomic with respect to others."""

    @abstractmethod
    async def add_failures(
        self, hits: Sequence[FailureHit], policy: LockPolicy
    ) -> list[tuple[int, float]]:
        """Count one failure on each hit; return (count, remaining lock seconds) per hit."""

    @abstractmethod
    async def lock_remaining(self, lock_keys: Sequence[str]) -> list[float]:
        """Remaining lock seconds for each key (0 when not locked)."""

    @abstractmethod
    async def count(self, counter_key: str) -> int:
        """Current value of a failure counter (0 when absent or expired)."""

    @abstractmethod
    async def clear(self, *keys: str) -> None:
        """Delete counters or locks."""


@dataclass(slots=True)
class _Entry:
    count: int
    expires_at: float


class MemoryThrottleStore(ThrottleStore):
    """Counters in this process only (tests, single replica, or Redis fallback).

    ``clock`` (monotonic seconds) can be injected by tests. At most ``max_entries``
    keys are kept: expired ones are pruned, then the oldest are dropped, so a
    username spray cannot exhaust memory.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= now:
            del self._entries[key]
            return None
        return entry

    def _prune(self, now: float) -> None:
        if len(self._entries) <= self._max_entries:
            return
        for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key]
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

    async def add_failures(
        self, hits: Sequence[FailureHit], policy: LockPolicy
    ) -> list[tuple[int, float]]:
        now = self._clock()
        results: list[tuple[int, float]] = []
        for hit in hits:
            entry = self._live(hit.counter_key, now)
            count = (entry.count if entry else 0) + 1
            remaining = 0.0
            lock = policy.lock_seconds(count, hit.limit)
            if lock > 0:
                current = self._live(hit.lock_key, now)
                remaining = current.expires_at - now if current else 0.0
                if remaining < lock:
                    self._entries[hit.lock_key] = _Entry(0, now + lock)
                    remaining = lock
            self._entries[hit.counter_key] = _Entry(count, now + policy.window_seconds + remaining)
            results.append((count, remaining))
        self._prune(now)
        return results

    async def lock_remaining(self, lock_keys: Sequence[str]) -> list[float]:
        now = self._clock()
        remaining: list[float] = []
        for key in lock_keys:
            entry = self._live(key, now)
            remaining.append(entry.expires_at - now if entry else 0.0)
        return remaining

    async def count(self, counter_key: str) -> int:
        entry = self._live(counter_key, self._clock())
        return entry.count if entry else 0

    async def clear(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)


# KEYS: counter1, lock1, counter2, lock2, ...  ARGV: window_ms, base_ms, max_ms, limit1, limit2, ...
# Returns {count1, lock_ms1, count2, lock_ms2, ...}.
_ADD_FAILURES_LUA = """
local window_ms = tonumber(ARGV[1])
local base_ms = tonumber(ARGV[2])
local max_ms = tonumber(ARGV[3])
local result = {}
for i = 1, #KEYS / 2 do
  local counter_key = KEYS[2 * i - 1]
  local lock_key = KEYS[2 * i]
  local limit = tonumber(ARGV[3 + i])
  local count = redis.call('INCR', counter_key)
  local remaining = 0
  if count >= limit then
    local lock_ms = math.floor(math.min(base_ms * 2 ^ math.min(count - limit, 40), max_ms))
    remaining = redis.call('PTTL', lock_key)
    if remaining < lock_ms then
      redis.call('SET', lock_key, '1', 'PX', lock_ms)
      remaining = lock_ms
    end
  end
  redis.call('PEXPIRE', counter_key, window_ms + remaining)
  result[2 * i - 1] = count
  result[2 * i] = remaining
end
return result
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisThrottleStore(ThrottleStore):
    """Counters in Redis, shared by every replica; each failure is one atomic script call."""

    def __init__(self, redis: Redis, *, prefix: str = "flightdeck:auth:throttle:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._add_failures_script = redis.register_script(_ADD_FAILURES_LUA)

    async def add_failures(
        self, hits: Sequence[FailureHit], policy: LockPolicy
    ) -> list[tuple[int, float]]:
        keys: list[str] = []
        for hit in hits:
            keys += [self._prefix + hit.counter_key, self._prefix + hit.lock_key]
        args: list[int] = [
            _ms(policy.window_seconds),
            _ms(policy.base_lock_seconds),
            _ms(policy.max_lock_seconds),
            *(hit.limit for hit in hits),
        ]
        raw: list[Any] = await self._add_failures_script(keys=keys, args=args)
        return [(int(raw[i]), int(raw[i + 1]) / 1000) for i in range(0, len(raw), 2)]

    async def lock_remaining(self, lock_keys: Sequence[str]) -> list[float]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in lock_keys:
                pipe.pttl(self._prefix + key)
            ttls: list[Any] = await pipe.execute()
        # PTTL is -2 for a missing key (and -1 without expiry, which we never set).
        return [max(0, int(ttl)) / 1000 for ttl in ttls]

    async def count(self, counter_key: str) -> int:
        value = await self._redis.get(self._prefix + counter_key)
        return int(value) if value is not None else 0

    async def clear(self, *keys: str) -> None:
        if keys:
            await self._redis.delete(*(self._prefix + key for key in keys))


def _user_id(username: str) -> str:
    # Case and Unicode variants of a name share one counter; hashing bounds key length
    # and keeps usernames (valid or not) out of Redis.
    folded = unicodedata.normalize("NFKC", username).strip().casefold()
    return hashlib.sha256(folded.encode("utf-8")).hexdigest()[:32]


def _ip_id(ip: str) -> str:
    # One IPv6 client usually owns a whole /64: count it as one address.
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        canonical = ip.strip()
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            canonical = str(address.ipv4_mapped)
        elif isinstance(address, ipaddress.IPv6Address):
            canonical = str(ipaddress.IPv6Network((address, 64), strict=False))
        else:
            canonical = str(address)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class LoginThrottle:
    """Failed-login accounting and locks for the login endpoint.

    Call :meth:`check` before verifying a password (refuse with 429 and
    ``Retry-After`` when it returns a lock), :meth:`record_failure` after a wrong
    password or unknown user, :meth:`record_success` after a successful login.
    """

    def __init__(
        self,
        store: ThrottleStore,
        *,
        max_failures_per_user: int = 5,
        max_failures_per_ip: int = 20,
        window_seconds: float = 900,
        base_lock_seconds: float = 30,
        max_lock_seconds: float = 900,
        fallback: ThrottleStore | None = None,
    ) -> None:
        if max_failures_per_user < 1 or max_failures_per_ip < 1:
            raise ValueError("failure limits must be >= 1")
        if not 0 < base_lock_seconds <= max_lock_seconds or window_seconds <= 0:
            raise ValueError("need 0 < base_lock_seconds <= max_lock_seconds and a window > 0")
        self.store = store
        self.max_failures_per_user = max_failures_per_user
        self.max_failures_per_ip = max_failures_per_ip
        self.policy = LockPolicy(window_seconds, base_lock_seconds, max_lock_seconds)
        self._fallback = fallback or MemoryThrottleStore()
        self._degraded = False

    async def _run(self, operation: Callable[[ThrottleStore], Awaitable[_T]]) -> _T:
        if self.store is self._fallback:
            return await operation(self.store)
        try:
            result = await operation(self.store)
        except (RedisError, OSError) as exc:
            if not self._degraded:
                logger.warning(
                    "login throttle storage unavailable, counting failures in memory: %r", exc
                )
                self._degraded = True
            return await operation(self._fallback)
        if self._degraded:
            logger.info("login throttle storage available again")
            self._degraded = False
        return result

    async def check(self, username: str, ip: str) -> LockState | None:
        """The active lock on this username or IP (the longer one), or None."""
        user_lock, ip_lock = await self._run(
            lambda store: store.lock_remaining(
                [f"lock:user:{_user_id(username)}", f"lock:ip:{_ip_id(ip)}"]
            )
        )
        return _longest(user_lock, ip_lock)

    async def record_failure(self, username: str, ip: str) -> LockState | None:
        """Count a failed login; return the lock now in force if this failure locks."""
        user, address = _user_id(username), _ip_id(ip)
        hits = [
            FailureHit(f"fail:user:{user}", f"lock:user:{user}", self.max_failures_per_user),
            FailureHit(f"fail:ip:{address}", f"lock:ip:{address}", self.max_failures_per_ip),
        ]
        (_, user_lock), (_, ip_lock) = await self._run(
            lambda store: store.add_failures(hits, self.policy)
        )
        return _longest(user_lock, ip_lock)

    async def record_success(self, username: str, ip: str) -> None:
        """Forget the username's failures and lock (the IP's counter is kept)."""
        user = _user_id(username)
        await self._run(lambda store: store.clear(f"fail:user:{user}", f"lock:user:{user}"))

    async def failures(self, username: str) -> int:
        """Failed logins counted for ``username`` in the current window."""
        return await self._run(lambda store: store.count(f"fail:user:{_user_id(username)}"))

    async def ip_failures(self, ip: str) -> int:
        """Failed logins counted for ``ip`` (its /64 for IPv6) in the current window."""
        return await self._run(lambda store: store.count(f"fail:ip:{_ip_id(ip)}"))


def _longest(user_seconds: float, ip_seconds: float) -> LockState | None:
    if user_seconds <= 0 and ip_seconds <= 0:
        return None
    if user_seconds >= ip_seconds:
        return LockState(retry_after=_retry_after(user_seconds), scope="user")
    return LockState(retry_after=_retry_after(ip_seconds), scope="ip")

"""Failed-login counters with exponential lockout, per username and per client IP.

A failure increments the username's and the IP's counters. When a counter reaches its
limit the key is locked for ``base_lock_seconds``; every further failure doubles the
lock, up to ``max_lock_seconds``. A counter lives ``window_seconds`` after its last
failure plus the current lock, so waiting out a lock does not reset the doubling.

Two factors are counted apart, each per subject and per client address: passwords
(per username) and second factors (TOTP codes, per user id). A password success
clears the username's password failures only, never its second-factor failures.

A check that takes time (argon2 hashing) reserves its attempt first: the reservation is
refused while a lock is active, else counted as a failure at once. The reservation that
reaches the limit sets a *provisional* lock; its failure confirms the lock, its success
removes it (and clears the subject's counter). A reservation that meets a provisional
lock waits (a few seconds at most) for the attempt holding it to be decided. So parallel
guesses never verify more than the limit, however slow the check, while parallel logins
with the right password all get through. An attempt never decided (its request died)
stays counted as a failure, and its provisional lock runs out as a lock would.

Counters live in Redis (shared by all replicas, updated atomically by a Lua script)
or in process memory. When Redis fails, :class:`LoginThrottle` falls back to memory
and logs once per outage, so guessing stays bounded (per replica) instead of unlimited.
"""

from __future__ import annotations

import asyncio
import hashlib
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

from flightdeck_common.client_addresses import address_key

logger = logging.getLogger(__name__)

LockScope = Literal["user", "ip"]
Factor = Literal["password", "second_factor"]
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
class HitOutcome:
    """What a reservation did to one counter.

    Reserved: ``count`` is the counter with this attempt, ``lock_seconds`` the lock it set
    (0: none; a refund removes it). Refused: ``count`` is 0 and ``lock_seconds`` the lock
    that refused it (0 for a key that is not locked).
    """

    count: int
    lock_seconds: float
    # Refused: this key's lock is provisional (its attempt is not decided yet), or it has
    # none; the attempt waits when every key says so.
    provisional: bool = False


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
    async def reserve(
        self, hits: Sequence[FailureHit], policy: LockPolicy
    ) -> tuple[bool, list[HitOutcome]]:
        """Refuse (False) when any hit's lock is active; else count one failure on each hit,
        setting a provisional lock where the count reaches the limit, and return True with
        what it did per hit."""

    @abstractmethod
    async def confirm(self, hits: Sequence[FailureHit], outcomes: Sequence[HitOutcome]) -> None:
        """The reserved attempt failed: the provisional locks it set become locks."""

    @abstractmethod
    async def refund(self, hits: Sequence[FailureHit], outcomes: Sequence[HitOutcome]) -> None:
        """Undo a reservation: one failure less on each counter, and the provisional locks
        it set gone."""

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
    provisional: bool = False


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

    async def reserve(
        self, hits: Sequence[FailureHit], policy: LockPolicy
    ) -> tuple[bool, list[HitOutcome]]:
        now = self._clock()
        active = [self._live(hit.lock_key, now) for hit in hits]
        if any(entry is not None for entry in active):
            return False, [
                HitOutcome(0, entry.expires_at - now, entry.provisional)
                if entry
                else HitOutcome(0, 0.0, True)
                for entry in active
            ]
        outcomes: list[HitOutcome] = []
        for hit in hits:
            entry = self._live(hit.counter_key, now)
            count = (entry.count if entry else 0) + 1
            lock = policy.lock_seconds(count, hit.limit)
            if lock > 0:
                self._entries[hit.lock_key] = _Entry(0, now + lock, provisional=True)
            self._entries[hit.counter_key] = _Entry(count, now + policy.window_seconds + lock)
            outcomes.append(HitOutcome(count, lock))
        self._prune(now)
        return True, outcomes

    async def confirm(self, hits: Sequence[FailureHit], outcomes: Sequence[HitOutcome]) -> None:
        now = self._clock()
        for hit, outcome in zip(hits, outcomes, strict=True):
            lock = self._live(hit.lock_key, now) if outcome.lock_seconds > 0 else None
            if lock is not None:
                lock.provisional = False

    async def refund(self, hits: Sequence[FailureHit], outcomes: Sequence[HitOutcome]) -> None:
        now = self._clock()
        for hit, outcome in zip(hits, outcomes, strict=True):
            entry = self._live(hit.counter_key, now)
            if entry is not None and entry.count > 0:
                entry.count -= 1
            lock = self._live(hit.lock_key, now) if outcome.lock_seconds > 0 else None
            if lock is not None and lock.provisional:
                del self._entries[hit.lock_key]

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

# KEYS and ARGV as above. A provisional lock holds 'p', a lock '1'. Returns
# {0, lock_ms1, provisional1, lock_ms2, provisional2, ...} when a lock refuses the attempt
# (provisional: 1 for a provisional lock or none), else {1, count1, lock_ms1, count2,
# lock_ms2, ...} (lock_ms: the provisional lock it set).
_RESERVE_LUA = """
local window_ms = tonumber(ARGV[1])
local base_ms = tonumber(ARGV[2])
local max_ms = tonumber(ARGV[3])
local pairs_count = #KEYS / 2
local refused = {0}
local locked = false
for i = 1, pairs_count do
  local remaining = redis.call('PTTL', KEYS[2 * i])
  local provisional = 1
  if remaining > 0 then
    locked = true
    if redis.call('GET', KEYS[2 * i]) ~= 'p' then
      provisional = 0
    end
  else
    remaining = 0
  end
  refused[2 * i] = remaining
  refused[2 * i + 1] = provisional
end
if locked then
  return refused
end
local result = {1}
for i = 1, pairs_count do
  local counter_key = KEYS[2 * i - 1]
  local lock_key = KEYS[2 * i]
  local limit = tonumber(ARGV[3 + i])
  local count = redis.call('INCR', counter_key)
  local lock_ms = 0
  if count >= limit then
    lock_ms = math.floor(math.min(base_ms * 2 ^ math.min(count - limit, 40), max_ms))
    redis.call('SET', lock_key, 'p', 'PX', lock_ms)
  end
  redis.call('PEXPIRE', counter_key, window_ms + lock_ms)
  result[2 * i] = count
  result[2 * i + 1] = lock_ms
end
return result
"""

# KEYS: lock1, lock2, ... (the provisional locks a failed reservation set).
_CONFIRM_LUA = """
for i = 1, #KEYS do
  local remaining = redis.call('PTTL', KEYS[i])
  if remaining > 0 and redis.call('GET', KEYS[i]) == 'p' then
    redis.call('SET', KEYS[i], '1', 'PX', remaining)
  end
end
return 1
"""

# KEYS: counter1, lock1, ...  ARGV: 1 when the reservation set lock i, else 0.
_REFUND_LUA = """
for i = 1, #KEYS / 2 do
  local counter_key = KEYS[2 * i - 1]
  if tonumber(redis.call('GET', counter_key) or '0') > 0 then
    redis.call('DECR', counter_key)
  end
  if ARGV[i] == '1' and redis.call('GET', KEYS[2 * i]) == 'p' then
    redis.call('DEL', KEYS[2 * i])
  end
end
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisThrottleStore(ThrottleStore):
    """Counters in Redis, shared by every replica; each failure is one atomic script call."""

    def __init__(self, redis: Redis, *, prefix: str = "flightdeck:auth:throttle:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._add_failures_script = redis.register_script(_ADD_FAILURES_LUA)
        self._reserve_script = redis.register_script(_RESERVE_LUA)
        self._refund_script = redis.register_script(_REFUND_LUA)
        self._confirm_script = redis.register_script(_CONFIRM_LUA)

    def _keys(self, hits: Sequence[FailureHit]) -> list[str]:
        keys: list[str] = []
        for hit in hits:
            keys += [self._prefix + hit.counter_key, self._prefix + hit.lock_key]
        return keys

    @staticmethod
    def _args(hits: Sequence[FailureHit], policy: LockPolicy) -> list[int]:
        return [
            _ms(policy.window_seconds),
            _ms(policy.base_lock_seconds),
            _ms(policy.max_lock_seconds),
            *(hit.limit for hit in hits),
        ]

    async def add_failures(
        self, hits: Sequence[FailureHit], policy: LockPolicy
    ) -> list[tuple[int, float]]:
        raw: list[Any] = await self._add_failures_script(
            keys=self._keys(hits), args=self._args(hits, policy)
        )
        return [(int(raw[i]), int(raw[i + 1]) / 1000) for i in range(0, len(raw), 2)]

    async def reserve(
        self, hits: Sequence[FailureHit], policy: LockPolicy
    ) -> tuple[bool, list[HitOutcome]]:
        raw: list[Any] = await self._reserve_script(
            keys=self._keys(hits), args=self._args(hits, policy)
        )
        if int(raw[0]) == 0:
            return False, [
                HitOutcome(0, int(raw[i]) / 1000, int(raw[i + 1]) == 1)
                for i in range(1, len(raw), 2)
            ]
        return True, [
            HitOutcome(int(raw[i]), int(raw[i + 1]) / 1000) for i in range(1, len(raw), 2)
        ]

    async def confirm(self, hits: Sequence[FailureHit], outcomes: Sequence[HitOutcome]) -> None:
        keys = [
            self._prefix + hit.lock_key
            for hit, outcome in zip(hits, outcomes, strict=True)
            if outcome.lock_seconds > 0
        ]
        if keys:
            await self._confirm_script(keys=keys, args=[])

    async def refund(self, hits: Sequence[FailureHit], outcomes: Sequence[HitOutcome]) -> None:
        args = [1 if outcome.lock_seconds > 0 else 0 for outcome in outcomes]
        await self._refund_script(keys=self._keys(hits), args=args)

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
    return hashlib.sha256(address_key(ip).encode("utf-8")).hexdigest()[:32]


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


# Key prefixes per factor (the password ones predate second factors and keep their names).
_FACTOR_PREFIX: dict[Factor, str] = {"password": "", "second_factor": "2fa:"}


@dataclass(frozen=True, slots=True)
class Attempt:
    """A reserved (or refused) check of one factor for one subject from one address.

    ``refused`` is the lock that refused it: answer that without checking anything.
    Otherwise the attempt already counts as a failure; :attr:`lock_if_failed` is the lock
    to answer with when the check fails, and :meth:`LoginThrottle.succeeded` refunds it.
    """

    factor: Factor
    hits: tuple[FailureHit, FailureHit]
    outcomes: tuple[HitOutcome, HitOutcome]
    refused: LockState | None

    @property
    def lock_if_failed(self) -> LockState | None:
        user, address = self.outcomes
        return _longest(user.lock_seconds, address.lock_seconds)

    @property
    def seen_hit(self) -> FailureHit:
        """The subject's confirmed failures: a reservation in flight is not one yet (what
        the risk policy reads; never locks)."""
        user = self.hits[0]
        return FailureHit(f"seen:{user.counter_key}", f"seen:{user.lock_key}", _NEVER)


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
        pending_wait_seconds: float = 10.0,
    ) -> None:
        if max_failures_per_user < 1 or max_failures_per_ip < 1:
            raise ValueError("failure limits must be >= 1")
        if not 0 < base_lock_seconds <= max_lock_seconds or window_seconds <= 0:
            raise ValueError("need 0 < base_lock_seconds <= max_lock_seconds and a window > 0")
        self.store = store
        self.max_failures_per_user = max_failures_per_user
        self.max_failures_per_ip = max_failures_per_ip
        self.policy = LockPolicy(window_seconds, base_lock_seconds, max_lock_seconds)
        # How long a reservation waits for the pending attempt that holds a provisional lock.
        self.pending_wait_seconds = pending_wait_seconds
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

    def _hits(self, factor: Factor, subject: str, ip: str) -> tuple[FailureHit, FailureHit]:
        prefix = _FACTOR_PREFIX[factor]
        user, address = _user_id(subject), _ip_id(ip)
        return (
            FailureHit(
                f"{prefix}fail:user:{user}", f"{prefix}lock:user:{user}", self.max_failures_per_user
            ),
            FailureHit(
                f"{prefix}fail:ip:{address}", f"{prefix}lock:ip:{address}", self.max_failures_per_ip
            ),
        )

    async def _reserve(self, factor: Factor, subject: str, ip: str) -> Attempt:
        hits = self._hits(factor, subject, ip)
        deadline = time.monotonic() + self.pending_wait_seconds
        pause = 0.01
        while True:
            reserved, outcomes = await self._run(lambda store: store.reserve(hits, self.policy))
            user, address = outcomes
            if reserved:
                return Attempt(factor, hits, (user, address), None)
            pending = all(outcome.provisional for outcome in outcomes)
            if not pending or time.monotonic() + pause > deadline:
                refused = _longest(user.lock_seconds, address.lock_seconds)
                return Attempt(factor, hits, (user, address), refused or LockState(1, "user"))
            # The lock waits on an attempt being checked: its outcome decides this one's.
            # Polled often (a hash takes tens of ms): a right password frees the slot for
            # the next parallel login of the same user at once.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def reserve_password_attempt(self, username: str, ip: str) -> Attempt:
        """Reserve a password check for ``username`` from ``ip`` (before hashing)."""
        return await self._reserve("password", username, ip)

    async def reserve_second_factor_attempt(self, user_id: int, ip: str) -> Attempt:
        """Reserve a second-factor check (a TOTP code) for the user ``user_id`` from ``ip``."""
        return await self._reserve("second_factor", f"#{user_id}", ip)

    async def succeeded(self, attempt: Attempt) -> None:
        """The check passed: forget the subject's failures of this factor (and its lock),
        and give the address back the failure the reservation counted."""
        if attempt.refused is not None:
            return
        user_hit, address_hit = attempt.hits
        seen = attempt.seen_hit.counter_key
        await self._run(lambda store: store.clear(user_hit.counter_key, user_hit.lock_key, seen))
        await self._run(lambda store: store.refund([address_hit], [attempt.outcomes[1]]))

    async def released(self, attempt: Attempt) -> None:
        """The check never ran (another reservation of the same request was refused): give
        back what the reservation counted, clearing nothing."""
        if attempt.refused is None:
            await self._run(lambda store: store.refund(attempt.hits, attempt.outcomes))

    async def failed(self, attempt: Attempt) -> None:
        """The check failed: the reservation stays counted and its locks take effect."""
        # Only when it set a lock: a call that never reaches the store would read as the
        # store being back during an outage.
        if attempt.refused is None and any(o.lock_seconds > 0 for o in attempt.outcomes):
            await self._run(lambda store: store.confirm(attempt.hits, attempt.outcomes))
        if attempt.refused is None:
            await self._run(lambda store: store.add_failures([attempt.seen_hit], self.policy))

    async def confirmed_failures(self, attempt: Attempt) -> int:
        """The failures of ``attempt``'s subject that were checked and failed in the current
        window (not the reservations of concurrent attempts still being checked)."""
        return await self._run(lambda store: store.count(attempt.seen_hit.counter_key))

    async def record_second_factor_failure(self, user_id: int, ip: str) -> LockState | None:
        """Count a wrong second factor checked without a reservation; the lock now in force."""
        hits = self._hits("second_factor", f"#{user_id}", ip)
        (_, user_lock), (_, ip_lock) = await self._run(
            lambda store: store.add_failures(hits, self.policy)
        )
        return _longest(user_lock, ip_lock)

    async def second_factor_failures(self, user_id: int) -> int:
        """Wrong second factors counted for the user ``user_id`` in the current window."""
        counter = self._hits("second_factor", f"#{user_id}", "")[0].counter_key
        return await self._run(lambda store: store.count(counter))

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


_NEVER = 2**31 - 1  # a limit no counter reaches


def _longest(user_seconds: float, ip_seconds: float) -> LockState | None:
    if user_seconds <= 0 and ip_seconds <= 0:
        return None
    if user_seconds >= ip_seconds:
        return LockState(retry_after=_retry_after(user_seconds), scope="user")
    return LockState(retry_after=_retry_after(ip_seconds), scope="ip")

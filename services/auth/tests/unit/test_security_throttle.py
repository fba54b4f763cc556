"""Failed-login throttling on process memory and on real, shared Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from flightdeck_auth.security.throttle import (
    LockState,
    LoginThrottle,
    MemoryThrottleStore,
    RedisThrottleStore,
    ThrottleStore,
)
from flightdeck_common.devstack.ports import free_port
from flightdeck_common.redis_client import create_redis

IP = "198.51.100.7"
ThrottleFactory = Callable[..., LoginThrottle]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["memory", "redis"])
async def make_throttle(request: pytest.FixtureRequest) -> AsyncIterator[ThrottleFactory]:
    """Throttles on one backend; throttles made in the same test share the storage."""
    clients: list[Any] = []
    memory = MemoryThrottleStore()
    redis_url: str | None = (
        request.getfixturevalue("redis_url") if request.param == "redis" else None
    )

    def make(**options: Any) -> LoginThrottle:
        store: ThrottleStore = memory
        if redis_url is not None:
            client = create_redis(redis_url)  # one client per throttle: like two replicas
            clients.append(client)
            store = RedisThrottleStore(client)
        return LoginThrottle(store, **options)

    yield make
    for client in clients:
        await client.aclose()


async def fail(
    throttle: LoginThrottle, times: int, username: str = "alice", ip: str = IP
) -> list[LockState | None]:
    return [await throttle.record_failure(username, ip) for _ in range(times)]


async def test_locks_after_max_failures(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=3, base_lock_seconds=30)
    results = await fail(throttle, 3)
    assert results[:2] == [None, None]
    assert results[2] == LockState(retry_after=30, scope="user")
    lock = await throttle.check("alice", IP)
    assert lock is not None
    assert lock.scope == "user"
    assert 0 < lock.retry_after <= 30
    # Another user from the same IP is not locked.
    assert await throttle.check("bob", IP) is None
    assert await throttle.failures("alice") == 3


async def test_no_lock_below_the_limit(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=3)
    await fail(throttle, 2)
    assert await throttle.check("alice", IP) is None
    assert await throttle.failures("alice") == 2
    assert await throttle.failures("nobody") == 0


async def test_lock_expires(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=2, base_lock_seconds=0.2)
    results = await fail(throttle, 2)
    assert results[1] == LockState(retry_after=1, scope="user")  # whole seconds, rounded up
    assert await throttle.check("alice", IP) is not None
    await asyncio.sleep(0.3)
    assert await throttle.check("alice", IP) is None
    # The counter outlives the lock, so the next failure locks again (twice as long).
    assert await throttle.failures("alice") == 2
    assert await throttle.record_failure("alice", IP) is not None


async def test_each_further_failure_doubles_the_lock_up_to_the_cap(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(max_failures_per_user=2, base_lock_seconds=1, max_lock_seconds=4)
    results = await fail(throttle, 6)
    assert [r.retry_after if r else None for r in results] == [None, 1, 2, 4, 4, 4]
    assert all(r is None or r.scope == "user" for r in results)


async def test_ip_lock_across_many_usernames(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=100, max_failures_per_ip=5, base_lock_seconds=60)
    results = [await throttle.record_failure(f"user{i}", IP) for i in range(5)]
    assert results[:4] == [None] * 4
    assert results[4] == LockState(retry_after=60, scope="ip")
    lock = await throttle.check("someone-else", IP)
    assert lock is not None
    assert lock.scope == "ip"
    assert await throttle.check("someone-else", "198.51.100.8") is None
    assert await throttle.ip_failures(IP) == 5


async def test_longer_lock_wins_when_both_apply(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(
        max_failures_per_user=2, max_failures_per_ip=3, base_lock_seconds=10, max_lock_seconds=900
    )
    results = await fail(throttle, 3)
    # Third failure: user lock doubled to 20 s, IP lock starts at 10 s.
    assert results[2] == LockState(retry_after=20, scope="user")
    results = await fail(throttle, 2)
    # Fifth: user 80 s, IP 40 s.
    assert results[-1] == LockState(retry_after=80, scope="user")
    lock = await throttle.check("other", IP)
    assert lock is not None
    assert lock.scope == "ip"


async def test_success_clears_the_user_counter_not_the_ip(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=5, max_failures_per_ip=10)
    await fail(throttle, 3)
    await throttle.record_success("alice", IP)
    assert await throttle.failures("alice") == 0
    assert await throttle.ip_failures(IP) == 3
    # The count starts over: four more failures do not lock.
    assert await fail(throttle, 4) == [None] * 4


async def test_success_clears_a_user_lock(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=2)
    await fail(throttle, 2)
    await throttle.record_success("alice", IP)
    assert await throttle.check("alice", IP) is None


async def test_username_variants_share_a_counter(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=3)
    await throttle.record_failure("Alice", IP)
    await throttle.record_failure(" alice ", IP)
    await throttle.record_failure("\uff21\uff2c\uff29\uff23\uff25", IP)  # fullwidth ALICE
    assert await throttle.failures("alice") == 3
    assert await throttle.check("alice", IP) is not None


async def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle()
    await throttle.record_failure("a", "2001:db8:1:2::1")
    await throttle.record_failure("b", "2001:db8:1:2:ffff::9")
    await throttle.record_failure("c", "2001:db8:1:3::1")
    assert await throttle.ip_failures("2001:db8:1:2::42") == 2
    assert await throttle.ip_failures("2001:db8:1:3::") == 1
    await throttle.record_failure("d", "::ffff:192.0.2.1")
    assert await throttle.ip_failures("192.0.2.1") == 1
    await throttle.record_failure("e", "unknown")
    assert await throttle.ip_failures("unknown") == 1


async def test_two_throttles_share_counters(make_throttle: ThrottleFactory) -> None:
    replica_a = make_throttle(max_failures_per_user=3)
    replica_b = make_throttle(max_failures_per_user=3)
    await replica_a.record_failure("alice", IP)
    await replica_b.record_failure("alice", IP)
    assert await replica_a.failures("alice") == 2
    assert await replica_b.record_failure("alice", IP) is not None
    lock = await replica_a.check("alice", IP)
    assert lock is not None
    assert lock.scope == "user"
    await replica_a.record_success("alice", IP)
    assert await replica_b.check("alice", IP) is None


async def test_concurrent_failures_are_counted_exactly(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(
        max_failures_per_user=5, max_failures_per_ip=1000, base_lock_seconds=1, max_lock_seconds=900
    )
    results = await asyncio.gather(*(throttle.record_failure("alice", IP) for _ in range(20)))
    assert await throttle.failures("alice") == 20
    assert await throttle.ip_failures(IP) == 20
    locks = sorted(r.retry_after for r in results if r is not None)
    # Counts 5..20 each produced exactly one lock: 1, 2, 4 ... 512, then the cap.
    assert locks == sorted(min(2**k, 900) for k in range(16))


def test_invalid_options_are_refused() -> None:
    store = MemoryThrottleStore()
    invalid: list[dict[str, Any]] = [
        {"max_failures_per_user": 0},
        {"max_failures_per_ip": 0},
        {"base_lock_seconds": 0},
        {"base_lock_seconds": 60, "max_lock_seconds": 30},
        {"window_seconds": 0},
    ]
    for options in invalid:
        with pytest.raises(ValueError, match=r"must be|need"):
            LoginThrottle(store, **options)


# --- memory store with an injected clock --------------------------------------------------


async def test_memory_lock_doubles_after_waiting_out_each_lock() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(
        MemoryThrottleStore(clock=clock),
        max_failures_per_user=2,
        base_lock_seconds=30,
        max_lock_seconds=900,
        window_seconds=900,
    )
    assert await fail(throttle, 2) == [None, LockState(30, "user")]
    clock.advance(29)
    assert await throttle.check("alice", IP) == LockState(1, "user")
    clock.advance(1)
    assert await throttle.check("alice", IP) is None
    assert await throttle.record_failure("alice", IP) == LockState(60, "user")
    for expected in (120, 240, 480, 900, 900):
        clock.advance(expected)  # wait out the previous lock (at most as long as this one)
        lock = await throttle.record_failure("alice", IP)
        assert lock == LockState(expected, "user")


async def test_memory_counter_expires_after_window_plus_lock() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(
        MemoryThrottleStore(clock=clock),
        max_failures_per_user=3,
        base_lock_seconds=30,
        window_seconds=900,
    )
    await fail(throttle, 2)
    clock.advance(899)
    assert await throttle.failures("alice") == 2
    clock.advance(1)
    assert await throttle.failures("alice") == 0
    await fail(throttle, 3)  # locked for 30 s: the counter lives 900 + 30 s
    clock.advance(929)
    assert await throttle.failures("alice") == 3
    clock.advance(1)
    assert await throttle.failures("alice") == 0


async def test_memory_store_is_bounded() -> None:
    store = MemoryThrottleStore(max_entries=50)
    throttle = LoginThrottle(store)
    for i in range(500):
        await throttle.record_failure(f"spray{i}", f"10.0.{i // 256}.{i % 256}")
    assert len(store._entries) <= 50


# --- Redis specifics ---------------------------------------------------------------------------


async def test_redis_keys_do_not_contain_usernames_or_ips(redis_url: str) -> None:
    client = create_redis(redis_url)
    try:
        throttle = LoginThrottle(RedisThrottleStore(client), max_failures_per_user=1)
        await throttle.record_failure("alice.secret-name", IP)
        keys = [k.decode() if isinstance(k, bytes) else k for k in await client.keys("*")]
        assert len(keys) == 3  # user and IP counters, user lock
        assert all(key.startswith("flightdeck:auth:throttle:") for key in keys)
        assert not any("alice" in key or IP in key for key in keys)
        # Every key expires.
        assert all([await client.pttl(key) > 0 for key in keys])
    finally:
        await client.aclose()


async def test_redis_outage_falls_back_to_memory_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        throttle = LoginThrottle(RedisThrottleStore(dead), max_failures_per_user=3)
        with caplog.at_level(logging.WARNING, logger="flightdeck_auth.security.throttle"):
            assert await throttle.check("alice", IP) is None
            results = await fail(throttle, 3)
            assert await throttle.check("alice", IP) is not None
            assert await throttle.failures("alice") == 3
        # Still bounded (never unlimited guessing), and logged once, not per call.
        assert results[:2] == [None, None]
        assert results[2] is not None
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await dead.aclose()


async def test_parallel_reservations_never_exceed_the_limit(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=5, max_failures_per_ip=100)
    checked = 0

    async def guess() -> LockState | None:
        nonlocal checked
        attempt = await throttle.reserve_password_attempt("alice", IP)
        if attempt.refused is not None:
            return attempt.refused
        checked += 1
        await asyncio.sleep(0.05)  # a slow (wrong) password check
        await throttle.failed(attempt)
        return attempt.lock_if_failed

    locks = await asyncio.gather(*(guess() for _ in range(40)))
    assert checked == 5
    assert sum(lock is None for lock in locks) == 4
    assert await throttle.failures("alice") == 5
    assert await throttle.check("alice", IP) is not None


async def test_a_passing_reservation_lifts_its_provisional_lock(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(max_failures_per_user=2, max_failures_per_ip=100)
    await throttle.record_failure("alice", IP)
    held = await throttle.reserve_password_attempt("alice", IP)
    assert held.refused is None
    assert held.lock_if_failed is not None

    waiter = asyncio.create_task(throttle.reserve_password_attempt("alice", IP))
    await asyncio.sleep(0.1)
    assert not waiter.done()  # waits for the pending check instead of being refused
    await throttle.succeeded(held)
    admitted = await waiter
    assert admitted.refused is None
    assert await throttle.check("alice", IP) is None
    assert await throttle.failures("alice") == 1  # the waiter's own reservation
    assert await throttle.ip_failures(IP) == 2  # the success gave its address count back


async def test_a_provisional_lock_that_is_never_decided_refuses_after_the_wait(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(max_failures_per_user=1, pending_wait_seconds=0.2)
    held = await throttle.reserve_password_attempt("alice", IP)
    assert held.refused is None
    refused = await throttle.reserve_password_attempt("alice", IP)
    assert refused.refused is not None
    assert refused.refused.scope == "user"


async def test_second_factors_count_apart_and_a_password_success_keeps_them(
    make_throttle: ThrottleFactory,
) -> None:
    throttle = make_throttle(max_failures_per_user=2, max_failures_per_ip=100)
    first = await throttle.reserve_second_factor_attempt(7, IP)
    await throttle.failed(first)
    second = await throttle.reserve_second_factor_attempt(7, IP)
    await throttle.failed(second)
    assert second.lock_if_failed is not None
    password = await throttle.reserve_password_attempt("alice", IP)
    assert password.refused is None  # a second-factor lock is not a password lock
    await throttle.succeeded(password)
    assert await throttle.second_factor_failures(7) == 2
    assert (await throttle.reserve_second_factor_attempt(7, IP)).refused is not None
    assert (await throttle.reserve_second_factor_attempt(8, IP)).refused is None


async def test_second_factors_count_per_ipv6_64(make_throttle: ThrottleFactory) -> None:
    throttle = make_throttle(max_failures_per_user=100, max_failures_per_ip=2)
    assert await throttle.record_second_factor_failure(1, "2001:db8:1:2::1") is None
    lock = await throttle.record_second_factor_failure(2, "2001:db8:1:2:ffff::9")
    assert lock is not None
    assert lock.scope == "ip"
    refused = await throttle.reserve_second_factor_attempt(3, "2001:db8:1:2::abcd")
    assert refused.refused is not None
    assert refused.refused.scope == "ip"
    assert (await throttle.reserve_second_factor_attempt(3, "2001:db8:1:3::1")).refused is None


async def test_reserved_attempts_during_a_redis_outage_log_the_outage_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        throttle = LoginThrottle(RedisThrottleStore(dead), max_failures_per_user=3)
        with caplog.at_level(logging.INFO, logger="flightdeck_auth.security.throttle"):
            for _ in range(3):
                attempt = await throttle.reserve_password_attempt("alice", IP)
                assert attempt.refused is None
                await throttle.failed(attempt)
            assert (await throttle.reserve_password_attempt("alice", IP)).refused is not None
        messages = [r.getMessage() for r in caplog.records]
        assert sum("unavailable" in m for m in messages) == 1
        assert not any("available again" in m for m in messages)
    finally:
        await dead.aclose()

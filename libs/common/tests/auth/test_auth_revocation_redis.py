"""RedisRevocations against a real Redis: the keys auth writes and every service reads."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from flightdeck_common.auth import (
    USER_AUDIENCE,
    AuthUnavailable,
    RedisRevocations,
    TokenClaims,
    TokenRevoked,
    TokenUse,
    TokenVerifier,
)
from flightdeck_common.auth.testing import TokenMinter
from flightdeck_common.devstack.ports import free_port
from flightdeck_common.redis_client import create_redis

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _claims(jti: str = "j1", sub: str = "7", iat: float | None = None) -> TokenClaims:
    iat = time.time() - 60 if iat is None else iat
    return TokenClaims(
        sub=sub, jti=jti, iat=iat, exp=iat + 900, aud=("flightdeck",), token_use=TokenUse.ACCESS
    )


async def test_revoked_jti_with_ttl_until_expiry(redis: Redis) -> None:
    revocations = RedisRevocations(redis)
    token = _claims("abc")
    await revocations.revoke_jti("abc", datetime.fromtimestamp(token.exp, UTC))
    assert await revocations.is_revoked(token)
    assert not await revocations.is_revoked(_claims("other"))
    assert await redis.get("flightdeck:revoked:jti:abc") == b"1"
    ttl = await redis.ttl("flightdeck:revoked:jti:abc")
    assert token.exp - time.time() < ttl <= token.exp - time.time() + 61


async def test_revoking_an_expired_token_writes_nothing(redis: Redis) -> None:
    await RedisRevocations(redis).revoke_jti("gone", time.time() - 3600)
    assert await redis.exists("flightdeck:revoked:jti:gone") == 0


async def test_subject_revocation_value_ttl_and_cut_off(redis: Redis) -> None:
    revocations = RedisRevocations(redis)
    revoked_at = datetime.now(UTC)
    now = revoked_at.timestamp()
    await revocations.revoke_subject("7", revoked_at, timedelta(seconds=900))
    assert float(await redis.get("flightdeck:revoked:sub:7")) == pytest.approx(now, abs=1e-6)
    ttl = await redis.ttl("flightdeck:revoked:sub:7")
    assert 900 < ttl <= 961
    assert await revocations.is_revoked(_claims(sub="7", iat=now - 5))
    assert await revocations.is_revoked(_claims(sub="7", iat=now))
    assert not await revocations.is_revoked(_claims(sub="7", iat=now + 0.001))
    assert not await revocations.is_revoked(_claims(sub="8", iat=now - 5))


async def test_subject_revocation_keeps_the_latest(redis: Redis) -> None:
    revocations = RedisRevocations(redis)
    now = time.time()
    await revocations.revoke_subject("7", now, 900)
    await revocations.revoke_subject("7", now - 100, 900)  # older, e.g. replayed by a retry
    assert float(await redis.get("flightdeck:revoked:sub:7")) == pytest.approx(now)
    assert await redis.ttl("flightdeck:revoked:sub:7") > 900
    await revocations.revoke_subject("7", now + 30, 900)
    assert float(await redis.get("flightdeck:revoked:sub:7")) == pytest.approx(now + 30)
    assert await revocations.is_revoked(_claims(sub="7", iat=now + 10))


async def test_a_check_is_one_round_trip(redis: Redis) -> None:
    revocations = RedisRevocations(redis)
    await redis.config_resetstat()
    await revocations.is_revoked(_claims())
    stats = await redis.info("commandstats")
    calls = {
        name: value["calls"]
        for name, value in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }
    assert calls == {"cmdstat_mget": 1}


async def test_revocation_written_by_auth_is_seen_by_another_service(
    redis_url: str, redis: Redis
) -> None:
    minter = TokenMinter()
    auth_side = RedisRevocations(redis)
    service_redis = create_redis(redis_url)
    try:
        verifier = TokenVerifier(minter.key_source(), revocations=RedisRevocations(service_redis))
        token = minter.user_token("7")
        assert (await verifier.verify(token, USER_AUDIENCE)).sub == "7"
        await auth_side.revoke_subject("7", time.time(), 900)
        with pytest.raises(TokenRevoked):
            await verifier.verify(token, USER_AUDIENCE)
        # A token issued after the revocation (a new login) is fine.
        later = minter.user_token("7", issued_at=time.time() + 0.01)
        assert (await verifier.verify(later, USER_AUDIENCE)).sub == "7"
    finally:
        await service_redis.aclose()


async def test_redis_down_fails_open_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        revocations = RedisRevocations(dead)
        with caplog.at_level(logging.WARNING, logger="flightdeck_common.auth.revocation"):
            results = [await revocations.is_revoked(_claims()) for _ in range(3)]
        assert results == [False, False, False]
        assert len([r for r in caplog.records if "cannot reach Redis" in r.getMessage()]) == 1
        # Writes never fail silently: auth must know a revocation was not stored.
        with pytest.raises(RedisConnectionError):
            await revocations.revoke_jti("j", time.time() + 60)
    finally:
        await dead.aclose()


async def test_redis_down_fails_closed_when_asked() -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(AuthUnavailable):
            await RedisRevocations(dead, fail_closed=True).is_revoked(_claims())
    finally:
        await dead.aclose()

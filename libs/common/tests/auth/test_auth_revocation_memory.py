"""MemoryRevocations: the in-process denylist of auth (embedded mode) and of feed followers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flightdeck_common.auth import MemoryRevocations, TokenClaims, TokenUse

NOW = 1_700_000_000.0


def _claims(jti: str = "j1", sub: str = "7", iat: float = NOW - 100) -> TokenClaims:
    return TokenClaims(
        sub=sub, jti=jti, iat=iat, exp=iat + 900, aud=("flightdeck",), token_use=TokenUse.ACCESS
    )


def _memory(clock: Any) -> MemoryRevocations:
    clock.now = NOW
    return MemoryRevocations(clock=clock)


async def test_revoked_jti_until_the_token_expires(clock: Any) -> None:
    memory = _memory(clock)
    token = _claims("j1")
    await memory.revoke_jti("j1", token.exp)
    assert await memory.is_revoked(token)
    assert not await memory.is_revoked(_claims("j2"))
    clock.advance(token.exp - NOW + 61)  # past exp and the grace period
    assert not await memory.is_revoked(token)
    assert memory.prune() == 1
    assert len(memory) == 0


async def test_subject_revocation_covers_tokens_issued_until_then(clock: Any) -> None:
    memory = _memory(clock)
    await memory.revoke_subject("7", datetime.fromtimestamp(NOW, UTC), timedelta(minutes=15))
    assert await memory.is_revoked(_claims(sub="7", iat=NOW - 1))
    assert await memory.is_revoked(_claims(sub="7", iat=NOW))
    assert not await memory.is_revoked(_claims(sub="7", iat=NOW + 0.5))  # logged in again
    assert not await memory.is_revoked(_claims(sub="8", iat=NOW - 1))
    clock.advance(900 + 61)
    assert not await memory.is_revoked(_claims(sub="7", iat=NOW - 1))


async def test_latest_subject_revocation_wins(clock: Any) -> None:
    memory = _memory(clock)
    await memory.revoke_subject("7", NOW, 900)
    await memory.revoke_subject("7", NOW - 50, 900)  # an older one, arriving late
    assert await memory.is_revoked(_claims(sub="7", iat=NOW - 10))
    await memory.revoke_subject("7", NOW + 20, 900)
    assert await memory.is_revoked(_claims(sub="7", iat=NOW + 10))


async def test_already_expired_revocations_are_not_stored(clock: Any) -> None:
    memory = _memory(clock)
    await memory.revoke_jti("old", NOW - 3600)
    await memory.revoke_subject("old", NOW - 7200, 900)
    assert len(memory) == 0


async def test_naive_datetimes_are_taken_as_utc(clock: Any) -> None:
    memory = _memory(clock)
    naive = datetime.fromtimestamp(NOW, UTC).replace(tzinfo=None)
    await memory.revoke_subject("7", naive, 900)
    assert await memory.is_revoked(_claims(sub="7", iat=NOW - 1))
    assert not await memory.is_revoked(_claims(sub="7", iat=NOW + 1))

"""RevocationFeedFollower against a fake auth feed: cursor, pages, outages, token refresh."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flightdeck_common.auth import (
    AUTH_REVOCATIONS_AUDIENCE,
    REVOCATION_FEED_PATH,
    SERVICE_TOKEN_PATH,
    USER_AUDIENCE,
    MemoryRevocations,
    RevocationFeedFollower,
    RevocationFeedUnavailable,
    ServiceTokenProvider,
    TokenClaims,
    TokenRevoked,
    TokenUse,
    TokenVerifier,
)
from flightdeck_common.auth.testing import TokenMinter


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _entry(
    entry_id: int,
    *,
    jti: str | None = None,
    subject: str | None = None,
    revoked_at: datetime | None = None,
    ttl: float = 900,
) -> dict[str, Any]:
    revoked_at = revoked_at or datetime.now(UTC)
    return {
        "id": entry_id,
        "jti": jti,
        "subject": subject,
        "revoked_at": _iso(revoked_at),
        "expires_at": _iso(revoked_at + timedelta(seconds=ttl)),
    }


def _claims(jti: str = "x", sub: str = "1", iat: float | None = None) -> TokenClaims:
    iat = time.time() - 30 if iat is None else iat
    return TokenClaims(
        sub=sub, jti=jti, iat=iat, exp=iat + 900, aud=("flightdeck",), token_use=TokenUse.ACCESS
    )


def _follower(fake_auth: Any, clock: Any = None, **options: Any) -> RevocationFeedFollower:
    provider = ServiceTokenProvider(
        SERVICE_TOKEN_PATH, "pipeline", "s3cret", [AUTH_REVOCATIONS_AUDIENCE], fake_auth.http
    )
    if clock is not None:
        options["clock"] = clock
    return RevocationFeedFollower(
        REVOCATION_FEED_PATH, provider, MemoryRevocations(), http=fake_auth.http, **options
    )


async def test_sync_applies_entries_and_follows_the_cursor(fake_auth: Any) -> None:
    fake_auth.revocations = [_entry(1, jti="j1"), _entry(2, subject="7")]
    follower = _follower(fake_auth)
    assert follower.last_success_at is None
    assert await follower.sync_once() == 2
    assert follower.cursor == 2
    memory = follower.memory
    assert await memory.is_revoked(_claims(jti="j1"))
    assert await memory.is_revoked(_claims(sub="7"))
    assert not await memory.is_revoked(_claims(jti="j2", sub="8"))
    assert fake_auth.feed_requests[0]["after"] == 0
    assert fake_auth.feed_requests[0]["limit"] == 500
    assert fake_auth.feed_requests[0]["auth"] == "Bearer service-token-1"
    assert fake_auth.token_requests[0]["scope"] == AUTH_REVOCATIONS_AUDIENCE

    fake_auth.revocations.append(_entry(5, jti="j5"))
    assert await follower.sync_once() == 1
    assert fake_auth.feed_requests[-1]["after"] == 2
    assert follower.cursor == 5
    assert await follower.sync_once() == 0
    assert fake_auth.feed_requests[-1]["after"] == 5
    assert len(fake_auth.token_requests) == 1  # the service token is cached


async def test_pages_are_read_until_the_end(fake_auth: Any) -> None:
    fake_auth.revocations = [_entry(i, jti=f"j{i}") for i in range(1, 6)]
    follower = _follower(fake_auth, page_limit=2)
    assert await follower.sync_once() == 5
    assert [r["after"] for r in fake_auth.feed_requests] == [0, 2, 4]
    assert all(r["limit"] == 2 for r in fake_auth.feed_requests)
    for i in range(1, 6):
        assert await follower.memory.is_revoked(_claims(jti=f"j{i}"))


async def test_expired_entries_advance_the_cursor_without_being_kept(fake_auth: Any) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    fake_auth.revocations = [_entry(1, jti="old", revoked_at=long_ago), _entry(2, jti="new")]
    follower = _follower(fake_auth)
    assert await follower.sync_once() == 1
    assert follower.cursor == 2
    assert len(follower.memory) == 1


@pytest.mark.parametrize("unreachable", [False, True])
async def test_outage_keeps_the_last_known_state(
    fake_auth: Any, clock: Any, unreachable: bool
) -> None:
    fake_auth.revocations = [_entry(1, jti="j1")]
    follower = _follower(fake_auth, clock)
    await follower.sync_once()
    assert follower.last_sync_age == 0
    synced_at = follower.last_success_at

    fake_auth.feed_status = 503
    fake_auth.transport.unreachable = unreachable
    fake_auth.revocations.append(_entry(2, jti="j2"))
    clock.advance(30)
    with pytest.raises(RevocationFeedUnavailable):
        await follower.sync_once()
    assert await follower.memory.is_revoked(_claims(jti="j1"))
    assert not await follower.memory.is_revoked(_claims(jti="j2"))
    assert follower.last_sync_age == 30
    assert follower.last_success_at == synced_at
    assert follower.cursor == 1

    fake_auth.feed_status = 200
    fake_auth.transport.unreachable = False
    assert await follower.sync_once() == 1
    assert await follower.memory.is_revoked(_claims(jti="j2"))
    assert follower.last_sync_age == 0


async def test_a_failing_page_keeps_what_earlier_pages_brought(fake_auth: Any) -> None:
    fake_auth.revocations = [_entry(i, jti=f"j{i}") for i in range(1, 4)]
    follower = _follower(fake_auth, page_limit=2)
    fake_auth.fail_pages_after = 0
    with pytest.raises(RevocationFeedUnavailable):
        await follower.sync_once()
    assert follower.cursor == 2
    assert await follower.memory.is_revoked(_claims(jti="j2"))


@pytest.mark.parametrize(
    "body",
    [{"items": [{"id": "x"}]}, {"next_cursor": 3}, {"items": [{"id": 1, "revoked_at": "nope"}]}],
)
async def test_malformed_feed_pages_are_an_outage(fake_auth: Any, body: Any) -> None:
    follower = _follower(fake_auth)
    fake_auth.feed_body = body
    with pytest.raises(RevocationFeedUnavailable, match="malformed"):
        await follower.sync_once()
    assert follower.cursor == 0


async def test_a_rejected_service_token_is_replaced_once(fake_auth: Any) -> None:
    fake_auth.revocations = [_entry(1, jti="j1")]
    follower = _follower(fake_auth)
    await follower.sync_once()
    fake_auth.valid_token = "after-auth-restart"  # our cached token is no longer accepted
    fake_auth.revocations.append(_entry(2, jti="j2"))
    assert await follower.sync_once() == 1
    assert len(fake_auth.token_requests) == 2
    assert fake_auth.feed_requests[-1]["auth"] == "Bearer service-token-2"


async def test_rejected_credentials_are_a_feed_outage(fake_auth: Any) -> None:
    fake_auth.token_status = 401
    with pytest.raises(RevocationFeedUnavailable, match="no service token"):
        await _follower(fake_auth).sync_once()


async def test_background_follower_logs_each_outage_once(
    fake_auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    follower = _follower(fake_auth, interval=0.005)
    with caplog.at_level(logging.INFO, logger="flightdeck_common.auth.revocation"):
        follower.start()
        follower.start()  # idempotent
        try:
            await asyncio.sleep(0.05)
            fake_auth.feed_status = 503
            await asyncio.sleep(0.1)
            fake_auth.feed_status = 200
            fake_auth.revocations = [_entry(1, jti="during-outage")]
            await asyncio.sleep(0.05)
            fake_auth.feed_status = 503
            await asyncio.sleep(0.05)
        finally:
            await follower.stop()
    assert not follower.running
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "revocation feed unavailable" in m]) == 2
    assert len([m for m in messages if "available again" in m]) == 1
    assert len(fake_auth.feed_requests) > 10  # it kept polling throughout
    assert await follower.memory.is_revoked(_claims(jti="during-outage"))


async def test_verifier_refuses_a_token_revoked_through_the_feed(fake_auth: Any) -> None:
    minter = TokenMinter()
    follower = _follower(fake_auth, interval=0.005)
    verifier = TokenVerifier(minter.key_source(), revocations=follower.memory)
    token = minter.user_token("7")
    claims = await verifier.verify(token, USER_AUDIENCE)
    follower.start()
    try:
        fake_auth.revocations = [_entry(1, jti=claims.jti)]
        for _ in range(100):
            await asyncio.sleep(0.005)
            if follower.cursor == 1:
                break
        with pytest.raises(TokenRevoked):
            await verifier.verify(token, USER_AUDIENCE)
    finally:
        await follower.stop()

"""A live stream re-checks its token's revocation at every heartbeat interval and ends once
it is revoked (one token, or every token of a subject: logout, password change,
deactivation), with the denylist the service really uses: Redis, or the in-process copy
that auth's revocation feed keeps."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from redis.asyncio import Redis

from flightdeck_common.auth.revocation import MemoryRevocations, RedisRevocations
from flightdeck_common.testing.live import SseReader

pytestmark = pytest.mark.timeout(30)

HEARTBEAT = 0.2
ACCESS_TTL = 900


@contextlib.asynccontextmanager
async def _denylist(redis_url: str | None) -> AsyncIterator[MemoryRevocations | RedisRevocations]:
    if redis_url is None:
        yield MemoryRevocations()
        return
    redis = Redis.from_url(redis_url)
    try:
        yield RedisRevocations(redis)
    finally:
        await redis.aclose()


async def _ends_within(reader: SseReader, seconds: float) -> float:
    """Read (pings) until the stream ends; how long that took."""
    started = time.monotonic()
    while await reader.next_message(within=seconds) is not None:
        assert time.monotonic() - started < seconds, "the stream did not end"
    return time.monotonic() - started


async def _still_streaming(reader: SseReader) -> None:
    for _ in range(3):  # a few heartbeats later, still open
        ping = await reader.next_message(within=2.0)
        assert ping is not None
        assert ping.comments == ["ping"]


async def test_stream_ends_when_its_subject_is_revoked(
    live_app_factory: Any, events_backend: Any
) -> None:
    async with _denylist(events_backend.redis_url) as denylist:
        live = await live_app_factory(
            events_backend.database_url,
            events_backend.redis_url,
            sse_heartbeat_seconds=HEARTBEAT,
            revocations=denylist,
        )
        victim = {"Authorization": f"Bearer {live.minter.user_token(sub='41')}"}
        bystander = {"Authorization": f"Bearer {live.minter.user_token(sub='42')}"}
        async with live.stream(headers=victim) as revoked, live.stream(headers=bystander) as other:
            await revoked.next_message()
            await other.next_message()
            await _still_streaming(revoked)
            # What auth writes when the user is deactivated or changes their password.
            await denylist.revoke_subject("41", time.time(), ACCESS_TTL)
            assert await _ends_within(revoked, 3.0) < 3.0
            await _still_streaming(other)
        await live.wait_for_no_requests(within=2)


async def test_stream_ends_when_its_token_is_revoked(
    live_app_factory: Any, events_backend: Any
) -> None:
    async with _denylist(events_backend.redis_url) as denylist:
        live = await live_app_factory(
            events_backend.database_url,
            events_backend.redis_url,
            sse_heartbeat_seconds=HEARTBEAT,
            revocations=denylist,
        )
        token = live.minter.user_token(sub="7")
        claims = jwt.decode(token, options={"verify_signature": False})
        other_session = live.minter.user_token(sub="7")
        async with (
            live.stream(headers={"Authorization": f"Bearer {token}"}) as logged_out,
            live.stream(headers={"Authorization": f"Bearer {other_session}"}) as other,
        ):
            await logged_out.next_message()
            await other.next_message()
            await denylist.revoke_jti(claims["jti"], claims["exp"])  # a logout
            assert await _ends_within(logged_out, 3.0) < 3.0
            await _still_streaming(other)
